namespace Prompting.Engine

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Tensors
open Prompting.Prompts

/// Where a run stands; rewritten atomically after every epoch and task, so a killed run resumes.
type RunProgress =
    { CompletedTasks: int
      /// Epochs finished of task CompletedTasks (0 when it has not started).
      EpochsDone: int
      /// Row i: the evaluation of every task j <= i after training task i.
      Evaluations: Evaluation list list
      EpochLosses: float list list
      TrainSeconds: float
      /// The largest process peak RSS seen at any save, over all sessions of the run.
      PeakMemoryBytes: int64
      TrainableParameters: int64
      /// Trainable state and optimiser files of the last finished epoch (relative to the run).
      EpochState: string option
      EpochOptimizers: string list
      /// Steps whose garbage-collection guard (Runtime.noCollection) ended early because they
      /// allocated more than its budget, over all sessions of the run (absent in older runs).
      GcRegionOverruns: int64 option
      /// Steps that ran without the guard because the runtime refused to start one.
      GcUnguardedSteps: int64 option
      /// Row i: the evaluation on every task j <= i's held-out validation data (`--validation`).
      ValidationEvaluations: Evaluation list list option
      /// The class names of each task, in the run's order (absent in older runs).
      TaskClasses: string list list option
      /// What makes the results doubtful (Engine.Warnings): too few steps, a batch larger than a
      /// task, chance-level accuracy after the last task. Absent in older runs.
      Warnings: string list option }

/// How a run gets batches: the engine stays independent of decoding and augmentation.
type BatchProvider =
    { /// Training batches of the samples for an epoch (shuffled and augmented per the seed).
      Train: Sample[] -> int -> Batch seq
      /// Evaluation batches in order, with the evaluation transform.
      Eval: Sample[] -> Batch seq
      BatchesPerEpoch: Sample[] -> int }

/// Where a run stands after one optimiser step, in the user's terms (all 1-based).
type StepDone =
    { Task: int
      Tasks: int
      Epoch: int
      Epochs: int
      /// The step within the epoch, and the epoch's number of steps.
      Step: int
      Steps: int
      /// Images in the step's batch.
      Images: int }

/// What a run reports while it works: notable events, training steps, finished tasks.
type RunEvents =
    { Message: string -> unit
      Step: StepDone -> unit
      TaskDone: RunProgress -> unit }

module RunEvents =
    let silent = { Message = ignore; Step = ignore; TaskDone = ignore }

/// What a finished run hands back (also written to the run directory).
type RunOutcome =
    { Directory: string
      Progress: RunProgress
      TrainableParameters: int64 }

