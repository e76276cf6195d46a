namespace Prompting.Prompts

open System.Collections.Generic
open TorchSharp
open Prompting

/// Per-class running mean and diagonal variance of features (float64 accumulators on the CPU).
type ClassStatistics() =
    let sums = Dictionary<int, float[]>()
    let squares = Dictionary<int, float[]>()
    let counts = Dictionary<int, int>()

    /// Adds features (N, D) with integer labels (N).
    member _.Add(features: torch.Tensor, labels: torch.Tensor) =
        use f = features.detach().cpu().to_type (torch.float64)
        let values = f.data<double>().ToArray()
        let ids = labels.cpu().to_type(torch.int64).data<int64>().ToArray()
        let d = int f.shape[1]
        ids |> Array.iteri (fun i label ->
            let c = int label
            if not (sums.ContainsKey c) then
                sums[c] <- Array.zeroCreate d
                squares[c] <- Array.zeroCreate d
                counts[c] <- 0
            let s, q = sums[c], squares[c]
            for j in 0 .. d - 1 do
                let v = values[i * d + j]
                s[j] <- s[j] + v
                q[j] <- q[j] + v * v
            counts[c] <- counts[c] + 1)

    member _.Classes = counts.Keys |> Seq.sort |> List.ofSeq

    /// The raw accumulators (class, count, sums, squares), for persisting a run.
    member _.Export() =
        [ for c in counts.Keys |> Seq.sort -> c, counts[c], Array.copy sums[c], Array.copy squares[c] ]

    /// Restores accumulators written by Export.
    member _.Import(entries: (int * int * float[] * float[]) list) =
        for c, n, s, q in entries do
            counts[c] <- n
            sums[c] <- Array.copy s
            squares[c] <- Array.copy q
    member _.Count(c: int) = counts[c]
    member _.Mean(c: int) = sums[c] |> Array.map (fun s -> s / float counts[c])
    /// Population variance (the statistic the reference stores).
    member this.Variance(c: int) =
        let mean = this.Mean c
        Array.map2 (fun q m -> max 0.0 (q / float counts[c] - m * m)) squares[c] mean

/// Head-only recalibration from class statistics (VQ-Prompt) and prototype heads (SimpleCIL).
module Recalibration =
    /// SimpleCIL: the head's rows for the given classes become their mean features.
    let setPrototypes (model: PromptedModel) (stats: ClassStatistics) =
        let classes = stats.Classes |> Array.ofList
        if classes.Length > 0 then
            let means = classes |> Array.collect (fun c -> stats.Mean c |> Array.map float32)
            use m = torch.tensor(means, System.ReadOnlySpan<int64> [| int64 classes.Length; int64 model.Backbone.Config.Width |])
            model.Head.SetPrototypes(classes |> Array.map int64, m)

    /// Retrains only the head on features sampled from N(μ_c, diag σ²_c + floor·I) for every class
    /// seen so far: AdamW, cosine learning rate from `LearningRate` to `FinalLearningRate` per iteration.
    let retrainHead (config: HeadRecalibration) (batchSize: int) (model: PromptedModel) (stats: ClassStatistics) =
        let classes = stats.Classes |> Array.ofList
        if classes.Length > 0 then
            let d = int64 model.Backbone.Config.Width
            let device = model.Head.parameters() |> Seq.head |> fun p -> p.device
            let seen = TaskLayout.seen model.Layout model.Task
            let means = torch.tensor(classes |> Array.collect (fun c -> stats.Mean c |> Array.map float32), System.ReadOnlySpan<int64> [| int64 classes.Length; d |]).``to`` device
            let stds =
                torch.tensor(classes |> Array.collect (fun c -> stats.Variance c |> Array.map (fun v -> float32 (sqrt (v + config.VarianceFloor)))), System.ReadOnlySpan<int64> [| int64 classes.Length; d |]).``to`` device
            let perEpoch = classes.Length * config.SamplesPerClass
            let iterations = config.Epochs * ((perEpoch + batchSize - 1) / batchSize)
            let parameters = model.Head.parameters () |> Seq.filter (fun p -> p.requires_grad) |> Array.ofSeq
            use optimizer = torch.optim.AdamW(parameters, lr = config.LearningRate, weight_decay = config.WeightDecay)
            let labelsOfClass = torch.tensor(classes |> Array.map int64, device = device)
            let mutable step = 0
            for _ in 1 .. config.Epochs do
                use scope = torch.NewDisposeScope()
                let rows = torch.arange(int64 classes.Length, device = device).repeat_interleave (int64 config.SamplesPerClass)
                let order = torch.randperm (int64 perEpoch, device = device)
                let shuffled = rows.index_select (0L, order)
                let mutable start = 0L
                while start < int64 perEpoch do
                    use batchScope = torch.NewDisposeScope()
                    let n = min (int64 batchSize) (int64 perEpoch - start)
                    let which = shuffled.narrow (0, start, n)
                    let samples = means.index_select (0L, which) + stds.index_select (0L, which) * torch.randn (n, d, device = device)
                    let labels = labelsOfClass.index_select (0L, which)
                    let logits = (model.Head.forward samples).narrow (1, 0L, int64 seen)
                    let loss = torch.nn.functional.cross_entropy (logits, labels)
                    let progress = float step / float (max 1 (iterations - 1))
                    let lr = config.FinalLearningRate + 0.5 * (config.LearningRate - config.FinalLearningRate) * (1.0 + cos (System.Math.PI * progress))
                    for g in optimizer.ParamGroups do g.LearningRate <- lr
                    optimizer.zero_grad ()
                    loss.backward ()
                    optimizer.step () |> ignore
                    step <- step + 1
                    start <- start + n
            means.Dispose()
            stds.Dispose()
            labelsOfClass.Dispose()

/// The end-of-task hook every method shares: SimpleCIL's prototypes, VQ-Prompt's recalibration.
module Lifecycle =
    /// Call after training task `model.Task` with the statistics of every class seen so far
    /// (features as the model's pre-logits of the training data).
    let endTask (model: PromptedModel) (stats: ClassStatistics) (batchSize: int) =
        if model.Method.Head = PrototypeHead then Recalibration.setPrototypes model stats
        match model.Method.Recalibration with
        | Some config when model.Task >= 1 -> Recalibration.retrainHead config batchSize model stats
        | _ -> ()
