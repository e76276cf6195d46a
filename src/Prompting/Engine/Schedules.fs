namespace Prompting.Engine

open System
open TorchSharp
open Prompting.Prompts

/// Learning-rate schedules and optimisers from the pure Training record.
module Schedules =
    /// The base rate, scaled by batch / 256 when the recipe says so.
    let baseRate (t: Training) = Training.baseRate t

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
        | QuarterCosine ->
            if t.Epochs <= 1 then rate else rate * cos (99.0 * Math.PI * position / (200.0 * float (t.Epochs - 1)))
        | MultiStep(milestones, factor) ->
            rate * (factor ** float (milestones |> List.filter (fun m -> m <= epoch) |> List.length))

    let optimizer (t: Training) (parameters: Modules.Parameter seq) (rate: float) : torch.optim.Optimizer =
        let ps = Array.ofSeq parameters
        match t.Optimizer with
        | Adam -> torch.optim.Adam(ps, lr = rate, weight_decay = t.WeightDecay)
        | AdamW -> torch.optim.AdamW(ps, lr = rate, weight_decay = t.WeightDecay)
        | Sgd momentum -> torch.optim.SGD(ps, rate, momentum = momentum, weight_decay = t.WeightDecay)
