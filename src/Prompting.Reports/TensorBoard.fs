namespace Prompting

open System
open System.IO
open TorchSharp
open Prompting.Engine
open Prompting.Prompts

/// TensorBoard event files of a run (RUN/tensorboard/events.out.tfevents.*), written with
/// TorchSharp's SummaryWriter after every task from the run's own progress.json, so
/// `tensorboard --logdir` over a sweep shows every run's curves:
///   loss/train and lr per epoch (step: epochs trained so far, over all tasks);
///   accuracy/class_il_average, accuracy/task_il_average and accuracy/class_il_task_J after each
///   task (step: tasks trained so far).
/// Only what was not yet written goes into a new event file (RUN/tensorboard/written.json counts
/// it), so a resumed run continues its curves without repeating points.
module TensorBoard =
    let directory (runDir: string) = Path.Combine(runDir, "tensorboard")

    let private markerFile runDir = Path.Combine(directory runDir, "written.json")

    /// How many epoch and task points a run's event files already hold.
    type Written = { Epochs: int; Tasks: int }

    /// The learning rate at the start of each epoch of a task (the schedule's own values).
    let epochRates (training: Training) =
        let rate = Schedules.baseRate training
        [ for e in 0 .. training.Epochs - 1 -> Schedules.rateAt training rate e 0 1 ]

    /// Every scalar of a run so far: (tag, step, value), epoch scalars then task scalars, with
    /// the epoch and task counts they cover. Only completed tasks count.
    let scalars (training: Training) (progress: RunProgress) =
        let tasks = progress.CompletedTasks
        let rates = epochRates training
        let epochLosses = progress.EpochLosses |> List.truncate tasks
        let epochs =
            epochLosses
            |> List.collect (List.mapi (fun e loss -> e, loss))
            |> List.mapi (fun g (e, loss) ->
                let step = g + 1
                [ if not (Double.IsNaN loss) then yield "loss/train", step, loss
                  if e < rates.Length then yield "lr", step, rates[e] ])
        let taskPoints =
            progress.Evaluations
            |> List.truncate tasks
            |> List.mapi (fun i row ->
                let step = i + 1
                [ yield "accuracy/class_il_average", step, row |> List.averageBy _.ClassIncremental
                  yield "accuracy/task_il_average", step, row |> List.averageBy _.TaskIncremental
                  for j, e in List.indexed row -> sprintf "accuracy/class_il_task_%d" (j + 1), step, e.ClassIncremental ])
        epochs, taskPoints

    /// Writes the scalars not yet in the run's event files.
    let write (runDir: string) (training: Training) (progress: RunProgress) =
        let dir = directory runDir
        let written =
            try Json.deserialize<Written> (markerFile runDir) (File.ReadAllText(markerFile runDir))
            with _ -> { Epochs = 0; Tasks = 0 }
        let epochs, tasks = scalars training progress
        let newEpochs = epochs |> List.skip (min written.Epochs epochs.Length)
        let newTasks = tasks |> List.skip (min written.Tasks tasks.Length)
        if not (newEpochs.IsEmpty && newTasks.IsEmpty) then
            Directory.CreateDirectory dir |> ignore
            let writer = torch.utils.tensorboard.SummaryWriter(dir, "", false)
            for tag, step, value in List.concat (newEpochs @ newTasks) do
                writer.add_scalar (tag, float32 value, step, Nullable())
            let marker = Json.serialize { Epochs = epochs.Length; Tasks = tasks.Length }
            Files.writeAtomic (markerFile runDir) (fun tmp -> File.WriteAllText(tmp, marker))

    /// The event files of a finished or running run directory, from its config.json and progress.json.
    let writeRun (runDir: string) =
        write runDir (Run.readRecorded runDir).Config.Method.Recipe (Run.readProgress runDir)
