namespace Prompting.CSharp;

/// <summary>
/// The results of a run so far, as recorded in its run directory. Accuracies are percentages;
/// tasks are numbered from 0, and <c>AccuracyMatrix[i][j]</c> is the accuracy on task j's test
/// data after training task i (row i has i + 1 entries).
/// </summary>
/// <param name="RunDirectory">The run directory (full path).</param>
/// <param name="Method">The method's name.</param>
/// <param name="Benchmark">The benchmark's name.</param>
/// <param name="Seed">The run's seed.</param>
/// <param name="Tasks">Number of tasks of the run.</param>
/// <param name="CompletedTasks">Number of tasks trained and evaluated so far (the matrices' row count).</param>
/// <param name="AccuracyMatrix">Class-incremental accuracies: argmax over every class seen so far.</param>
/// <param name="FinalAverageAccuracy">Mean of the last row of <paramref name="AccuracyMatrix"/> (FAA).</param>
/// <param name="AverageIncrementalAccuracy">Mean over rows of each row's mean (CAA).</param>
/// <param name="Forgetting">Mean drop of each earlier task from its best earlier accuracy (L2P/DualPrompt); 0 with one task.</param>
/// <param name="CodaForgetting">CODA-Prompt's step-to-step forgetting; 0 with one task.</param>
/// <param name="TaskIncrementalMatrix">Task-incremental accuracies: argmax within each task's own classes.</param>
/// <param name="TaskIncrementalAccuracy">Mean of the last row of <paramref name="TaskIncrementalMatrix"/>.</param>
/// <param name="TaskIncrementalForgetting">Forgetting of <paramref name="TaskIncrementalMatrix"/>.</param>
/// <param name="PromptChoiceAccuracy">
/// For methods whose prompt choice can be scored: the share of test images after the last task
/// whose chosen prompt belongs to their own task; <see langword="null"/> otherwise.
/// </param>
/// <param name="TrainSeconds">Training and evaluation time recorded so far, over all sessions.</param>
/// <param name="TrainableParameters">Number of trained parameters.</param>
/// <param name="ReportPath">The run's HTML report (full path).</param>
/// <remarks>The arrays are fresh copies; record equality compares them by reference.</remarks>
public sealed record ExperimentResult(
    string RunDirectory,
    string Method,
    string Benchmark,
    int Seed,
    int Tasks,
    int CompletedTasks,
    double[][] AccuracyMatrix,
    double FinalAverageAccuracy,
    double AverageIncrementalAccuracy,
    double Forgetting,
    double CodaForgetting,
    double[][] TaskIncrementalMatrix,
    double TaskIncrementalAccuracy,
    double TaskIncrementalForgetting,
    double? PromptChoiceAccuracy,
    double TrainSeconds,
    long TrainableParameters,
    string ReportPath)
{
    /// <summary>Whether every task has been trained.</summary>
    public bool IsComplete => CompletedTasks == Tasks;
}
