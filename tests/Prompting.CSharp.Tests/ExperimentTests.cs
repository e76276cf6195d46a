using Xunit;

namespace Prompting.CSharp.Tests;

/// <summary>A tiny image-folder benchmark (4 classes of 16×16 BMPs) and a 2-task linear-probe run on it.</summary>
public sealed class ExperimentFixture : IDisposable
{
    public static readonly string[] Classes = ["blue", "green", "red", "yellow"];

    private static readonly (byte R, byte G, byte B)[] Colours = [(20, 40, 220), (30, 200, 40), (220, 30, 30), (230, 220, 40)];

    public ExperimentFixture()
    {
        Data = System.IO.Path.Combine(Root.Path, "data");
        for (var c = 0; c < Classes.Length; c++)
        {
            foreach (var (split, count) in new[] { ("train", 8), ("test", 4) })
            {
                var dir = System.IO.Path.Combine(Data, split, Classes[c]);
                Directory.CreateDirectory(dir);
                var (r, g, b) = Colours[c];
                for (var i = 0; i < count; i++)
                {
                    var k = i * 7;
                    TestFiles.WriteBmp(System.IO.Path.Combine(dir, $"{i}.bmp"), 16, 16, (x, y) =>
                        ((byte)Math.Clamp(r + (x + y + k) % 20 - 10, 0, 255), (byte)Math.Clamp(g + (x * y + k) % 16 - 8, 0, 255), (byte)Math.Clamp(b - (x + k) % 12 + 6, 0, 255)));
                }
            }
        }

        Options = new ExperimentOptions
        {
            Method = "linear",
            Benchmark = "imagefolder",
            Data = Data,
            Checkpoint = TestFiles.Fixture("vit_micro.safetensors"),
            Heads = 3,
            Tasks = 2,
            Epochs = 2,
            BatchSize = 8,
            ImageSize = 32,
            Seed = 1,
            Device = "cpu",
            OutputDirectory = System.IO.Path.Combine(Root.Path, "run"),
        };
        Result = Experiment.Run(Options);
    }

    private TestFiles.TempDir Root { get; } = new();

    public string Data { get; }

    public ExperimentOptions Options { get; }

    public ExperimentResult Result { get; }

    public void Dispose() => Root.Dispose();
}

public sealed class ExperimentTests(ExperimentFixture fixture) : IClassFixture<ExperimentFixture>
{
    private ExperimentResult Result => fixture.Result;

    [Fact]
    public void Run_GivesTheAccuracyMatrixAndFiles()
    {
        Assert.Equal(2, Result.AccuracyMatrix.Length);
        Assert.Equal([1, 2], Result.AccuracyMatrix.Select(r => r.Length));
        Assert.Equal([1, 2], Result.TaskIncrementalMatrix.Select(r => r.Length));
        Assert.All(Result.AccuracyMatrix.SelectMany(r => r), v => Assert.InRange(v, 0.0, 100.0));
        Assert.Equal(Result.AccuracyMatrix[1].Average(), Result.FinalAverageAccuracy, 9);
        Assert.Equal((Result.AccuracyMatrix[0][0] + Result.AccuracyMatrix[1].Average()) / 2, Result.AverageIncrementalAccuracy, 9);
        Assert.Equal(Result.AccuracyMatrix[0][0] - Result.AccuracyMatrix[1][0], Result.Forgetting, 9);
        Assert.Equal("linear", Result.Method);
        Assert.Equal("imagefolder", Result.Benchmark);
        Assert.True(Result.IsComplete);
        Assert.Equal(2, Result.CompletedTasks);
        Assert.True(Result.TrainableParameters > 0);
        Assert.True(Result.TrainSeconds > 0);
        Assert.Null(Result.PromptChoiceAccuracy);

        var dir = fixture.Options.OutputDirectory!;
        Assert.Equal(Path.GetFullPath(dir), Result.RunDirectory);
        foreach (var name in new[] { "config.json", "progress.json", "metrics.json", "report.html", "state/task-00.safetensors", "state/task-01.safetensors" })
            Assert.True(File.Exists(Path.Combine(dir, name)), name);
        Assert.Equal(Path.Combine(Result.RunDirectory, "report.html"), Result.ReportPath);
    }

