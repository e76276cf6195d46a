// A C# console app on the Prompting packages: train a continual-learning run, then classify
// images with it. `Consumer train DATA CHECKPOINT RUN`, then `Consumer classify RUN IMAGE...`.
using Prompting.CSharp;

switch (args)
{
    case ["train", var data, var checkpoint, var run]:
        // An image-folder benchmark (DATA/train/<class>/*, DATA/test/<class>/*), here split into
        // 2 tasks and trained for 1 epoch per task with the linear-probe baseline.
        var result = Experiment.Run(new ExperimentOptions
        {
            Method = "linear",
            Benchmark = "imagefolder",
            Data = data,
            Checkpoint = checkpoint,
            Tasks = 2,
            Epochs = 1,
            BatchSize = 8,
            ImageSize = 32,
            Device = "cpu",
            OutputDirectory = run,
        });
        Console.WriteLine($"final average accuracy: {result.FinalAverageAccuracy:F2}%");
        Console.WriteLine($"report: {result.ReportPath}");
        return 0;

    case ["classify", var run, .. var images]:
        // Needs only the run directory and the checkpoint it recorded, not the training data.
        using (var model = TrainedModel.Load(run, "cpu"))
        {
            Console.WriteLine(model);
            foreach (var p in model.ClassifyImages(images, topK: 2))
                Console.WriteLine($"{p.File}: {string.Join(" ", p.TopClasses.Select(c => model.ClassNames[c]))}");
        }

        return 0;

    default:
        Console.Error.WriteLine("usage: Consumer train DATA CHECKPOINT RUN | Consumer classify RUN IMAGE...");
        return 2;
}
