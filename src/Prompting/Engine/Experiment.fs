namespace Prompting.Engine

open System
open System.IO
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Prompts

/// How a front end presents a run: its progress, and outputs of its own after each task (the CLI
/// and the facade add the HTML report, see Prompting.Reports).
type RunPresentation =
    { Progress: IProgressHost
      AfterTask: string -> RunSummary -> unit
      /// The summary that ends log.txt (the front end's table of the printed summary).
      SummaryText: RunSummary -> string }

module RunPresentation =
    /// Plain progress lines, no outputs beyond the metrics files, and a summary of the settings,
    /// the final accuracies and the warnings.
    let plain =
        { Progress = PlainProgress.host
          AfterTask = fun _ _ -> ()
          SummaryText =
            fun s ->
                let m = s.Metrics
                String.concat "\n"
                    [ yield s.Settings
                      yield sprintf "A_N %.2f %%, task-incremental A_N %.2f %%, F_N %.2f" m.ClassIncremental.FinalAverageAccuracy
                                m.TaskIncremental.FinalAverageAccuracy m.ClassIncremental.Forgetting
                      for w in s.Warnings -> Warnings.line w ] }

/// A run opened again from its directory: its record, class names and task layout, the model
/// after its last completed task (dispose it), and its scenario when the data were read.
[<NoEquality; NoComparison>]
type ReopenedRun =
    { Directory: string
      Recorded: Run.Recorded
      /// Class names in the scenario's order (the model's class indices).
      ClassNames: string[]
      Layout: TaskLayout
      /// The data's tasks: read when asked for, or when the run recorded no scenario.json.
      Scenario: Scenario option
      Model: PromptedModel
      /// The last task whose state was saved.
      LastTask: int
      /// What was found elsewhere than recorded (a moved checkpoint or data directory).
      Notes: string list }

/// Where to find what a run used when it moved, and whether to read its data.
type ReopenOptions =
    { /// The checkpoint at another path (its SHA-256 must be the one recorded); None: where recorded.
      Checkpoint: string option
      /// The data at another path (its index must be the one recorded); None: where recorded.
      Data: string option
      /// Read the data (to evaluate). Without, a run with scenario.json needs only its directory
      /// and checkpoint.
      ReadData: bool }

module ReopenOptions =
    let defaults = { Checkpoint = None; Data = None; ReadData = false }