    [Fact]
    public void Load_ReturnsTheSameNumbers()
    {
        var loaded = Experiment.Load(fixture.Options.OutputDirectory!);

        AssertSameResult(Result, loaded);
    }

    [Fact]
    public void Run_Again_ResumesTheFinishedRunWithoutTraining()
    {
        var state = Path.Combine(fixture.Options.OutputDirectory!, "state", "task-01.safetensors");
        var written = File.GetLastWriteTimeUtc(state);

        var again = Experiment.Run(fixture.Options);

        AssertSameResult(Result, again);
        Assert.Equal(written, File.GetLastWriteTimeUtc(state));
    }

    [Fact]
    public void Run_OnTheDirectoryWithOtherOptions_Throws()
    {
        var e = Assert.Throws<PromptingException>(() => Experiment.Run(fixture.Options with { Epochs = 3 }));

        Assert.Contains("different configuration", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // A recipe-only difference can be accepted: the message names the property, not the CLI flag.
        Assert.Contains(nameof(ExperimentOptions.AcceptRecipeChange), e.Message);
        Assert.Contains(nameof(ExperimentOptions.OutputDirectory), e.Message);
        Assert.DoesNotContain("--", e.Message);
    }

    [Fact]
    public void TrainedModel_LoadsWithoutTheTrainingData_AndAcceptsAMovedCheckpoint()
    {
        using var dir = new TestFiles.TempDir();
        var data = dir.File("data");
        foreach (var file in Directory.GetFiles(fixture.Data, "*", SearchOption.AllDirectories))
        {
            var copy = Path.Combine(data, Path.GetRelativePath(fixture.Data, file));
            Directory.CreateDirectory(Path.GetDirectoryName(copy)!);
            File.Copy(file, copy);
        }

        var checkpoint = dir.File("vit.safetensors");
        File.Copy(fixture.Options.Checkpoint, checkpoint);
        var run = dir.File("run");
        var result = Experiment.Run(fixture.Options with { Data = data, Checkpoint = checkpoint, OutputDirectory = run, Epochs = 1 });
        Directory.Delete(data, true);
        var moved = dir.File("moved.safetensors");
        File.Move(checkpoint, moved);

        var notFound = Assert.Throws<PromptingException>(() => TrainedModel.Load(run, "cpu"));
        Assert.Contains("checkpoint not found", notFound.Message);
        Assert.DoesNotContain("--", notFound.Message);

        using var model = TrainedModel.Load(run, "cpu", moved);
        Assert.Contains(model.Notes, n => n.Contains("moved") && n.Contains(moved));
        Assert.Equal(ExperimentFixture.Classes, model.ClassNames.Order());
        // The original data's test images are the same files: the accuracy is the run's own.
        var files = ExperimentFixture.Classes
            .SelectMany(c => Directory.GetFiles(Path.Combine(fixture.Data, "test", c)).Select(f => (File: f, Label: Array.IndexOf(model.ClassNames, c))))
            .ToArray();
        var predicted = model.Predict(files.SelectMany(f => model.PreprocessImage(f.File)).ToArray(), files.Length);
        var accuracy = 100.0 * predicted.Zip(files).Count(p => p.First == p.Second.Label) / files.Length;
        Assert.Equal(result.FinalAverageAccuracy, accuracy, 6);

        var other = dir.File("other.safetensors");
        File.WriteAllBytes(other, File.ReadAllBytes(moved).Concat(new byte[] { 0 }).ToArray());
        Assert.Contains("differs", Assert.Throws<PromptingException>(() => TrainedModel.Load(run, "cpu", other)).Message);
    }

    [Fact]
    public void TrainedModel_PredictionsMatchTheRunsEvaluation()
    {
        using var model = TrainedModel.Load(fixture.Options.OutputDirectory!, "cpu");

        Assert.Equal(4, model.NumClasses);
        Assert.Equal(2, model.CompletedTasks);
        Assert.Equal(32, model.ImageSize);
        Assert.Equal(ExperimentFixture.Classes, model.ClassNames.Order());

        var files = ExperimentFixture.Classes
            .SelectMany(c => Directory.GetFiles(Path.Combine(fixture.Data, "test", c)).Select(f => (File: f, Label: Array.IndexOf(model.ClassNames, c))))
            .ToArray();
        var pixels = files.SelectMany(f => model.PreprocessImage(f.File)).ToArray();
        var predicted = model.Predict(pixels, files.Length);

        Assert.All(predicted, p => Assert.InRange(p, 0, model.NumClasses - 1));
        // Both tasks have 8 test images, so the final average is the accuracy over all 16.
        var accuracy = 100.0 * predicted.Zip(files).Count(p => p.First == p.Second.Label) / files.Length;
        Assert.Equal(Result.FinalAverageAccuracy, accuracy, 6);

        var classified = model.ClassifyImages([Path.Combine(fixture.Data, "test")], topK: 10);
        Assert.Equal(files.Length, classified.Length);
        foreach (var c in classified)
        {
            Assert.Equal(4, c.TopClasses.Length);
            var index = Array.FindIndex(files, f => Path.GetFullPath(f.File) == Path.GetFullPath(c.Path));
            Assert.Equal(predicted[index], c.TopClasses[0]);
        }

        Assert.Contains("pixels: expected", Assert.Throws<PromptingException>(() => model.Predict(new float[10], 1)).Message);
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.Predict(pixels, files.Length));
    }

