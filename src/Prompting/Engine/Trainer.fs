namespace Prompting.Engine

open System
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Prompts

/// One task's training: an optimiser per learning-rate group, one dispose scope per step, the
/// loss read back once per epoch (one host synchronisation per logging interval).
module Trainer =
    /// Trains `model` (already at its task) for epochs [firstEpoch, Epochs); `restore` may load
    /// saved optimiser state before the first step; `epochDone` gets the epoch, its mean loss and
    /// the optimisers after each one (the caller checkpoints there).
    let trainTask (model: PromptedModel) (t: Training) (device: torch.Device) (perEpoch: int)
                  (batches: int -> Batch seq) (firstEpoch: int)
                  (restore: torch.optim.Optimizer list -> unit)
                  (stepDone: unit -> unit)
                  (epochDone: int -> float -> torch.optim.Optimizer list -> unit) =
        let trainable = model.TrainableParameters()
        if trainable.IsEmpty then
            for epoch in firstEpoch .. t.Epochs - 1 do epochDone epoch nan []
        else
            let rate = Schedules.baseRate t
            let groups =
                match t.HeadLearningRate with
                | Some headRate ->
                    let head, rest = trainable |> List.partition (fun (n, _) -> n.StartsWith "head.")
                    [ rest, rate; head, (if t.ScaleByBatch then headRate * float t.BatchSize / 256.0 else headRate) ]
                    |> List.filter (fun (ps, _) -> not ps.IsEmpty)
                | None -> [ trainable, rate ]
            let optimizers = [ for ps, r in groups -> Schedules.optimizer t (ps |> List.map snd) r, r ]
            let parameters = trainable |> List.map snd
            restore (optimizers |> List.map fst)
            model.train ()
            try
                for epoch in firstEpoch .. t.Epochs - 1 do
                    use total = torch.zeros ([||], device = device)
                    let mutable steps = 0
                    let step (iteration: int) (batch: Batch) =
                        use _ = Runtime.noCollection (Runtime.stepBudget batch.Count batch.Size 4)
                        use scope = torch.NewDisposeScope()
                        for o, r in optimizers do
                            let lr = Schedules.rateAt t r epoch iteration perEpoch
                            for g in o.ParamGroups do g.LearningRate <- lr
                        let x = Batches.pixels device batch
                        let y = torch.tensor(batch.Labels).``to`` device
                        let output = model.Forward(x, true)
                        let loss = Loss.total model output y
                        for o, _ in optimizers do o.zero_grad ()
                        loss.backward ()
                        t.GradientClip |> Option.iter (Gradients.clipNorm parameters)
                        for o, _ in optimizers do o.step () |> ignore
                        // The epoch's loss accumulates on the device: no host read per step.
                        total.add_ (loss.detach ()) |> ignore
                    for iteration, batch in Seq.indexed (batches epoch) do
                        step iteration batch
                        steps <- steps + 1
                        stepDone ()
                    let mean = if steps = 0 then nan else HostReads.scalar total / float steps
                    epochDone epoch mean (optimizers |> List.map fst)
            finally
                for o, _ in optimizers do o.Dispose()
                model.eval ()
