namespace Prompting.Engine

open System
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Prompts

/// Training diverged: the loss of `step` (0-based) of `epoch` was not finite, or (step = None) the
/// trainable parameters were not finite at the end of the epoch. Nothing of the epoch was saved.
exception Diverged of epoch: int * step: int option * what: string

/// Trainable parameters (by state name) whose gradient was null or zero at each of a task's first
/// steps: the loss does not depend on them, so the method cannot learn them.
exception NoGradient of names: string list

/// One task's training: an optimiser per learning-rate group, one dispose scope per step, the
/// loss read back once per epoch (one host synchronisation per logging interval).
module Trainer =
    /// An epoch's mean loss beyond this is divergence even while it is still finite.
    let explodedLoss = 1e12

    /// Trains `model` (already at its task) for epochs [firstEpoch, Epochs); `restore` may load
    /// saved optimiser state before the first step; `stepDone` gets the epoch, the step within it
    /// (both 0-based) and the batch's image count after each step; `epochDone` gets the epoch, its
    /// mean loss and the optimisers after each one (the caller checkpoints there).
    let trainTask (model: PromptedModel) (t: Training) (device: torch.Device) (perEpoch: int)
                  (batches: int -> Batch seq) (firstEpoch: int)
                  (restore: torch.optim.Optimizer list -> unit)
                  (stepDone: int -> int -> int -> unit)
                  (epochDone: int -> float -> torch.optim.Optimizer list -> unit) =
        // A method that adapts on the first task only takes no step afterwards (APER, RanPAC).
        let trainable = if model.LearnsThisTask then model.TrainableParameters() else []
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
                    // The first step whose loss is not finite (−1: none), tracked on the device.
                    use firstBad = torch.full ([||], -1L, dtype = torch.int64, device = device)
                    // In a task's first steps: which parameters some step gave a non-zero gradient. Three
                    // steps, because a zero-initialised layer (an adapter's up projection) leaves the
                    // layer before it without gradient on the first step only.
                    let checkGradients = epoch = 0
                    let checkedSteps = 3
                    use reached = torch.zeros ([| int64 parameters.Length |], dtype = torch.float64, device = device)
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
                        if checkGradients && iteration < checkedSteps then
                            let nonZero = [| for p in parameters -> match p.grad with null -> torch.zeros ([||], dtype = torch.float64, device = device) | g -> g.ne(0.0.ToScalar()).any().to_type torch.float64 |]
                            reached.copy_ (torch.maximum (reached, torch.stack nonZero)) |> ignore
                        t.GradientClip |> Option.iter (Gradients.clipNorm parameters)
                        for o, _ in optimizers do o.step () |> ignore
                        // The epoch's loss accumulates on the device: no host read per step.
                        let detached = loss.detach ()
                        total.add_ detached |> ignore
                        let bad = detached.isfinite().logical_not().logical_and (firstBad.lt (0L.ToScalar()))
                        firstBad.masked_fill_ (bad, (int64 iteration).ToScalar()) |> ignore
                    for iteration, batch in Seq.indexed (batches epoch) do
                        step iteration batch
                        steps <- steps + 1
                        stepDone epoch iteration batch.Count
                    // One host read per epoch: the loss sum, the first non-finite step and whether every
                    // trainable parameter is finite, checked before the epoch is saved so that the last
                    // good state stays the resume point.
                    let loss, bad, finiteParameters =
                        use _ = torch.no_grad ()
                        use scope = torch.NewDisposeScope()
                        let finite = torch.stack([| for p in parameters -> p.isfinite().all () |]).all ()
                        let summary = torch.stack [| total.to_type torch.float64; firstBad.to_type torch.float64; finite.to_type torch.float64 |]
                        let read = HostReads.values (torch.cat ([| summary; reached |], 0L))
                        if checkGradients && min steps checkedSteps >= 2 then
                            let missing = [ for (name, _), r in List.zip trainable (List.ofArray read[3..]) do if r = 0.0 then yield name ]
                            if not missing.IsEmpty then raise (NoGradient missing)
                        read[0], int read[1], read[2] = 1.0
                    let mean = if steps = 0 then nan else loss / float steps
                    if steps > 0 then
                        if bad >= 0 then raise (Diverged(epoch, Some bad, sprintf "the loss is not finite (epoch mean %g)" mean))
                        if not (Double.IsFinite mean) then raise (Diverged(epoch, None, sprintf "the epoch's loss is not finite (%g)" mean))
                        // No working model's cross-entropy comes near this: its gradients carry no information.
                        if abs mean > explodedLoss then raise (Diverged(epoch, None, sprintf "the loss exploded (epoch mean %g)" mean))
                        if not finiteParameters then raise (Diverged(epoch, None, "the trainable parameters are not finite"))
                    epochDone epoch mean (optimizers |> List.map fst)
            finally
                for o, _ in optimizers do o.Dispose()
                model.eval ()