    [Fact]
    public void BadOptions_ThrowOneLinePromptingExceptions()
    {
        using var dir = new TestFiles.TempDir();
        var options = fixture.Options with { OutputDirectory = dir.File("run") };

        var unknown = Assert.Throws<PromptingException>(() => Experiment.Run(options with { Method = "no-such-method" }));
        Assert.StartsWith("method no-such-method: unknown", unknown.Message);

        var missing = dir.File("missing-data");
        var noData = Assert.Throws<PromptingException>(() => Experiment.Run(options with { Data = missing }));
        Assert.Contains("missing-data", noData.Message);

        var noCheckpoint = Assert.Throws<PromptingException>(() => Experiment.Run(options with { Checkpoint = dir.File("none.safetensors") }));
        Assert.EndsWith("checkpoint not found", noCheckpoint.Message);

        var joint = Assert.Throws<PromptingException>(() => Experiment.Run(options with { Scenario = ExperimentScenario.Joint }));
        Assert.Contains("joint", joint.Message);

        Assert.Contains("benchmark", Assert.Throws<PromptingException>(() => Experiment.Run(options with { Benchmark = "nope" })).Message, StringComparison.OrdinalIgnoreCase);
        var noEpochs = Assert.Throws<PromptingException>(() => Experiment.Run(options with { Epochs = 0 })).Message;
        Assert.StartsWith("Epochs 0: must be at least 1", noEpochs);

        foreach (var e in new[] { unknown, noData, noCheckpoint, joint }) Assert.DoesNotContain('\n', e.Message);

        Assert.Contains("not a run directory", Assert.Throws<PromptingException>(() => Experiment.Load(dir.Path)).Message);
        Assert.Contains("not a run directory", Assert.Throws<PromptingException>(() => TrainedModel.Load(dir.Path, "cpu")).Message);
        Assert.Throws<ArgumentNullException>(() => Experiment.Run(null!));
    }

    private static void AssertSameResult(ExperimentResult expected, ExperimentResult actual)
    {
        Assert.Equal(expected.AccuracyMatrix, actual.AccuracyMatrix);
        Assert.Equal(expected.TaskIncrementalMatrix, actual.TaskIncrementalMatrix);
        Assert.Equal(expected with { AccuracyMatrix = actual.AccuracyMatrix, TaskIncrementalMatrix = actual.TaskIncrementalMatrix }, actual);
    }
}
