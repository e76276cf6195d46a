using Microsoft.FSharp.Core;
using Prompting.Engine;
using EngineExperiment = Prompting.Engine.Experiment;

namespace Prompting.CSharp;

/// <summary>
/// Runs continual-learning experiments as <c>prompting run</c> does, and reads their results.
/// </summary>
/// <remarks>
/// A run directory holds <c>config.json</c>, <c>progress.json</c>, <c>metrics.json</c>, the
/// report and the trained state of every task. The progress is saved after every epoch and task:
/// running the same options again on the same directory resumes where it stopped, and a finished
/// run returns its results without training again. Different options on an existing directory
/// are refused.
/// </remarks>
/// <example>
/// <code>
/// var result = Experiment.Run(new ExperimentOptions
/// {
///     Method = "l2p", Benchmark = "imagefolder", Data = "data/flowers",
///     Checkpoint = "vit.safetensors", Tasks = 5, OutputDirectory = "runs/l2p",
/// });
/// Console.WriteLine($"FAA {result.FinalAverageAccuracy:F2}%");
/// </code>
/// </example>
public static class Experiment
{
    /// <summary>Runs, resumes or (when it is finished) just reads the experiment the options describe.</summary>
    /// <param name="options">The run's method, data, checkpoint and settings.</param>
    /// <returns>The results once every task is trained.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> or a required property is null.</exception>
    /// <exception cref="PromptingException">
    /// An option is invalid (unknown method or benchmark, non-positive counts), the data or
    /// checkpoint is missing or unreadable, the device is unavailable, or the run directory was
    /// made with other options.
    /// </exception>
    public static ExperimentResult Run(ExperimentOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Method, "options.Method");
        ArgumentNullException.ThrowIfNull(options.Benchmark, "options.Benchmark");
        ArgumentNullException.ThrowIfNull(options.Checkpoint, "options.Checkpoint");
        ArgumentNullException.ThrowIfNull(options.Device, "options.Device");
        if (string.IsNullOrWhiteSpace(options.Method)) throw new PromptingException("options.Method: is empty");
        if (string.IsNullOrWhiteSpace(options.Benchmark)) throw new PromptingException("options.Benchmark: is empty");
        if (string.IsNullOrWhiteSpace(options.Checkpoint)) throw new PromptingException("options.Checkpoint: is empty");
        if (options.OutputDirectory is { } o && string.IsNullOrWhiteSpace(o)) throw new PromptingException("options.OutputDirectory: is empty");

        var directory = CoreCalls.Run(() =>
        {
            var request = new RunRequest(
                FSharpOption<RunConfig>.None,
                FSharpOption<MethodChoice>.Some(MethodChoice.NewMethodNamed(options.Method)),
                FSharpOption<string>.Some(options.Benchmark),
                options.Data is null ? FSharpOption<string>.None : FSharpOption<string>.Some(options.Data),
                FSharpOption<string>.Some(options.Checkpoint),
                CoreCalls.Option(options.Heads),
                CoreCalls.Option(options.Tasks),
                FSharpOption<ScenarioKind>.Some(ScenarioOf(options.Scenario)),
                options.Split is null ? FSharpOption<string>.None : FSharpOption<string>.Some(options.Split),
                CoreCalls.Option(options.Epochs),
                CoreCalls.Option(options.BatchSize),
                options.LearningRate is { } lr ? FSharpOption<double>.Some(lr) : FSharpOption<double>.None,
                FSharpOption<bool>.None,
                CoreCalls.Option(options.ImageSize),
                FSharpOption<ClassOrder>.None,
                CoreCalls.Option(options.TrainPerClass),
                CoreCalls.Option(options.TestPerClass),
                FSharpOption<Data.PixelScale>.None,
                FSharpOption<int>.None,
                FSharpOption<string>.None,
                FSharpOption<string>.None,
                FSharpOption<int>.Some(options.Seed),
                FSharpOption<bool>.Some(options.SkipCorrupt),
                FSharpOption<double>.None,
                FSharpOption<bool>.Some(options.AcceptRecipeChange));
            var prepared = Configure.resolve(request);
            var config = prepared.Config;
            var device = Devices.parse(options.Device);
            var dir = options.OutputDirectory
                ?? Path.Combine("runs", $"{config.Method.Name}-{config.Benchmark}-s{config.Seed}");
            Runs.run(prepared, dir, device);
            return dir;
        }, options.OutputDirectory);
        return Load(directory);
    }

    /// <summary>Reads the results of a finished or partly finished run from its directory.</summary>
    /// <param name="runDirectory">The run directory given to <see cref="Run"/> (or to <c>prompting run --out</c>).</param>
    /// <returns>The results of the tasks completed so far.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="runDirectory"/> is null.</exception>
    /// <exception cref="PromptingException">
    /// The directory is not a run directory, no task has been completed yet, or its files are unreadable.
    /// </exception>
    public static ExperimentResult Load(string runDirectory)
    {
        ArgumentNullException.ThrowIfNull(runDirectory);
        return CoreCalls.Run(() =>
        {
            var recorded = Engine.Run.readRecorded(runDirectory);
            if (!File.Exists(Engine.Run.progressFile(runDirectory))) throw new PromptingException($"{runDirectory}: the run has not finished a task yet");
            var progress = Engine.Run.readProgress(runDirectory);
            if (progress.Evaluations.IsEmpty) throw new PromptingException($"{runDirectory}: the run has not finished a task yet");
            var evaluations = progress.Evaluations.Select(row => row.ToArray()).ToArray();
            var metrics = Metrics.ofEvaluations(evaluations);
            var c = recorded.Config;
            var classIl = metrics.ClassIncremental;
            var taskIl = metrics.TaskIncremental;
            return new ExperimentResult(
                Path.GetFullPath(runDirectory),
                c.Method.Name,
                c.Benchmark,
                c.Seed,
                c.Tasks,
                progress.CompletedTasks,
                Copy(classIl.Matrix),
                classIl.FinalAverageAccuracy,
                classIl.AverageIncrementalAccuracy,
                classIl.Forgetting,
                classIl.CodaForgetting,
                Copy(taskIl.Matrix),
                taskIl.FinalAverageAccuracy,
                taskIl.Forgetting,
                FSharpOption<double>.get_IsSome(metrics.PromptChoiceAccuracy) ? metrics.PromptChoiceAccuracy.Value : null,
                progress.TrainSeconds,
                progress.TrainableParameters,
                Path.GetFullPath(EngineExperiment.reportFile(runDirectory)));
        }, runDirectory);
    }

    private static ScenarioKind ScenarioOf(ExperimentScenario scenario) =>
        scenario switch
        {
            ExperimentScenario.ClassIncremental => ScenarioKind.ClassIncremental,
            ExperimentScenario.TaskIncremental => ScenarioKind.TaskIncremental,
            ExperimentScenario.Joint => ScenarioKind.Joint,
            _ => throw new PromptingException($"options.Scenario: unknown value {(int)scenario}"),
        };

    private static double[][] Copy(double[][] matrix) => Array.ConvertAll(matrix, row => (double[])row.Clone());
}
