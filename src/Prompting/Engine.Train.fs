namespace Prompting.Engine

open System
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Prompts

/// Host batches to device tensors.
module Batches =
    /// The batch's pixels on `device`: through pinned memory and a non-blocking copy on CUDA.
    let pixels (device: torch.Device) (batch: Batch) =
        let host = torch.tensor (batch.Pixels, ReadOnlySpan<int64> batch.Shape)
        if device.``type`` = DeviceType.CUDA then
            use pinned = host.pin_memory ()
            host.Dispose()
            pinned.``to`` (device, non_blocking = true)
        else host

/// Learning-rate schedules and optimisers from the pure Training record.
module Schedules =
    /// The base rate, scaled by batch / 256 when the recipe says so.
    let baseRate (t: Training) =
        if t.ScaleByBatch then t.LearningRate * float t.BatchSize / 256.0 else t.LearningRate

    /// The rate at (epoch, iteration within it) for a task of `perEpoch` iterations.
    let rateAt (t: Training) (rate: float) (epoch: int) (iteration: int) (perEpoch: int) =
        let perEpoch = max 1 perEpoch
        let position =
            match t.ScheduleUnit with
            | PerEpoch -> float epoch
            | PerIteration -> float epoch + float iteration / float perEpoch
        let cosine final start =
            let span = float t.Epochs - start
            let progress = if span <= 0.0 then 1.0 else min 1.0 ((position - start) / span)
            final * rate + (rate - final * rate) * 0.5 * (1.0 + cos (Math.PI * progress))
        match t.Schedule with
        | Constant -> rate
        | Cosine final -> cosine final 0.0
        | WarmupCosine(warmup, final) ->
            if float epoch < float warmup then
                rate * (float (epoch * perEpoch + iteration + 1) / float (warmup * perEpoch))
            else cosine final (float warmup)

    let optimizer (t: Training) (parameters: Modules.Parameter seq) (rate: float) : torch.optim.Optimizer =
        let ps = Array.ofSeq parameters
        match t.Optimizer with
        | Adam -> torch.optim.Adam(ps, lr = rate, weight_decay = t.WeightDecay)
        | AdamW -> torch.optim.AdamW(ps, lr = rate, weight_decay = t.WeightDecay)
        | Sgd momentum -> torch.optim.SGD(ps, rate, momentum = momentum, weight_decay = t.WeightDecay)

/// Every read of a device value back to the host in the training loop goes through here (one per
/// logging interval), so that tests can count them: a step itself never synchronises.
module HostReads =
    let private reads = ref 0L

    /// Host reads so far, over all threads.
    let count () = Threading.Interlocked.Read &reads.contents

    /// The value of a one-element tensor on the host (waits for the device on accelerators).
    let scalar (t: torch.Tensor) =
        Threading.Interlocked.Increment &reads.contents |> ignore
        use host = t.cpu ()
        float (host.item<float32> ())

/// Gradient clipping that stays on the device.
module Gradients =
    /// Scales the gradients so that their joint L2 norm is at most `maxNorm`, as PyTorch's
    /// clip_grad_norm_ does (coefficient maxNorm / (norm + 1e-6), clamped to 1) but without reading
    /// the norm back: TorchSharp's clip_grad_norm_ returns it as a double, a host read every step.
    let clipNorm (parameters: Modules.Parameter list) (maxNorm: float) =
        use _ = torch.no_grad ()
        let grads = [| for p in parameters do match p.grad with null -> () | g -> yield g |]
        if grads.Length > 0 then
            let norms = grads |> Array.map (fun g -> g.norm ())
            use stacked = torch.stack norms
            use total = stacked.norm ()
            use denominator = total + 1e-6
            use limit = torch.full_like (denominator, maxNorm.ToScalar())
            use coefficient = limit / denominator
            use clamped = coefficient.clamp_max (1.0.ToScalar())
            for g in grads do g.mul_ clamped |> ignore
            for n in norms do n.Dispose()
        for g in grads do g.Dispose()

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

module Evaluate =
    /// Whether the method's choices can be scored against tasks (one pool entry per task).
    let private taskKeyed (m: Method) =
        m.Groups |> List.exists (fun g -> match g.Source with Keyed k -> k.TrainWithTaskId | _ -> false)

    let evaluateTask (model: PromptedModel) (device: torch.Device) (task: TaskData) (batches: Batch seq) =
        let seen = int64 (TaskLayout.seen model.Layout model.Task)
        let first, count = int64 task.Classes[0], int64 task.Classes.Length
        let mutable total = 0L
        // Correct counts accumulate on the device and are read once: no host sync per batch.
        use counts = torch.zeros ([| 3L |], dtype = torch.int64, device = device)
        use taskIndex = (int64 task.Index).ToScalar()
        model.eval ()
        use _ = torch.no_grad ()
        for batch in batches do
            use _ = Runtime.noCollection (Runtime.stepBudget batch.Count batch.Size 4)
            use scope = torch.NewDisposeScope()
            let x = Batches.pixels device batch
            let y = torch.tensor(batch.Labels).``to`` device
            let output = model.Forward(x, false)
            let predictedSeen = (output.Logits.narrow (1, 0L, seen)).argmax 1L
            let predictedTask = (output.Logits.narrow (1, first, count)).argmax(1L) + first
            counts.select(0, 0L).add_ (predictedSeen.eq(y).sum ()) |> ignore
            counts.select(0, 1L).add_ (predictedTask.eq(y).sum ()) |> ignore
            match output.Chosen with
            | Some c when taskKeyed model.Method -> counts.select(0, 2L).add_ ((c.select (1, 0L)).eq(taskIndex).sum ()) |> ignore
            | _ -> ()
            total <- total + int64 batch.Count
        let host = counts.cpu().data<int64>().ToArray()
        let classIl, taskIl, choice = host[0], host[1], host[2]
        let pct (k: int64) = if total = 0L then nan else 100.0 * float k / float total
        ({ ClassIncremental = pct classIl
           TaskIncremental = pct taskIl
           PromptChoice = if taskKeyed model.Method then Some(pct choice) else None }: Evaluation)
