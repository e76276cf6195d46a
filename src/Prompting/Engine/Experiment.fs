namespace Prompting.Engine

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Prompts

/// A run asked for by names and values, as the CLI's flags (without a configuration file) and the
/// C# facade give it; `Configure.request` turns it into a RunConfig.
type RunRequest =
    { Method: string
      Benchmark: string
      Data: string option
      Checkpoint: string
      Heads: int option
      /// None: the benchmark's default (1 for Joint).
      Tasks: int option
      Scenario: ScenarioKind
      Epochs: int option
      BatchSize: int option
      LearningRate: float option
      /// None: the checkpoint's resolution.
      ImageSize: int option
      /// None: shuffled with the seed.
      ClassOrder: ClassOrder option
      TrainPerClass: int option
      TestPerClass: int option
      Normalisation: PixelScale
      Seed: int
      SkipCorrupt: bool }

/// The pure steps of building a RunConfig, shared by the CLI's `run` and the C# facade.
module Configure =
    /// The task count when none is given: the benchmark's default, 1 for joint training.
    let defaultTasks (scenario: ScenarioKind) (benchmark: BenchmarkInfo) =
        if scenario = Joint then 1 else max 1 benchmark.DefaultTasks

    /// The task count: `requested` or `fallback`; joint training is one task (an explicit other
    /// count is an error).
    let tasks (scenario: ScenarioKind) (requested: int option) (fallback: int) =
        let tasks = defaultArg requested fallback
        if scenario = Joint && requested.IsSome && tasks <> 1 then
            Errors.fail "--scenario joint trains one task, but --tasks %d was given" tasks
        if scenario = Joint then 1 else tasks

    /// The recipe with the epochs, batch size and learning rate given.
    let training (recipe: Training) (epochs: int option) (batchSize: int option) (learningRate: float option) =
        { recipe with
            Epochs = defaultArg epochs recipe.Epochs
            BatchSize = defaultArg batchSize recipe.BatchSize
            LearningRate = defaultArg learningRate recipe.LearningRate }

    /// The checkpoint's own input resolution.
    let checkpointImageSize (checkpoint: string) (heads: int option) =
        (Checkpoint.read checkpoint heads).Config.ImageSize

    /// Fails unless the checkpoint file exists.
    let requireCheckpoint (checkpoint: string) =
        if not (File.Exists checkpoint) then Errors.fail "%s: checkpoint not found" checkpoint

    /// A RunConfig from a request, with the method's recipe: what `prompting run` builds from the
    /// same flags without --config.
    let request (r: RunRequest) : RunConfig =
        let benchmark = Benchmarks.find r.Benchmark
        let tasks = tasks r.Scenario r.Tasks (defaultTasks r.Scenario benchmark)
        let method = Methods.find r.Method tasks
        requireCheckpoint r.Checkpoint
        let recipe = Recipes.forMethod method.Name
        { Method = method
          Benchmark = benchmark.Name
          Data = r.Data
          Checkpoint = r.Checkpoint
          Heads = r.Heads
          ImageSize = (match r.ImageSize with Some s -> s | None -> checkpointImageSize r.Checkpoint r.Heads)
          Tasks = tasks
          Scenario = r.Scenario
          ClassOrder = defaultArg r.ClassOrder (Shuffled r.Seed)
          TrainPerClass = r.TrainPerClass
          TestPerClass = r.TestPerClass
          Training = training recipe r.Epochs r.BatchSize r.LearningRate
          Normalisation = r.Normalisation
          Seed = r.Seed
          SkipCorrupt = r.SkipCorrupt
          Validation = None }

/// How a front end presents a run: its progress, and outputs of its own after each task (the CLI
/// and the facade add the HTML report, see Prompting.Reports).
type RunPresentation =
    { Progress: IProgressHost
      AfterTask: string -> RunSummary -> unit }

module RunPresentation =
    /// Plain progress lines and no outputs beyond the metrics files.
    let plain = { Progress = PlainProgress.host; AfterTask = fun _ _ -> () }