/// A whole experiment from a RunConfig: data, scenario, training with resumption, metrics and report.
module Experiment =
    let metricsFile dir = Path.Combine(dir, "metrics.json")
    let reportFile dir = Path.Combine(dir, "report.html")
    /// The metrics on the held-out validation data of a `--validation` run.
    let validationMetricsFile dir = Path.Combine(dir, "validation-metrics.json")

    /// Validates what can be checked before any data is read.
    let validate (run: PreparedRun) =
        let c = run.Config
        let recipe = c.Method.Recipe
        let benchmark = Benchmarks.find c.Benchmark
        c.Split |> Option.iter (Benchmarks.checkSplitName benchmark >> ignore)
        if c.Tasks < 1 then Errors.fail "--tasks %d: must be at least 1" c.Tasks
        if c.Scenario = Joint && c.Tasks <> 1 then Errors.fail "joint training is one task, but --tasks is %d" c.Tasks
        if recipe.Epochs < 1 then Errors.fail "--epochs %d: must be at least 1" recipe.Epochs
        if recipe.BatchSize < 1 then Errors.fail "--batch-size %d: must be at least 1" recipe.BatchSize
        if recipe.LearningRate <= 0.0 then Errors.fail "--lr %g: must be positive" recipe.LearningRate
        if c.ImageSize < 1 then Errors.fail "--image-size %d: must be positive" c.ImageSize
        let patch = run.Checkpoint.Checkpoint.Config.PatchSize
        if c.ImageSize % patch <> 0 then
            Errors.fail "--image-size %d: not a multiple of the checkpoint's patch size %d (try %d)" c.ImageSize patch (max patch (c.ImageSize / patch * patch))
        if recipe.Bf16 && (c.Method.Backbone <> Frozen || c.Method.AdapterReduction.IsSome) then
            Errors.fail "--bf16: method %s trains backbone parts; bf16 runs the frozen backbone only" c.Method.Name
        match c.TrainPerClass, c.TestPerClass with
        | Some n, _ when n < 1 -> Errors.fail "--train-per-class %d: must be at least 1" n
        | _, Some n when n < 1 -> Errors.fail "--test-per-class %d: must be at least 1" n
        | _ -> ()
        Option.iter Validation.check c.Validation
        match c.Method.QueryDepth with
        | Some k ->
            let depth = run.Checkpoint.Checkpoint.Config.Depth
            if k < 1 || k > depth then
                Errors.fail "--query-depth %d: must be between 1 and the checkpoint's %d blocks" k depth
        | None -> ()

    let private subset (c: RunConfig) (d: Dataset) =
        match c.TrainPerClass, c.TestPerClass with
        | None, None -> d
        | train, test -> Dataset.subset c.Seed (defaultArg train Int32.MaxValue) (defaultArg test Int32.MaxValue) d

    /// Reads the benchmark's data, applies the subsets and then `split` to each dataset, and splits
    /// it into tasks, as the benchmark's kind says.
    let private scenarioWith (split: Dataset -> Dataset) (c: RunConfig) (log: string -> unit) =
        let reportSkipped (skipped: Skipped list) =
            if not skipped.IsEmpty then
                log (sprintf "skipped %d unreadable files (--skip-corrupt), e.g. %s: %s" skipped.Length skipped.Head.Path skipped.Head.Reason)
        // Every image of the subset decoded once before any work (cached; Data.ImageCheck).
        let subset c d = subset c d |> split |> ImageCheck.dataset { CacheFile = Some(ImageCheck.defaultCacheFile c.Data); SkipCorrupt = c.SkipCorrupt } reportSkipped
        let benchmark = Benchmarks.find c.Benchmark
        let options = { SkipCorrupt = c.SkipCorrupt }
        match benchmark.Kind with
        | ClassSplit _ ->
            let split = Benchmarks.splitOf benchmark c.Split c.Data
            Benchmarks.read benchmark c.Data split options reportSkipped |> subset c |> Scenario.build c.Scenario c.Tasks c.ClassOrder
        | DomainFolders ->
            if c.Scenario <> DomainIncremental then Errors.fail "%s: use --scenario domain (one task per domain)" benchmark.Name
            let domains =
                [ for dir in Benchmarks.domainDirectories c.Data ->
                      let domain = Benchmarks.loadNamed "imagefolder" (Some dir) c.SkipCorrupt reportSkipped |> subset c
                      { domain with Name = Path.GetFileName dir } ]
            if domains.Length <> c.Tasks then
                Errors.fail "%s: %d domain directories but --tasks %d" benchmark.Name domains.Length c.Tasks
            Scenario.ofDomains domains
        | DatasetSequence _ ->
            [ for name, path in Benchmarks.sequenceParts benchmark c.Data -> Benchmarks.loadNamed name path c.SkipCorrupt reportSkipped |> subset c ]
            |> Scenario.ofDatasets

    /// Reads the benchmark's data and splits it into tasks. With `--validation F` the tasks train
    /// on the training data less a seeded held-out fraction, on which they are also evaluated,
    /// beside the test split (Data.Validation).
    let scenario (c: RunConfig) (log: string -> unit) =
        match c.Validation with
        | None -> scenarioWith id c log
        | Some fraction ->
            let onTest = scenarioWith (fun d -> { d with Train = fst (Validation.split fraction c.Seed d.Train) }) c log
            let onValidation = scenarioWith (Validation.holdOut c.Validation c.Seed) c ignore
            Scenario.withValidation onValidation onTest

    /// Decoding and augmentation through the parallel loader, with the backbone's preprocessing and
    /// the recipe's batch size and drop-last rule.
    let provider (c: RunConfig) : BatchProvider =
        let recipe = c.Method.Recipe
        // Two batches ahead: what Runtime.noCollection budgets for while a step runs.
        let options = { LoaderOptions.Defaults with BatchSize = recipe.BatchSize; Seed = c.Seed; Prefetch = 2 }
        let train = Transforms.training c.Normalisation Preprocessing.augreg c.ImageSize
        let eval = Transforms.evaluation c.Normalisation Preprocessing.augreg c.ImageSize
        let dropLast (samples: Sample[]) = recipe.DropLast && samples.Length >= recipe.BatchSize
        { Train = fun samples epoch -> Loader.epoch { options with Shuffle = true; DropLast = dropLast samples } train samples epoch
          Eval = fun samples -> Loader.epoch options eval samples 0
          BatchesPerEpoch = fun samples -> Training.batchesPerEpoch recipe samples.Length }

    /// One readable line of a run's settings (method, head, backbone, image size, epochs, batch,
    /// rate, seed), as the report and the log show it.
    let settings (recorded: Run.Recorded) =
        let c = recorded.Config
        let m = c.Method
        let r = m.Recipe
        sprintf "method %s; %s; backbone %s (%s); image size %d; %d epoch%s; batch %d; lr %g; seed %d"
            m.Name (Describe.head m) recorded.CheckpointFile (Describe.backbone m) c.ImageSize
            r.Epochs (if r.Epochs = 1 then "" else "s") r.BatchSize r.LearningRate c.Seed

    /// The report's view of a run.
    let summary (recorded: Run.Recorded) (progress: RunProgress) =
        let evaluations = progress.Evaluations |> List.map Array.ofList |> Array.ofList
        { Method = recorded.Config.Method.Name
          Settings = settings recorded
          TaskClasses = defaultArg progress.TaskClasses []
          EpochLosses = progress.EpochLosses
          Warnings = defaultArg progress.Warnings []
          Seed = recorded.Config.Seed
          Metrics = Metrics.ofEvaluations evaluations
          TrainSeconds = progress.TrainSeconds
          PeakMemoryBytes = progress.PeakMemoryBytes
          TrainableParameters = progress.TrainableParameters
          Checkpoint = recorded.CheckpointFile
          CheckpointSha256 = recorded.CheckpointSha256
          ConfigJson = Json.serialize recorded }

    /// The summary of a run directory with at least one finished task.
    let summaryOf (dir: string) =
        let recorded = Run.readRecorded dir
        if not (File.Exists(Run.progressFile dir)) then Errors.fail "%s: the run has not finished a task yet" dir
        let progress = Run.readProgress dir
        if progress.Evaluations.IsEmpty then Errors.fail "%s: the run has not finished a task yet" dir
        summary recorded progress

    /// metrics.json, metrics.csv and summary.csv from the progress so far, then the front end's own
    /// outputs (the HTML report).
    let writeOutputs (presentation: RunPresentation) (recorded: Run.Recorded) (dir: string) (progress: RunProgress) =
        if not progress.Evaluations.IsEmpty then
            let s = summary recorded progress
            Metrics.writeJson (metricsFile dir) s.Metrics
            Metrics.writeCsv (Path.Combine(dir, "metrics.csv")) (Path.Combine(dir, "summary.csv")) s.Metrics
            match progress.ValidationEvaluations with
            | Some rows when not rows.IsEmpty ->
                Metrics.writeJson (validationMetricsFile dir) (Metrics.ofEvaluations (rows |> List.map Array.ofList |> Array.ofList))
            | _ -> ()
            presentation.AfterTask dir s

    /// The run itself, once `dir` is locked.
    let private runLocked (presentation: RunPresentation) (run: PreparedRun) (dir: string) (device: torch.Device) =
        let c = run.Config
        let logPath = Run.logFile dir
        let mutable logFailed = false
        // A full disk must not end a run with a stack trace over a log line: the state files,
        // written atomically, are what matter; the first lost line is reported once.
        let appendRaw (text: string) =
            try File.AppendAllText(logPath, text)
            with :? IOException | :? UnauthorizedAccessException as e ->
                if not logFailed then
                    logFailed <- true
                    eprintfn "warning: %s: cannot append to the log (%s); the run goes on" logPath (e.Message.ReplaceLineEndings " ")
        let append (line: string) = appendRaw (sprintf "%s %s%s" (DateTime.Now.ToString "yyyy-MM-dd HH:mm:ss") line Environment.NewLine)
        for leftover in Files.removeLeftovers dir @ Files.removeLeftovers (Run.stateDir dir) do
            append (sprintf "removed %s, a temporary file of an interrupted write" leftover)
        let scenario = scenario c append
        let batches = provider c
        let steps = scenario.Tasks |> Array.sumBy (fun t -> int64 c.Method.Recipe.Epochs * int64 (batches.BatchesPerEpoch t.Train))
        let recorded = Run.record run
        presentation.Progress.Run(sprintf "%s on %s" c.Method.Name c.Benchmark, steps, fun reporter ->
            // Images per second over this session's steps, beside where the run stands.
            let clock = Diagnostics.Stopwatch.StartNew()
            let mutable images = 0L
            let stepDone (s: StepDone) =
                images <- images + int64 s.Images
                let rate = float images / max 1e-9 clock.Elapsed.TotalSeconds
                reporter.Status(sprintf "task %d/%d · epoch %d/%d · step %d/%d · %.1f images/s" s.Task s.Tasks s.Epoch s.Epochs s.Step s.Steps rate)
                reporter.Advance 1
            let events =
                { Message = fun line -> append line; reporter.Message line
                  Step = stepDone
                  TaskDone = fun progress -> writeOutputs presentation recorded dir progress }
            let outcome = Run.execute run dir scenario batches device events
            writeOutputs presentation recorded dir outcome.Progress
            // The log ends with what the command prints: the summary, warnings included.
            if not outcome.Progress.Evaluations.IsEmpty then
                append "summary:"
                appendRaw ((presentation.SummaryText (summary recorded outcome.Progress)).TrimEnd('\n').ReplaceLineEndings Environment.NewLine + Environment.NewLine)
            outcome)

    /// Runs or resumes the experiment in `dir`; log lines also go to dir/log.txt.
    let run (presentation: RunPresentation) (run: PreparedRun) (dir: string) (device: torch.Device) =
        validate run
        // Before any data is read or logged: a refused resume leaves the directory untouched.
        Run.checkResumable run dir
        // One process per run directory, from here to the end of the run. A directory this call
        // creates and leaves without progress (a failure before the first epoch was saved) is
        // removed again; one that survives (a kill) does not bind either: see Run.checkResumable.
        let created = not (Directory.Exists dir)
        let lock = RunLock.Acquire dir
        try
            try
                runLocked presentation run dir device
            finally
                (lock :> IDisposable).Dispose()
        with _ when created && not (File.Exists(Run.progressFile dir)) ->
            (try Directory.Delete(dir, true) with _ -> ())
            reraise ()

    /// The run's checkpoint: the one given (same SHA-256), else the recorded path (a relative one
    /// as RunPaths.candidates finds it), with a note when it is not where the run recorded it.
    let private locateCheckpoint (dir: string) (recorded: Run.Recorded) (given: string option) =
        let recordedPath = recorded.Config.Checkpoint
        let differs (path: string) sha =
            Errors.fail "%s: SHA-256 %s differs from the %s the run %s recorded" path sha recorded.CheckpointSha256 dir
        let moved (path: string) =
            if Path.IsPathRooted recordedPath && Path.GetFullPath recordedPath = path then []
            else [ sprintf "the checkpoint moved (same SHA-256): the run recorded %s; using %s" recordedPath path ]
        match given with
        | Some path ->
            let full = Path.GetFullPath path
            let sha = RunCheckpoint.sha256 full
            if sha <> recorded.CheckpointSha256 then differs path sha
            full, moved full
        | None ->
            match RunPaths.candidates dir recordedPath |> List.filter File.Exists with
            | [] ->
                Errors.fail "%s: checkpoint not found (run %s); if it moved, give its new path with --checkpoint" recordedPath dir
            | existing ->
                let hashes = existing |> List.map (fun p -> p, RunCheckpoint.sha256 p)
                match hashes |> List.tryFind (fun (_, sha) -> sha = recorded.CheckpointSha256) with
                | Some(path, _) -> path, (if path = Path.GetFullPath recordedPath then [] else moved path)
                | None -> differs (fst hashes.Head) (snd hashes.Head)

    /// Opens a run again: its configuration, class names and layout (from scenario.json, or from
    /// its data when asked or when the run predates that record), and the model with the state of
    /// its last completed task. The checkpoint must be the one the run recorded (by SHA-256).
    let reopen (dir: string) (device: torch.Device) (options: ReopenOptions) : ReopenedRun =
        let recorded = Run.readRecorded dir
        let checkpointPath, checkpointNotes = locateCheckpoint dir recorded options.Checkpoint
        let c = { recorded.Config with Checkpoint = checkpointPath }
        let record = RecordedScenario.read dir
        let classNames, layout, scenario, dataNotes =
            match record, options with
            | Some r, { ReadData = false; Data = None } -> r.ClassNames, r.Layout, None, []
            | _ ->
                let data, notes =
                    match options.Data, c.Data with
                    | Some given, recordedData ->
                        let full = RunPaths.canonicalData given
                        if record.IsNone then
                            Errors.fail "%s: the run recorded no data index (scenario.json) to check %s against; give its data where it was" dir given
                        Some full,
                        (if recordedData |> Option.exists (fun d -> RunPaths.canonicalData d = full) then []
                         else [ sprintf "the data moved (same data index): the run recorded %s; using %s" (defaultArg recordedData "(none)") full ])
                    | None, Some recordedData -> Some(RunPaths.locateData dir recordedData), []
                    | None, None -> None, []
                let s = scenario { c with Data = data } ignore
                RecordedScenario.check dir data s
                s.ClassNames, s.Layout, Some s, notes
        let tasks = layout.ClassesPerTask.Length
        let learned = [ 0 .. tasks - 1 ] |> List.filter (fun t -> File.Exists(Run.taskStateFile dir t)) |> List.tryLast
        match learned with
        | None -> Errors.fail "%s: no task has been completed yet" dir
        | Some last ->
            let source = RunCheckpoint.read checkpointPath c.Heads
            let model = PromptedModel.build c.Method layout (RunCheckpoint.backbone c source)
            try
                TrainableState.load (Run.taskStateFile dir last) model
                model.RestoreTask last
                model.``to`` device |> ignore
                model.eval ()
                { Directory = dir; Recorded = recorded; ClassNames = classNames; Layout = layout; Scenario = scenario
                  Model = model; LastTask = last; Notes = checkpointNotes @ dataNotes }
            with _ ->
                model.Dispose()
                reraise ()
