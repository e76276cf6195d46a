namespace Prompting.Engine

open System
open System.Diagnostics
open System.IO
open System.Security.Cryptography
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
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
      EpochOptimizers: string list }

/// How a run gets batches: the engine stays independent of decoding and augmentation.
type BatchProvider =
    { /// Training batches of the samples for an epoch (shuffled and augmented per the seed).
      Train: Sample[] -> int -> Batch seq
      /// Evaluation batches in order, with the evaluation transform.
      Eval: Sample[] -> Batch seq
      BatchesPerEpoch: Sample[] -> int }

/// What a run reports while it works: notable events, training steps, finished tasks.
type RunEvents =
    { Message: string -> unit
      Step: unit -> unit
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
    let statisticsFile dir = Path.Combine(stateDir dir, "class-statistics.json")

    let sha256 (path: string) =
        if not (File.Exists path) then Errors.fail "%s: checkpoint not found" path
        use s = File.OpenRead path
        Convert.ToHexString(SHA256.HashData s).ToLowerInvariant()

    /// What config.json holds: the configuration plus the checkpoint's identity.
    type Recorded =
        { Config: RunConfig
          CheckpointFile: string
          CheckpointSha256: string }

    let private emptyProgress =
        { CompletedTasks = 0; EpochsDone = 0; Evaluations = []; EpochLosses = []
          TrainSeconds = 0.0; PeakMemoryBytes = 0L; TrainableParameters = 0L; EpochState = None; EpochOptimizers = [] }

    let private writeText path (text: string) = Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text))

    let private recordedJson (config: RunConfig) =
        Json.serialize
            { Config = config
              CheckpointFile = Path.GetFileName config.Checkpoint
              CheckpointSha256 = sha256 config.Checkpoint }

    /// Configuration changes a resume accepts: adding --skip-corrupt only leaves out images that
    /// no longer decode (every image is checked before the first step, so none was trained on).
    let resumeAllows (difference: string) = difference = "Config.SkipCorrupt: false -> true"

    let private refuseDifferent (dir: string) (json: string) =
        if File.Exists(configFile dir) then
            let existing = File.ReadAllText(configFile dir)
            match Json.differences existing json |> List.filter (resumeAllows >> not) with
            | [] -> ()
            | diffs ->
                Errors.fail "%s: this run was started with a different configuration (%s); use another --out or the original options"
                    dir (String.Join("; ", diffs |> List.truncate 6))

    /// Fails, touching nothing, when `dir` holds a run made with a different configuration.
    let checkResumable (config: RunConfig) (dir: string) = refuseDifferent dir (recordedJson config)

    /// Creates the run directory, or checks that an existing one was made with the same
    /// configuration; returns the progress to resume from.
    let prepare (config: RunConfig) (dir: string) =
        let json = recordedJson config
        refuseDifferent dir json
        Directory.CreateDirectory(stateDir dir) |> ignore
        // A resume that adds --skip-corrupt records it.
        if not (File.Exists(configFile dir)) || Json.differences (File.ReadAllText(configFile dir)) json |> List.exists resumeAllows then
            writeText (configFile dir) json
        if File.Exists(progressFile dir) then
            Json.deserialize<RunProgress> (progressFile dir) (File.ReadAllText(progressFile dir))
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

    let private saveStatistics dir (stats: ClassStatistics) =
        writeText (statisticsFile dir) (Json.serialize (stats.Export()))

    let private loadStatistics dir (stats: ClassStatistics) =
        if File.Exists(statisticsFile dir) then
            stats.Import(Json.deserialize<(int * int * float[] * float[]) list> (statisticsFile dir) (File.ReadAllText(statisticsFile dir)))

    /// Runs (or resumes) every task: train, end-of-task lifecycle, save state, evaluate all seen tasks.
    let execute (config: RunConfig) (dir: string) (scenario: Scenario) (batches: BatchProvider)
                (device: torch.Device) (events: RunEvents) =
        let log = events.Message
        let mutable progress = prepare config dir
        let saveProgress () = writeText (progressFile dir) (Json.serialize progress)
        torch.manual_seed (int64 config.Seed) |> ignore
        let backbone =
            Checkpoint.load config.Checkpoint { ImageSize = Some config.ImageSize; Heads = config.Heads; Classes = None }
        use model = PromptedModel.build config.Method scenario.Layout backbone
        model.``to`` device |> ignore
        if config.Training.Bf16 then model.SetComputeType torch.bfloat16
        let trainable = model.TrainableParameters() |> List.sumBy (fun (_, p) -> p.numel ())
        progress <- { progress with TrainableParameters = trainable }
        let stats = ClassStatistics()
        loadStatistics dir stats
        // Resume: the state of the last completed task, then that of the last finished epoch.
        if progress.CompletedTasks > 0 then
            TrainableState.load (taskStateFile dir (progress.CompletedTasks - 1)) model
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
            log (sprintf "task %d/%d: %d classes, %d train and %d test images" (t + 1) tasks task.Classes.Length task.Train.Length task.Test.Length)
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
                clock.Restart()
                saveProgress ()
                for p in previous do
                    if p <> stateName && not (List.contains p optimizerNames) then try File.Delete(Path.Combine(dir, p)) with _ -> ()
                // Methods without trainable parameters (SimpleCIL) take no gradient steps: no loss to show.
                let lossText = if Double.IsNaN loss then "no gradient steps" else sprintf "loss %.4f" loss
                log (sprintf "task %d epoch %d/%d: %s" (t + 1) (epoch + 1) config.Training.Epochs lossText)
                torch.manual_seed (seedFor config t (epoch + 1)) |> ignore
            torch.manual_seed (seedFor config t firstEpoch) |> ignore
            Trainer.trainTask model config.Training device (batches.BatchesPerEpoch task.Train)
                (fun epoch -> batches.Train task.Train epoch) firstEpoch restore events.Step epochDone
            // End of task: class statistics of the prompted features (VQ-Prompt, SimpleCIL).
            if model.Method.Head = PrototypeHead || model.Method.Recalibration.IsSome then
                // Only the statistics pass runs without gradients: the head retraining of
                // Lifecycle.endTask (VQ-Prompt's recalibration) needs them.
                do
                    use _ = torch.no_grad ()
                    model.eval ()
                    for batch in batches.Eval task.Train do
                        use _ = Runtime.noCollection (Runtime.stepBudget batch.Count batch.Size 4)
                        use scope = torch.NewDisposeScope()
                        let x = Batches.pixels device batch
                        let output = model.Forward(x, false)
                        stats.Add(output.Features, torch.tensor batch.Labels)
                torch.manual_seed (seedFor config t 100_000) |> ignore
                Lifecycle.endTask model stats config.Training.BatchSize
                saveStatistics dir stats
            TrainableState.save (taskStateFile dir t) model
            let results = [ for j in 0 .. t -> Evaluate.evaluateTask model device scenario.Tasks[j] (batches.Eval scenario.Tasks[j].Test) ]
            let row (f: Evaluation -> float) = results |> List.map f
            let leftovers = progress.EpochState :: (progress.EpochOptimizers |> List.map Some) |> List.choose id
            progress <-
                { progress with
                    CompletedTasks = t + 1
                    EpochsDone = 0
                    EpochState = None
                    EpochOptimizers = []
                    Evaluations = progress.Evaluations @ [ results ]
                    TrainSeconds = progress.TrainSeconds + clock.Elapsed.TotalSeconds
                    PeakMemoryBytes = peakMemory progress }
            saveProgress ()
            for p in leftovers do try File.Delete(Path.Combine(dir, p)) with _ -> ()
            events.TaskDone progress
            log (sprintf "after task %d: accuracy %s" (t + 1) (String.Join(" ", row (fun r -> r.ClassIncremental) |> List.map (sprintf "%.1f"))))
        { Directory = dir; Progress = progress; TrainableParameters = trainable }
