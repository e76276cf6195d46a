using System.Text.RegularExpressions;

namespace Prompting.CSharp;

/// <summary>
/// The core's messages name command-line flags (<c>--lr</c>, <c>--accept-recipe-change</c>); a C#
/// caller sets properties and arguments instead, so the facade names those.
/// </summary>
internal static partial class OptionWording
{
    /// <summary>Flags with a property of <see cref="ExperimentOptions"/> or an argument of the facade.</summary>
    private static readonly Dictionary<string, string> Names = new()
    {
        ["accept-recipe-change"] = nameof(ExperimentOptions.AcceptRecipeChange),
        ["out"] = nameof(ExperimentOptions.OutputDirectory),
        ["lr"] = nameof(ExperimentOptions.LearningRate),
        ["epochs"] = nameof(ExperimentOptions.Epochs),
        ["batch-size"] = nameof(ExperimentOptions.BatchSize),
        ["tasks"] = nameof(ExperimentOptions.Tasks),
        ["image-size"] = nameof(ExperimentOptions.ImageSize),
        ["train-per-class"] = nameof(ExperimentOptions.TrainPerClass),
        ["test-per-class"] = nameof(ExperimentOptions.TestPerClass),
        ["data"] = nameof(ExperimentOptions.Data),
        ["checkpoint"] = nameof(ExperimentOptions.Checkpoint),
        ["benchmark"] = nameof(ExperimentOptions.Benchmark),
        ["method"] = nameof(ExperimentOptions.Method),
        ["split"] = nameof(ExperimentOptions.Split),
        ["seed"] = nameof(ExperimentOptions.Seed),
        ["heads"] = nameof(ExperimentOptions.Heads),
        ["scenario"] = nameof(ExperimentOptions.Scenario),
        ["skip-corrupt"] = nameof(ExperimentOptions.SkipCorrupt),
        ["device"] = nameof(ExperimentOptions.Device),
    };

    /// <summary>The message with every <c>--flag</c> replaced by the property or argument that sets it.</summary>
    internal static string ForCSharp(string message) =>
        Flag().Replace(message, m => Names.TryGetValue(m.Groups[1].Value, out var name) ? name : Describe(m.Groups[1].Value));

    /// <summary>A flag the facade does not expose, named in words (<c>--query-depth</c>: "the query depth setting").</summary>
    private static string Describe(string flag) => $"the {flag.Replace('-', ' ')} setting";

    [GeneratedRegex(@"(?<![\w-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)")]
    private static partial Regex Flag();
}