/// A whole experiment from a RunConfig: data, scenario, training with resumption, metrics and report.
module Experiment =
    let metricsFile dir = Path.Combine(dir, "metrics.json")
    let reportFile dir = Path.Combine(dir, "report.html")

    /// Validates what can be checked before any data is read.
    let validate (c: RunConfig) =
        Benchmarks.find c.Benchmark |> ignore
        if c.Tasks < 1 then Errors.fail "--tasks %d: must be at least 1" c.Tasks
        if c.Scenario = Joint && c.Tasks <> 1 then Errors.fail "joint training is one task, but --tasks is %d" c.Tasks
        if c.Training.Epochs < 1 then Errors.fail "--epochs %d: must be at least 1" c.Training.Epochs
        if c.Training.BatchSize < 1 then Errors.fail "--batch-size %d: must be at least 1" c.Training.BatchSize
        if c.Training.LearningRate <= 0.0 then Errors.fail "--lr %g: must be positive" c.Training.LearningRate
        if c.ImageSize < 1 then Errors.fail "--image-size %d: must be positive" c.ImageSize
        if c.Training.Bf16 && (c.Method.Backbone <> Frozen || c.Method.AdapterReduction.IsSome) then
            Errors.fail "--bf16: method %s trains backbone parts; bf16 runs the frozen backbone only" c.Method.Name
        match c.TrainPerClass, c.TestPerClass with
        | Some n, _ when n < 1 -> Errors.fail "--train-per-class %d: must be at least 1" n
        | _, Some n when n < 1 -> Errors.fail "--test-per-class %d: must be at least 1" n
        | _ -> ()
        Option.iter Validation.check c.Validation
        if not (File.Exists c.Checkpoint) then Errors.fail "%s: checkpoint not found" c.Checkpoint
        match c.Method.QueryDepth with
        | Some k ->
            let depth = (Checkpoint.read c.Checkpoint c.Heads).Config.Depth
            if k < 1 || k > depth then
                Errors.fail "--query-depth %d: must be between 1 and the checkpoint's %d blocks" k depth
        | None -> ()

    let private subset (c: RunConfig) (d: Dataset) =
        let d =
            match c.TrainPerClass, c.TestPerClass with
            | None, None -> d
            | train, test -> Dataset.subset c.Seed (defaultArg train Int32.MaxValue) (defaultArg test Int32.MaxValue) d
        Validation.holdOut c.Validation c.Seed d

    /// Reads the benchmark's data and splits it into tasks.
    let scenario (c: RunConfig) (log: string -> unit) =
        let reportSkipped (skipped: Skipped list) =
            if not skipped.IsEmpty then
                log (sprintf "skipped %d unreadable files (--skip-corrupt), e.g. %s: %s" skipped.Length skipped.Head.Path skipped.Head.Reason)
        match c.Benchmark with
        | "domains" ->
            if c.Scenario <> DomainIncremental then Errors.fail "domains: use --scenario domain (one task per domain)"
            let domains =
                [ for dir in Benchmarks.domainDirectories c.Data ->
                      let domain = Benchmarks.loadNamed "imagefolder" (Some dir) c.SkipCorrupt reportSkipped |> subset c
                      { domain with Name = Path.GetFileName dir } ]
            if domains.Length <> c.Tasks then
                Errors.fail "domains: %d domain directories but --tasks %d" domains.Length c.Tasks
            Scenario.ofDomains domains
        | "sequence" ->
            let datasets = [ for name, path in Benchmarks.sequenceParts c.Data -> Benchmarks.loadNamed name path c.SkipCorrupt reportSkipped |> subset c ]
            Scenario.ofDatasets datasets
        | name ->
            let dataset = Benchmarks.loadNamed name c.Data c.SkipCorrupt reportSkipped |> subset c
            Scenario.build c.Scenario c.Tasks c.ClassOrder dataset

    /// Decoding and augmentation through the parallel loader, with the backbone's preprocessing.
    let provider (c: RunConfig) : BatchProvider =
        // Two batches ahead: what Runtime.noCollection budgets for while a step runs.
        let options = { LoaderOptions.Defaults with BatchSize = c.Training.BatchSize; Seed = c.Seed; Prefetch = 2 }
        let train = Transforms.training c.Normalisation Preprocessing.augreg c.ImageSize
        let eval = Transforms.evaluation c.Normalisation Preprocessing.augreg c.ImageSize
        { Train = fun samples epoch -> Loader.epoch { options with Shuffle = true } train samples epoch
          Eval = fun samples -> Loader.epoch options eval samples 0
          BatchesPerEpoch = fun samples -> Loader.batchCount options samples.Length }

    /// The report's view of a run.
    let summary (c: RunConfig) (dir: string) (progress: RunProgress) (trainable: int64) =
        let evaluations = progress.Evaluations |> List.map Array.ofList |> Array.ofList
        let recorded = Json.deserialize<Run.Recorded> (Run.configFile dir) (File.ReadAllText(Run.configFile dir))
        { Method = c.Method.Name
          Seed = c.Seed
          Metrics = Metrics.ofEvaluations evaluations
          TrainSeconds = progress.TrainSeconds
          PeakMemoryBytes = progress.PeakMemoryBytes
          TrainableParameters = trainable
          Checkpoint = recorded.CheckpointFile
          CheckpointSha256 = recorded.CheckpointSha256
          ConfigJson = File.ReadAllText(Run.configFile dir) }

    /// metrics.json, metrics.csv and summary.csv from the progress so far, then the front end's own
    /// outputs (the HTML report).
    let writeOutputs (presentation: RunPresentation) (c: RunConfig) (dir: string) (progress: RunProgress) (trainable: int64) =
        if not progress.Evaluations.IsEmpty then
            let s = summary c dir progress trainable
            Metrics.writeJson (metricsFile dir) s.Metrics
            Metrics.writeCsv (Path.Combine(dir, "metrics.csv")) (Path.Combine(dir, "summary.csv")) s.Metrics
            presentation.AfterTask dir s

    /// Runs or resumes the experiment in `dir`; log lines also go to dir/log.txt.
    let run (presentation: RunPresentation) (c: RunConfig) (dir: string) (device: torch.Device) =
        validate c
        // Before any data is read or logged: a refused resume leaves the directory untouched.
        Run.checkResumable c dir
        Directory.CreateDirectory dir |> ignore
        let logPath = Run.logFile dir
        let append (line: string) = File.AppendAllText(logPath, sprintf "%s %s%s" (DateTime.Now.ToString "yyyy-MM-dd HH:mm:ss") line Environment.NewLine)
        let scenario = scenario c append
        let batches = provider c
        let steps = scenario.Tasks |> Array.sumBy (fun t -> int64 c.Training.Epochs * int64 (batches.BatchesPerEpoch t.Train))
        presentation.Progress.Run(sprintf "%s on %s" c.Method.Name c.Benchmark, steps, fun reporter ->
            let events =
                { Message = fun line -> append line; reporter.Message line
                  Step = fun () -> reporter.Advance 1
                  TaskDone = fun progress -> writeOutputs presentation c dir progress progress.TrainableParameters }
            let outcome = Run.execute c dir scenario batches device events
            writeOutputs presentation c dir outcome.Progress outcome.TrainableParameters
            outcome)