module Run =
    let configFile dir = Path.Combine(dir, "config.json")
    let progressFile dir = Path.Combine(dir, "progress.json")
    let logFile dir = Path.Combine(dir, "log.txt")
    let stateDir dir = Path.Combine(dir, "state")
    let taskStateFile dir t = Path.Combine(stateDir dir, sprintf "task-%02d.safetensors" t)
    /// The parts' lifecycle state after task t (class statistics, ...), exact float64.
    let lifecycleFile dir t = Path.Combine(stateDir dir, sprintf "task-%02d.lifecycle" t)
    /// Format 1 kept one class-statistics file for the whole run; read only to resume such runs.
    let legacyStatisticsFile dir = Path.Combine(stateDir dir, "class-statistics.json")

    /// The run-directory format this version writes (config.json's FormatVersion). Format 1 (no
    /// FormatVersion) kept the recipe beside the method as Config.Training; it is read as format 2.
    [<Literal>]
    let FormatVersion = 2

    /// What config.json holds: the configuration plus the checkpoint's identity.
    type Recorded =
        { FormatVersion: int
          Config: RunConfig
          CheckpointFile: string
          CheckpointSha256: string }

    let private parseObject (path: string) (text: string) =
        let root =
            try Text.Json.Nodes.JsonNode.Parse(text)
            with :? Text.Json.JsonException as e -> Errors.fail "%s: invalid configuration JSON (%s)" path e.Message
        match root with
        | :? Text.Json.Nodes.JsonObject as o -> o
        | _ -> Errors.fail "%s: invalid configuration JSON (not an object)" path

    let private fillMethodFields (o: Text.Json.Nodes.JsonObject) =
        match o["Config"] with
        | :? Text.Json.Nodes.JsonObject as c ->
            match c["Method"] with
            | :? Text.Json.Nodes.JsonObject as m -> MethodUpgrade.upgrade m
            | _ -> ()
        | _ -> ()

    /// A config.json object in the current format: format 1 moves Config.Training into
    /// Config.Method.Recipe (without drop-last, as it trained); a newer format is refused.
    let private upgradeObject (path: string) (o: Text.Json.Nodes.JsonObject) =
        let version =
            match o["FormatVersion"] with
            | null -> 1
            | v -> try v.GetValue<int>() with _ -> Errors.fail "%s: FormatVersion must be an integer" path
        if version > FormatVersion then
            Errors.fail "%s: run directory format %d is newer than this version of Prompting reads (%d)" path version FormatVersion
        if version < 1 then Errors.fail "%s: unknown run directory format %d" path version
        if version = 1 then
            match o["Config"] with
            | :? Text.Json.Nodes.JsonObject as c ->
                match c["Training"], c["Method"] with
                | (:? Text.Json.Nodes.JsonObject as t), (:? Text.Json.Nodes.JsonObject as m) ->
                    c.Remove "Training" |> ignore
                    if isNull t["DropLast"] then t["DropLast"] <- Text.Json.Nodes.JsonValue.Create false
                    m["Recipe"] <- t
                | _ -> ()
            | _ -> ()
            o["FormatVersion"] <- Text.Json.Nodes.JsonValue.Create FormatVersion
        fillMethodFields o
        o

    let private upgrade (path: string) (text: string) = (upgradeObject path (parseObject path text)).ToJsonString(Json.options)

    /// A configuration file for `run --config`: a RunConfig, or a run directory's config.json (which
    /// wraps one), in any supported format.
    let readConfigFile (path: string) : RunConfig =
        if not (File.Exists path) then Errors.fail "%s: configuration file not found" path
        let o = parseObject path (File.ReadAllText path)
        let wrapped =
            if o.ContainsKey "Config" then o
            else
                let w = Text.Json.Nodes.JsonObject()
                w["Config"] <- o.DeepClone()
                w
        Json.deserialize<RunConfig> path (((upgradeObject path wrapped)["Config"]).ToJsonString(Json.options))

    /// Reads a run's config.json (any supported format).
    let readRecorded (dir: string) =
        let path = configFile dir
        if not (File.Exists path) then Errors.fail "%s: not a run directory (no config.json)" dir
        Json.deserialize<Recorded> path (upgrade path (File.ReadAllText path))

    /// Names of epoch files a progress.json may hold: files of the run's state directory only.
    let private epochFile = Text.RegularExpressions.Regex(@"^state/epoch-\d{2}-\d{3}\.(safetensors|optimizer\d+)$")

    /// Refuses a progress.json that does not describe this run: nulls, counts out of range, and
    /// epoch-file names that are not files of the run directory (a crafted `../victim` would
    /// otherwise be read and deleted on resume).
    let validateProgress (dir: string) (config: RunConfig) (p: RunProgress) =
        let file = progressFile dir
        if isNull (box p.Evaluations) || isNull (box p.EpochLosses) || isNull (box p.EpochOptimizers)
           || p.Evaluations |> List.exists (fun row -> isNull (box row))
           || p.EpochLosses |> List.exists (fun row -> isNull (box row)) then
            Errors.fail "%s: a list of the progress is null" file
        if p.CompletedTasks < 0 || p.CompletedTasks > config.Tasks then
            Errors.fail "%s: CompletedTasks %d is outside 0..%d" file p.CompletedTasks config.Tasks
        if p.EpochsDone < 0 || p.EpochsDone > config.Method.Recipe.Epochs then
            Errors.fail "%s: EpochsDone %d is outside 0..%d" file p.EpochsDone config.Method.Recipe.Epochs
        if p.Evaluations.Length <> p.CompletedTasks then
            Errors.fail "%s: %d rows of evaluations for %d completed tasks" file p.Evaluations.Length p.CompletedTasks
        match p.ValidationEvaluations with
        | Some rows when isNull (box rows) || rows.Length <> p.CompletedTasks ->
            Errors.fail "%s: the validation evaluations do not have a row per completed task" file
        | _ -> ()
        let names = [ for s in Option.toList p.EpochState -> "EpochState", s ] @ [ for o in p.EpochOptimizers -> "EpochOptimizers", o ]
        for field, name in names do
            if isNull name || not (epochFile.IsMatch name) then
                Errors.fail "%s: %s '%s' is not a state file of the run directory" file field name

    /// Reads a run's progress.json.
    let readProgress (dir: string) =
        let path = progressFile dir
        let text =
            try File.ReadAllText path
            with :? IOException as e -> Errors.fail "%s: cannot read (%s)" path e.Message
        Json.deserialize<RunProgress> path text

    let private emptyProgress =
        { CompletedTasks = 0; EpochsDone = 0; Evaluations = []; EpochLosses = []
          TrainSeconds = 0.0; PeakMemoryBytes = 0L; TrainableParameters = 0L; EpochState = None; EpochOptimizers = []
          GcRegionOverruns = None; GcUnguardedSteps = None; ValidationEvaluations = None
          TaskClasses = None; Warnings = None }

    let private writeText path (text: string) = Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text))

    /// What config.json records for a prepared run.
    let record (run: PreparedRun) =
        { FormatVersion = FormatVersion
          Config = run.Config
          CheckpointFile = Path.GetFileName run.Config.Checkpoint
          CheckpointSha256 = run.Checkpoint.Sha256 }

    let private recordedJson (run: PreparedRun) = Json.serialize (record run)

    /// A config.json from before runs recorded their split gets the split its benchmark made then,
    /// so that resuming it with the same options is no difference.
    let private withUnrecordedSplit (path: string) (json: string) =
        let o = parseObject path json
        match o["Config"] with
        | :? Text.Json.Nodes.JsonObject as c when not (c.ContainsKey "Split") ->
            let benchmark = c["Benchmark"] |> Option.ofObj |> Option.map (fun b -> b.GetValue<string>())
            let data = c["Data"] |> Option.ofObj |> Option.map (fun d -> d.GetValue<string>())
            match benchmark |> Option.bind (fun name -> Benchmarks.all |> List.tryFind (fun b -> b.Name = name)) with
            | Some b -> c["Split"] <- Text.Json.Nodes.JsonValue.Create(b.UnrecordedSplit data)
            | None -> ()
            o.ToJsonString(Json.options)
        | _ -> json

    /// Configuration changes a resume accepts: adding --skip-corrupt only leaves out images that
    /// no longer decode (every image is checked before the first step, so none was trained on).
    let resumeAllows (difference: string) = difference = "Config.SkipCorrupt: false -> true"

    /// A moved checkpoint: its path (and file name) changed, its SHA-256 did not.
    let private checkpointMoved (diffs: string list) (difference: string) =
        (difference.StartsWith "Config.Checkpoint:" || difference.StartsWith "CheckpointFile:")
        && not (diffs |> List.exists (fun d -> d.StartsWith "CheckpointSha256:"))

    /// Moved data: accepted here when the run recorded its data index; Run.execute compares it
    /// with the data's before anything is written.
    let private dataMoved (dir: string) (difference: string) =
        difference.StartsWith "Config.Data:" && File.Exists(RecordedScenario.file dir)

    /// Differences to the recorded configuration the run accepts: adding --skip-corrupt, recipe
    /// fields when asked (`--accept-recipe-change`, e.g. a lower rate after a divergence), and a
    /// checkpoint or data directory that moved with its content unchanged.
    let private acceptable (run: PreparedRun) (dir: string) (diffs: string list) (difference: string) =
        resumeAllows difference || (run.AcceptRecipeChange && difference.StartsWith "Config.Method.Recipe.")
        || checkpointMoved diffs difference || dataMoved dir difference

    /// A recorded configuration with the checkpoint and data paths of runs that recorded them as
    /// typed made canonical, found as RunPaths.locate finds them.
    let private withCanonicalPaths (dir: string) (path: string) (json: string) =
        let o = parseObject path json
        match o["Config"] with
        | :? Text.Json.Nodes.JsonObject as c ->
            let canonical (field: string) (f: string -> string) =
                match c[field] with
                | :? Text.Json.Nodes.JsonValue as v when v.GetValueKind() = Text.Json.JsonValueKind.String ->
                    c[field] <- Text.Json.Nodes.JsonValue.Create(f (v.GetValue<string>()))
                | _ -> ()
            canonical "Checkpoint" (RunPaths.locate dir)
            canonical "Data" (RunPaths.locateData dir)
            o.ToJsonString(Json.options)
        | _ -> json

    /// Whether the directory holds a configuration but nothing trained under it (no progress.json:
    /// the earlier start failed, was killed or interrupted before its first epoch was saved).
    let trainedNothing (dir: string) = File.Exists(configFile dir) && not (File.Exists(progressFile dir))

    /// The differences to the directory's recorded configuration, after refusing those not accepted.
    /// A configuration under which nothing was trained binds nothing: the new one replaces it.
    let private differences (run: PreparedRun) (dir: string) (json: string) =
        if File.Exists(configFile dir) && not (trainedNothing dir) then
            let path = configFile dir
            let existing = upgrade path (File.ReadAllText path) |> withUnrecordedSplit path |> withCanonicalPaths dir path
            let diffs = Json.differences existing json
            match diffs |> List.filter (acceptable run dir diffs >> not) with
            | [] -> diffs
            | refused ->
                let hint =
                    if refused |> List.forall (fun d -> d.StartsWith "Config.Method.Recipe.") then
                        "; use another --out, the original options, or --accept-recipe-change to continue with the new recipe"
                    else "; use another --out or the original options"
                Errors.fail "%s: this run was started with a different configuration (%s)%s"
                    dir (String.Join("; ", refused |> List.truncate 6)) hint
        else []

    /// Fails, touching nothing, when `dir` holds a run made with a different configuration.
    let checkResumable (run: PreparedRun) (dir: string) = differences run dir (recordedJson run) |> ignore

    /// Creates the run directory, or checks that an existing one was made with the same
    /// configuration (recording an accepted recipe change); returns the progress to resume from.
    let prepare (run: PreparedRun) (dir: string) (log: string -> unit) =
        let json = recordedJson run
        let accepted = differences run dir json
        if trainedNothing dir then
            let changed =
                try Json.differences (upgrade (configFile dir) (File.ReadAllText(configFile dir))) json
                with PromptingError why -> [ why ]
            if not changed.IsEmpty then
                log (sprintf "an earlier start here trained nothing; its configuration is replaced (%s)" (String.Join("; ", changed |> List.truncate 6)))
                writeText (configFile dir) json
        Directory.CreateDirectory(stateDir dir) |> ignore
        // An accepted change (--skip-corrupt added, a recipe change asked for) is recorded.
        if not (File.Exists(configFile dir)) || not accepted.IsEmpty then
            let moved, changed = accepted |> List.partition (fun d -> d.StartsWith "Config.Checkpoint:" || d.StartsWith "Config.Data:" || d.StartsWith "CheckpointFile:")
            for d in moved do
                if d.StartsWith "Config.Checkpoint:" then
                    log (sprintf "the checkpoint moved (same SHA-256): %s; the run records the new path" (d.Substring "Config.Checkpoint: ".Length))
                elif d.StartsWith "Config.Data:" then
                    log (sprintf "the data moved (same data index): %s; the run records the new path" (d.Substring "Config.Data: ".Length))
            if not changed.IsEmpty then log (sprintf "configuration changed on resume: %s" (String.Join("; ", changed)))
            writeText (configFile dir) json
        if File.Exists(progressFile dir) then
            let progress = readProgress dir
            validateProgress dir run.Config progress
            progress
        else emptyProgress

    let private seedFor (config: RunConfig) (task: int) (epoch: int) =
        int64 config.Seed * 1_000_003L + int64 task * 1_009L + int64 epoch

    /// This process's peak RSS so far, never below what earlier sessions of the run recorded.
    let private peakMemory (progress: RunProgress) =
        max progress.PeakMemoryBytes (Diagnostics.Process.GetCurrentProcess().PeakWorkingSet64)

    /// Losses per task, per epoch: epoch 0 opens the task's list, later epochs extend it.
    let private appendLoss (losses: float list list) (epoch: int) (loss: float) =
        match epoch, List.rev losses with
        | 0, _
        | _, [] -> losses @ [ [ loss ] ]
        | _, current :: earlier -> List.rev earlier @ [ current @ [ loss ] ]

    /// The parts' lifecycle state as it was after task t (nothing before the first task).
    let private restoreLifecycle (dir: string) (model: PromptedModel) (t: int) =
        let file = lifecycleFile dir t
        if File.Exists file then model.RestoreLifecycleState(ExactFile.read file)
        elif File.Exists(legacyStatisticsFile dir) then
            let path = legacyStatisticsFile dir
            let stats = ClassStatistics()
            stats.Import(Json.deserialize<(int * int * float[] * float[]) list> path (File.ReadAllText path))
            model.RestoreLifecycleState [ for key, value in stats.ToExact() -> "head." + key, value ]

    /// The end of a task as its parts declared it: a feature pass over the task's training data when
    /// one asks for it, then every part's EndTask (prototypes, head alignment, ...).
    let private endTask (config: RunConfig) (model: PromptedModel) (task: TaskData) (batches: BatchProvider) (device: torch.Device) =
        if model.AtTaskEnd = FeaturePass then
            // Only the feature pass runs without gradients: a part's EndTask may train (the head).
            use _ = torch.no_grad ()
            model.eval ()
            for batch in batches.Eval task.Train do
                use _ = Runtime.noCollection (Runtime.stepBudget batch.Count batch.Size 4)
                use scope = torch.NewDisposeScope()
                let x = Batches.pixels device batch
                let output = model.Forward(x, false)
                model.ObserveFeatures(output.Features, torch.tensor batch.Labels)
        torch.manual_seed (seedFor config task.Index 100_000) |> ignore
        model.EndTask()

    /// Runs (or resumes) every task: train, end-of-task lifecycle, save state, evaluate all seen tasks.
    let execute (run: PreparedRun) (dir: string) (scenario: Scenario) (batches: BatchProvider)
                (device: torch.Device) (events: RunEvents) =
        let config = run.Config
        let recipe = config.Method.Recipe
        let log = events.Message
        use _ = Runtime.exclusiveTraining dir
        // Before anything is written: a resume on other data (a moved directory must match) is refused.
        // A directory where nothing was trained binds nothing, its recorded scenario included.
        let replacing = trainedNothing dir
        if not replacing then RecordedScenario.check dir config.Data scenario
        let mutable progress = prepare run dir log
        if replacing then try File.Delete(RecordedScenario.file dir) with _ -> ()
        RecordedScenario.writeIfAbsent dir scenario
        // The guard counters are process-wide: this session adds what it saw since it started.
        let overrunsBefore, unguardedBefore = Runtime.regionOverruns (), Runtime.unguardedSteps ()
        let earlierOverruns, earlierUnguarded = defaultArg progress.GcRegionOverruns 0L, defaultArg progress.GcUnguardedSteps 0L
        let withGuardCounts (p: RunProgress) =
            let overruns = earlierOverruns + Runtime.regionOverruns () - overrunsBefore
            let unguarded = earlierUnguarded + Runtime.unguardedSteps () - unguardedBefore
            if overruns > defaultArg p.GcRegionOverruns 0L then
                log (sprintf "warning: %d step(s) so far allocated more than the garbage-collection guard's budget (GcRegionOverruns in progress.json)" overruns)
            { p with GcRegionOverruns = Some overruns; GcUnguardedSteps = Some unguarded }
        let saveProgress () = writeText (progressFile dir) (Json.serialize progress)
        torch.manual_seed (int64 config.Seed) |> ignore
        let backbone = RunCheckpoint.backbone config run.Checkpoint
        use model = PromptedModel.build config.Method scenario.Layout backbone
        model.``to`` device |> ignore
        if recipe.Bf16 then model.SetComputeType torch.bfloat16
        let trainable = model.TrainableParameters() |> List.sumBy (fun (_, p) -> p.numel ())
        let taskClasses = [ for task in scenario.Tasks -> [ for c in task.Classes -> scenario.ClassNames[c] ] ]
        let planned = Warnings.ofPlan recipe (trainable > 0L) [ for task in scenario.Tasks -> task.Train.Length ]
        let classes = [ for task in scenario.Tasks -> task.Classes ]
        let warningsAfter (evaluations: Evaluation list list) = planned @ Warnings.ofEvaluations classes evaluations
        for w in planned do log (Warnings.line w)
        progress <-
            { progress with
                TrainableParameters = trainable
                TaskClasses = Some taskClasses
                Warnings = Some(warningsAfter progress.Evaluations) }
        // Resume: the state of the last completed task, then that of the last finished epoch.
        if progress.CompletedTasks > 0 then
            TrainableState.load (taskStateFile dir (progress.CompletedTasks - 1)) model
            restoreLifecycle dir model (progress.CompletedTasks - 1)
        let tasks = scenario.Tasks.Length
        for t in progress.CompletedTasks .. tasks - 1 do
            let task = scenario.Tasks[t]
            let clock = Stopwatch.StartNew()
            let firstEpoch =
                match progress.EpochState with
                | Some state when progress.EpochsDone > 0 ->
                    TrainableState.load (Path.Combine(dir, state)) model
                    model.RestoreTask t
                    log (sprintf "task %d: resuming after epoch %d" t progress.EpochsDone)
                    progress.EpochsDone
                | _ ->
                    torch.manual_seed (seedFor config t -1) |> ignore
                    model.BeginTask t
                    0
            let names =
                let shown = task.Classes |> Array.truncate 10 |> Array.map (fun c -> scenario.ClassNames[c])
                String.Join(", ", shown) + (if task.Classes.Length > shown.Length then sprintf ", … (%d more)" (task.Classes.Length - shown.Length) else "")
            if task.Validation.Length > 0 then
                log (sprintf "task %d/%d: %d classes, %d train, %d validation and %d test images (%s)" (t + 1) tasks task.Classes.Length task.Train.Length task.Validation.Length task.Test.Length names)
            else
                log (sprintf "task %d/%d: %d classes, %d train and %d test images (%s)" (t + 1) tasks task.Classes.Length task.Train.Length task.Test.Length names)
            let restore (optimizers: torch.optim.Optimizer list) =
                if firstEpoch > 0 && progress.EpochOptimizers.Length = optimizers.Length then
                    for o, f in List.zip optimizers progress.EpochOptimizers do
                        (o :?> Modules.OptimizerHelper).load_state_dict (Path.Combine(dir, f)) |> ignore
            let epochDone (epoch: int) (loss: float) (optimizers: torch.optim.Optimizer list) =
                let stateName = sprintf "state/epoch-%02d-%03d.safetensors" t epoch
                TrainableState.save (Path.Combine(dir, stateName)) model
                let optimizerNames = optimizers |> List.mapi (fun i _ -> sprintf "state/epoch-%02d-%03d.optimizer%d" t epoch i)
                for o, name in List.zip optimizers optimizerNames do
                    Files.writeAtomic (Path.Combine(dir, name)) (fun tmp -> (o :?> Modules.OptimizerHelper).save_state_dict tmp)
                let previous = progress.EpochState :: (progress.EpochOptimizers |> List.map Some) |> List.choose id
                progress <-
                    { progress with
                        EpochsDone = epoch + 1
                        EpochState = Some stateName
                        EpochOptimizers = optimizerNames
                        EpochLosses = appendLoss progress.EpochLosses epoch loss
                        TrainSeconds = progress.TrainSeconds + clock.Elapsed.TotalSeconds
                        PeakMemoryBytes = peakMemory progress }
                    |> withGuardCounts
                clock.Restart()
                saveProgress ()
                for p in previous do
                    if p <> stateName && not (List.contains p optimizerNames) then try File.Delete(Path.Combine(dir, p)) with _ -> ()
                // Methods without trainable parameters (SimpleCIL) take no gradient steps: no loss to show.
                let lossText = if Double.IsNaN loss then "no gradient steps" else sprintf "loss %.4f" loss
                log (sprintf "task %d epoch %d/%d: %s" (t + 1) (epoch + 1) recipe.Epochs lossText)
                torch.manual_seed (seedFor config t (epoch + 1)) |> ignore
            torch.manual_seed (seedFor config t firstEpoch) |> ignore
            try
                let perEpoch = batches.BatchesPerEpoch task.Train
                let stepDone epoch step images =
                    events.Step { Task = t + 1; Tasks = tasks; Epoch = epoch + 1; Epochs = recipe.Epochs; Step = step + 1; Steps = perEpoch; Images = images }
                Trainer.trainTask model recipe device perEpoch (fun epoch -> batches.Train task.Train epoch) firstEpoch restore stepDone epochDone
            with
            | NoGradient names ->
                let part (name: string) =
                    match name.Split '.' with
                    | [| "prompts"; group; _ |] | [| "prompts"; group; _; _ |] -> sprintf "prompt group %s" group
                    | parts -> parts[0]
                let parts = names |> List.map part |> List.distinct
                Errors.fail "method %s: %s received no gradient in the first steps of task %d (%s): the loss does not depend on them, so they cannot learn; check the method's head and parts"
                    config.Method.Name (String.Join(", ", names |> List.truncate 4)) (t + 1) (String.Join(", ", parts))
            | Diverged(epoch, step, what) ->
                let kept =
                    if epoch > 0 then sprintf "the state after epoch %d of task %d" epoch (t + 1)
                    elif t > 0 then sprintf "the state after task %d" t
                    else "nothing trained"
                let at = match step with Some s -> sprintf ", step %d" (s + 1) | None -> ""
                Errors.fail "%s: training diverged at task %d, epoch %d%s: %s; the run stopped and keeps %s (resume with a lower --lr and --accept-recipe-change, or start anew in another --out)"
                    dir (t + 1) (epoch + 1) at what kept
            // The end-of-task pass starts from the lifecycle state of task t − 1 (restored above on a
            // resume), so a kill anywhere before the progress write below redoes it exactly.
            for line in endTask config model task batches device do log (sprintf "task %d end: %s" (t + 1) line)
            match model.LifecycleState() with
            | [] -> ()
            | state -> ExactFile.write (lifecycleFile dir t) state
            TrainableState.save (taskStateFile dir t) model
            let results = [ for j in 0 .. t -> Evaluate.evaluateTask model device scenario.Tasks[j] (batches.Eval scenario.Tasks[j].Test) ]
            let validation =
                if scenario.Tasks |> Array.exists (fun task -> task.Validation.Length > 0) then
                    Some [ for j in 0 .. t -> Evaluate.evaluateTask model device scenario.Tasks[j] (batches.Eval scenario.Tasks[j].Validation) ]
                else None
            let row (f: Evaluation -> float) = results |> List.map f
            let evaluations = progress.Evaluations @ [ results ]
            let leftovers = progress.EpochState :: (progress.EpochOptimizers |> List.map Some) |> List.choose id
            progress <-
                { progress with
                    CompletedTasks = t + 1
                    EpochsDone = 0
                    EpochState = None
                    EpochOptimizers = []
                    Evaluations = evaluations
                    Warnings = Some(warningsAfter evaluations)
                    ValidationEvaluations =
                        validation |> Option.map (fun row -> defaultArg progress.ValidationEvaluations [] @ [ row ])
                    TrainSeconds = progress.TrainSeconds + clock.Elapsed.TotalSeconds
                    PeakMemoryBytes = peakMemory progress }
                |> withGuardCounts
            saveProgress ()
            for p in leftovers do try File.Delete(Path.Combine(dir, p)) with _ -> ()
            // Task t is committed: a resume restores its lifecycle state, never an older one (a ridge
            // head's Gram matrix is M² floats per task, so older files are not kept).
            if t > 0 then try File.Delete(lifecycleFile dir (t - 1)) with _ -> ()
            events.TaskDone progress
            log (sprintf "after task %d: accuracy %s" (t + 1) (String.Join(" ", row (fun r -> r.ClassIncremental) |> List.map (sprintf "%.1f"))))
            for w in Warnings.ofEvaluations classes evaluations do log (Warnings.line w)
        { Directory = dir; Progress = progress; TrainableParameters = trainable }
