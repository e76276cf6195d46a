namespace Prompting.CSharp;

/// <summary>How the classes of a benchmark are split into tasks.</summary>
public enum ExperimentScenario
{
    /// <summary>Tasks over disjoint classes; evaluation over every class seen so far.</summary>
    ClassIncremental,

    /// <summary>As class-incremental, but the task is known at test time (its classes' logits only).</summary>
    TaskIncremental,

    /// <summary>One task with every class (the upper bound); <see cref="ExperimentOptions.Tasks"/> must be 1 or unset.</summary>
    Joint,
}

/// <summary>
/// What <see cref="Experiment.Run(ExperimentOptions)"/> trains: the same choices as the command
/// line's <c>prompting run</c> flags. Unset optional values take the method's recipe or the
/// benchmark's and checkpoint's defaults, as the command line does.
/// </summary>
public sealed record ExperimentOptions
{
    /// <summary>The method's name, such as <c>linear</c>, <c>l2p</c> or <c>coda-prompt</c> (see <c>prompting methods</c>).</summary>
    public required string Method { get; init; }

    /// <summary>The benchmark: <c>imagefolder</c>, <c>cifar10</c>, <c>cifar100</c>, <c>fashion-mnist</c> or <c>sequence</c>.</summary>
    public required string Benchmark { get; init; }

    /// <summary>
    /// Where the benchmark's data lies (for <c>imagefolder</c>: a directory with <c>train/</c> and
    /// <c>test/</c> sub-directories of one folder per class); <see langword="null"/> for the benchmark's default.
    /// </summary>
    public string? Data { get; init; }

    /// <summary>
    /// A named train/test split of the benchmark (for example <c>coda</c> or <c>seeded</c> for
    /// <c>imagenet-r</c>; <c>prompting benchmarks NAME</c> lists them); <see langword="null"/> for the benchmark's default.
    /// </summary>
    public string? Split { get; init; }

    /// <summary>The ViT checkpoint (<c>.safetensors</c> or <c>.npz</c>) the run starts from.</summary>
    public required string Checkpoint { get; init; }

    /// <summary>
    /// The checkpoint's number of attention heads when it does not record it (timm and Google
    /// files); <see langword="null"/> to read it from the file or assume width / 64.
    /// </summary>
    public int? Heads { get; init; }

    /// <summary>Number of tasks; <see langword="null"/> for the benchmark's default (1 for <see cref="ExperimentScenario.Joint"/>).</summary>
    public int? Tasks { get; init; }

    /// <summary>Training epochs per task; <see langword="null"/> for the method's recipe.</summary>
    public int? Epochs { get; init; }

    /// <summary>Mini-batch size; <see langword="null"/> for the method's recipe.</summary>
    public int? BatchSize { get; init; }

    /// <summary>Base learning rate; <see langword="null"/> for the method's recipe.</summary>
    public double? LearningRate { get; init; }

    /// <summary>Input resolution in pixels; <see langword="null"/> for the checkpoint's.</summary>
    public int? ImageSize { get; init; }

    /// <summary>Seed of the class order, data order, augmentation and initialisation.</summary>
    public int Seed { get; init; }

    /// <summary>
    /// Where to run: <c>"cpu"</c>, <c>"cuda"</c>, <c>"cuda:N"</c>, or <c>"auto"</c> (the default:
    /// CUDA when available). Not part of the run's configuration: a run may resume on another device.
    /// </summary>
    public string Device { get; init; } = "auto";

    /// <summary>
    /// The run directory; <see langword="null"/> for <c>runs/&lt;method&gt;-&lt;benchmark&gt;-s&lt;seed&gt;</c>
    /// as the command line does. An existing run directory made with the same options is resumed.
    /// </summary>
    public string? OutputDirectory { get; init; }

    /// <summary>Training images kept per class (a seeded subset); <see langword="null"/> keeps all.</summary>
    public int? TrainPerClass { get; init; }

    /// <summary>Test images kept per class (a seeded subset); <see langword="null"/> keeps all.</summary>
    public int? TestPerClass { get; init; }

    /// <summary>How the classes are split into tasks.</summary>
    public ExperimentScenario Scenario { get; init; } = ExperimentScenario.ClassIncremental;

    /// <summary>Skip image files that cannot be decoded instead of failing.</summary>
    public bool SkipCorrupt { get; init; }

    /// <summary>
    /// Resume an existing run directory with other recipe values (<see cref="Epochs"/>,
    /// <see cref="BatchSize"/>, <see cref="LearningRate"/>), for example a lower rate after the
    /// run diverged; the change is recorded in its <c>config.json</c> and log. Without it such a
    /// resume is refused.
    /// </summary>
    public bool AcceptRecipeChange { get; init; }
}
