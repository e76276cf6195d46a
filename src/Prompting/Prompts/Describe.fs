namespace Prompting.Prompts

/// One-line, human-readable descriptions of a method's head, adaptation and recipe.
module Describe =
    let private schedule (t: Training) =
        let unit = match t.ScheduleUnit with PerEpoch -> "per epoch" | PerIteration -> "per iteration"
        match t.Schedule with
        | Constant -> "constant"
        | Cosine final -> sprintf "cosine to %g x %s" final unit
        | WarmupCosine(warmup, final) -> sprintf "%d warm-up epochs, cosine to %g x %s" warmup final unit
        | QuarterCosine -> sprintf "quarter cosine (CODA) %s" unit
        | MultiStep(milestones, factor) -> sprintf "x%g at epochs %s" factor (milestones |> List.map string |> String.concat ", ")

    let recipe (t: Training) =
        let optimizer = match t.Optimizer with Adam -> "Adam" | AdamW -> "AdamW" | Sgd m -> sprintf "SGD(momentum %g)" m
        sprintf "%s lr %g%s%s, %s, %d epochs of %d%s%s%s" optimizer t.LearningRate (if t.ScaleByBatch then " x batch/256" else "")
            (match t.HeadLearningRate with Some h -> sprintf " (head %g)" h | None -> "")
            (schedule t) t.Epochs t.BatchSize
            (if t.WeightDecay > 0.0 then sprintf ", weight decay %g" t.WeightDecay else "")
            (match t.GradientClip with Some c -> sprintf ", clip %g" c | None -> "")
            (if t.DropLast then ", drop-last" else "")

    /// What the loss trains, and what predicts.
    let head (m: Method) =
        let trained =
            match m.Head with
            | LinearHead -> "linear"
            | MlpHead k -> sprintf "mlp-%d" k
            | PrototypeHead -> "prototype (no training)"
            | CosineHead -> "cosine with learnable scale"
        let predicts =
            match m.Calibration with
            | TrainedHead when m.Head = PrototypeHead -> "class means (cosine)"
            | TrainedHead -> "the trained head"
            | ClassMeans when m.HeadFeatures = PretrainedAndAdapted -> "class means (cosine) of pretrained + adapted features"
            | ClassMeans -> "class means (cosine)"
            | RandomProjectionRidge r -> sprintf "ridge on a random projection to %d" r.ProjectionSize
            | AlignedHead a ->
                let covariance = match a.Covariance with FullCovariance _ -> "full" | DiagonalCovariance _ -> "diagonal"
                let optimiser = match a.Optimiser with AlignmentSgd m -> sprintf "SGD(momentum %g)" m | AlignmentAdamW -> "AdamW"
                let schedule =
                    match a.RateSchedule with
                    | CosinePerEpoch -> "cosine to 0 per epoch"
                    | CosinePerStep final -> sprintf "cosine to %g per step" final
                    | CosinePerStepQuirk(first, final) -> sprintf "first step %g, then cosine to %g per step (the official code's)" first final
                sprintf "aligned (re-trained on sampled class statistics, %s covariance%s; %d per class, %d epochs%s, batch %d, %s lr %g, %s)"
                    covariance (match a.LogitNormalisation with Some tau -> sprintf ", logit norm %g" tau | None -> "")
                    a.SamplesPerClass a.Epochs (match a.EpochLength with EverySample -> "" | BatchPerEarlierClass -> " (one batch per earlier class each)")
                    a.BatchSize optimiser a.LearningRate schedule
        sprintf "head %s, predicts with %s" trained predicts

    /// What of the backbone trains, and its adapters.
    let backbone (m: Method) =
        let trains =
            match m.Backbone with
            | Frozen -> "frozen"
            | FullBackbone -> "fully trained"
            | LastBlocks k -> sprintf "last %d block%s trained" k (if k = 1 then "" else "s")
            | BiasTerms -> "bias terms trained"
        let modules =
            [ match m.AdapterReduction with Some r -> yield sprintf "adapters (reduction %d)" r | None -> ()
              match m.ParallelAdapter with Some a -> yield sprintf "parallel adapters (bottleneck %d)" a.Bottleneck | None -> ()
              if m.ScaleShift.IsSome then yield "SSF" ]
        String.concat ", " (trains :: modules)


    let adaptation (m: Method) =
        if m.Head = PrototypeHead && not (Method.trainsFeatures m) then "nothing trains"
        else
            match m.Adaptation with
            | EveryTask -> "adapts every task"
            | FirstTaskOnly -> "adapts on the first task only"

    let methodLine (m: Method) = sprintf "%-16s %s; %s; %s" m.Name (head m) (adaptation m) (recipe m.Recipe)
