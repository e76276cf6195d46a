namespace Prompting.Prompts

open System.Collections.Generic
open TorchSharp
open Prompting
open Prompting.Tensors

/// Class-wise Gaussian statistics of features: per class the count, the sum and the sum of outer
/// products (full) or of squares (diagonal), float64 on the CPU, so that saved state is exact.
type ClassGaussians(full: bool) =
    let counts = Dictionary<int, int>()
    let sums = Dictionary<int, torch.Tensor>()
    let seconds = Dictionary<int, torch.Tensor>()

    member _.Full = full

    member _.Classes = counts.Keys |> Seq.sort |> List.ofSeq

    member _.Count(c: int) = counts[c]

    /// Adds features (N, D) with integer labels (N).
    member _.Add(features: torch.Tensor, labels: torch.Tensor) =
        use _ = torch.no_grad ()
        use f = features.detach().cpu().to_type torch.float64
        use ids = labels.cpu().to_type torch.int64
        let d = f.shape[1]
        for label in ids.data<int64>().ToArray() |> Array.distinct do
            use scope = torch.NewDisposeScope()
            let rows = f.index_select (0L, (ids.eq (label.ToScalar())).nonzero().squeeze (1L))
            let c = int label
            if not (counts.ContainsKey c) then
                counts[c] <- 0
                // Kept across tasks: out of every dispose scope (the feature pass runs one per batch).
                sums[c] <- torch.zeros(d, dtype = torch.float64).DetachFromDisposeScope()
                seconds[c] <- (if full then torch.zeros (d, d, dtype = torch.float64) else torch.zeros (d, dtype = torch.float64)).DetachFromDisposeScope()
            counts[c] <- counts[c] + int rows.shape[0]
            sums[c].add_ (rows.sum (0L)) |> ignore
            seconds[c].add_ (if full then torch.mm (rows.t (), rows) else (rows * rows).sum (0L)) |> ignore

    /// μ_c (D), float64.
    member _.Mean(c: int) = sums[c] / float counts[c]

    /// Σ_c: full, (S − n μμᵀ)/(n − 1) + ridge·I (torch.cov's unbiased estimate; n − 1 taken as 1
    /// for a single sample); diagonal, S/n − μ² + floor (the population variance VQ-Prompt keeps).
    member this.Covariance(c: int, regulariser: float) =
        use _ = torch.no_grad ()
        let n = float counts[c]
        use mean = this.Mean c
        if full then
            use outer = torch.outer (mean, mean)
            use centred = seconds[c] - outer * n
            use eye = torch.eye (mean.shape[0], dtype = torch.float64)
            centred / max 1.0 (n - 1.0) + eye * regulariser
        else
            use squares = seconds[c] / n
            use meanSquares = mean * mean
            use variance = (squares - meanSquares).clamp_min (0.0.ToScalar())
            variance + regulariser

    member _.Clear() =
        for t in sums.Values do t.Dispose()
        for t in seconds.Values do t.Dispose()
        counts.Clear()
        sums.Clear()
        seconds.Clear()

    /// classes and counts (C), sums (C, D), second (C, D, D) or (C, D).
    member this.ToExact() : (string * ExactTensor) list =
        let classes = this.Classes
        if classes.IsEmpty then []
        else
            let stack (table: Dictionary<int, torch.Tensor>) =
                use s = torch.stack ([| for c in classes -> table[c] |], 0L)
                { Shape = s.shape; Values = s.data<double>().ToArray() }
            [ "classes", { Shape = [| int64 classes.Length |]; Values = [| for c in classes -> float c |] }
              "counts", { Shape = [| int64 classes.Length |]; Values = [| for c in classes -> float counts[c] |] }
              "sums", stack sums
              "second", stack seconds ]

    member this.LoadExact(state: (string * ExactTensor) list) =
        this.Clear()
        let table = Map.ofList state
        match table.TryFind "classes", table.TryFind "counts", table.TryFind "sums", table.TryFind "second" with
        | None, None, None, None -> ()
        | Some classes, Some n, Some s, Some q when
            classes.Shape.Length = 1 && n.Shape = classes.Shape && s.Shape.Length = 2 && s.Shape[0] = classes.Shape[0]
            && q.Shape = (if full then [| s.Shape[0]; s.Shape[1]; s.Shape[1] |] else s.Shape) ->
            let d = s.Shape[1]
            let per = if full then d * d else d
            for i in 0 .. classes.Values.Length - 1 do
                let c = int classes.Values[i]
                counts[c] <- int n.Values[i]
                sums[c] <- torch.tensor(Array.sub s.Values (int (int64 i * d)) (int d), dtype = torch.float64).DetachFromDisposeScope()
                let second = torch.tensor(Array.sub q.Values (int (int64 i * per)) (int per), System.ReadOnlySpan<int64>(if full then [| d; d |] else [| d |]), dtype = torch.float64)
                seconds[c] <- second.DetachFromDisposeScope()
        | _ -> Errors.fail "aligned head: saved statistics need classes, counts, sums and %s second moments of matching sizes" (if full then "(C, D, D)" else "(C, D)")

/// One optimiser step of an alignment: its loss and the rate it stepped at.
type AlignmentStep = { Loss: float; Rate: float }

/// SLCA's classifier alignment, as functions of tensors (the head's lifecycle is in HeadAlignment).
module Alignment =
    /// The scale of the mean of a class of task `classTask` when task `task` is aligned (SLCA's code).
    let shrink (classTask: int) (task: int) = 0.9 + 0.1 * float (classTask + 1) / float (task + 1)

    /// Each task's block of classes [start, stop), from the classes seen after each task so far
    /// (tasks that added no class, as in domain-incremental sequences, have no block).
    let blocks (seenAfter: int list) =
        seenAfter
        |> List.fold (fun (start, acc) stop -> stop, (if stop > start then (start, stop) :: acc else acc)) (0, [])
        |> snd
        |> List.rev

    /// The task whose block holds class `c` (the last task when none does).
    let taskOf (seenAfter: int list) (c: int) =
        match seenAfter |> List.tryFindIndex (fun stop -> c < stop) with
        | Some k -> k
        | None -> seenAfter.Length - 1

    /// z / (n·τ), n = the mean over `blocks` of ‖z_block‖₂ + 1e-7 (per sample), as SLCA's code.
    let normaliseLogits (tau: float) (blocks: (int * int) list) (logits: torch.Tensor) =
        use norms = torch.cat ([| for a, b in blocks -> (logits.narrow (1, int64 a, int64 (b - a))).norm (1, true) + 1e-7 |], 1L)
        use mean = norms.mean ([| 1L |], true)
        use scaled = logits / mean
        scaled / tau

    /// The alignment loss on the logits of the seen classes (B, C): cross-entropy, of the
    /// normalised logits when the alignment asks for it.
    let loss (config: ClassAlignment) (blocks: (int * int) list) (logits: torch.Tensor) (labels: torch.Tensor) =
        match config.LogitNormalisation with
        | Some tau ->
            use normalised = normaliseLogits tau blocks logits
            torch.nn.functional.cross_entropy (normalised, labels)
        | None -> torch.nn.functional.cross_entropy (logits, labels)

    /// One epoch's samples as SLCA draws them: for each class in `classes` order, SamplesPerClass
    /// draws from N(scale_c·μ_c, Σ_c) in float32 (μ scaled in float64, then cast; Σ through its
    /// float32 Cholesky factor, or the square root of the diagonal), then one shuffle (a CPU
    /// permutation). Returns samples (N, D) and labels (N) on `device`.
    let sample (config: ClassAlignment) (stats: ClassGaussians) (classes: (int * float) list) (device: torch.Device) =
        use _ = torch.no_grad ()
        let regulariser = match config.Covariance with FullCovariance r -> r | DiagonalCovariance f -> f
        let n = int64 config.SamplesPerClass
        use scope = torch.NewDisposeScope()
        let drawn =
            [| for c, scale in classes ->
                   let mean = (stats.Mean c * scale).to_type(torch.float32).``to`` device
                   let covariance = stats.Covariance(c, regulariser).to_type(torch.float32).``to`` device
                   let d = mean.shape[0]
                   let eps = torch.randn (n, d, device = device)
                   if stats.Full then mean + torch.mm (eps, (torch.linalg.cholesky covariance).t ())
                   else mean + eps * covariance.sqrt () |]
        let samples = torch.cat (drawn, 0L)
        let labels = torch.tensor([| for c, _ in classes do for _ in 1L .. n -> int64 c |]).``to`` device
        let order = (torch.randperm samples.shape[0]).``to`` device
        (samples.index_select (0L, order)).MoveToOuterDisposeScope(), (labels.index_select (0L, order)).MoveToOuterDisposeScope()

    /// The batches an epoch of `samples` samples runs, with `earlierClasses` classes seen before
    /// the task being aligned.
    let batchesPerEpoch (config: ClassAlignment) (samples: int64) (earlierClasses: int) =
        let all = (samples + int64 config.BatchSize - 1L) / int64 config.BatchSize
        match config.EpochLength with
        | EverySample -> all
        | BatchPerEarlierClass -> min all (int64 earlierClasses)

    /// The rate of step `step` (0-based) of `steps`, in epoch `epoch`.
    let rate (config: ClassAlignment) (epoch: int) (step: int64) (steps: int64) =
        let cosine final k = final + 0.5 * (config.LearningRate - final) * (1.0 + cos (System.Math.PI * float k / float steps))
        match config.RateSchedule with
        | CosinePerEpoch -> config.LearningRate * 0.5 * (1.0 + cos (System.Math.PI * float epoch / float config.Epochs))
        | CosinePerStep final -> cosine final step
        | CosinePerStepQuirk(first, _) when step = 0L -> first
        | CosinePerStepQuirk(_, final) -> cosine final (step - 1L)

    /// Re-trains the head's `parameters` on the samples `epochSamples e` gives for each epoch e
    /// (`samplesPerEpoch` each): the alignment's optimiser and rate schedule, batches of BatchSize
    /// in the samples' order (as many as its EpochLength says), the loss on the first `seen`
    /// logits. Returns each step's loss and rate.
    let train (config: ClassAlignment) (forward: torch.Tensor -> torch.Tensor) (parameters: Modules.Parameter list)
              (seen: int) (earlierClasses: int) (blocks: (int * int) list) (samplesPerEpoch: int64) (epochSamples: int -> torch.Tensor * torch.Tensor) =
        use optimizer =
            match config.Optimiser with
            | AlignmentSgd momentum -> torch.optim.SGD(parameters, config.LearningRate, momentum = momentum, weight_decay = config.WeightDecay) :> torch.optim.Optimizer
            | AlignmentAdamW -> torch.optim.AdamW(parameters, config.LearningRate, weight_decay = config.WeightDecay)
        let perEpoch = batchesPerEpoch config samplesPerEpoch earlierClasses
        let steps = perEpoch * int64 config.Epochs
        let taken = ResizeArray<AlignmentStep>()
        for epoch in 0 .. config.Epochs - 1 do
            let samples, labels = epochSamples epoch
            use _ = samples
            use _ = labels
            if samples.shape[0] <> samplesPerEpoch then
                Errors.fail "aligned head: an epoch drew %d samples, expected %d" samples.shape[0] samplesPerEpoch
            for batch in 0L .. perEpoch - 1L do
                use _ = Runtime.noCollection (16L <<< 20)
                use step = torch.NewDisposeScope()
                let r = rate config epoch (int64 epoch * perEpoch + batch) steps
                for g in optimizer.ParamGroups do g.LearningRate <- r
                let start = batch * int64 config.BatchSize
                let count = min (int64 config.BatchSize) (samplesPerEpoch - start)
                let logits = (forward (samples.narrow (0, start, count))).narrow (1, 0L, int64 seen)
                let l = loss config blocks logits (labels.narrow (0, start, count))
                optimizer.zero_grad ()
                l.backward ()
                optimizer.step () |> ignore
                taken.Add { Loss = float (l.item<float32> ()); Rate = r }
        List.ofSeq taken

    /// One line for the run's log: how many steps, the rates and the loss at both ends.
    let describe (steps: AlignmentStep list) =
        match steps with
        | [] -> "head alignment: no step"
        | first :: _ ->
            let last = List.last steps
            sprintf "head alignment: %d steps, rate %g → %g, loss %.4f → %.4f" steps.Length first.Rate last.Rate first.Loss last.Loss

/// An aligned head's lifecycle (SLCA, VQ-Prompt): class statistics gathered when each task ends, the
/// head's parameters as they were before the alignment (restored when the next task begins), and the
/// classes seen after each task (task blocks for the shrink and the logit normalisation).
/// `parameters` gives the head's parameters by name when called (moving a module to a device
/// replaces them); `classRows` names those whose rows are classes (the final layer's weight, bias).
type HeadAlignment(config: ClassAlignment, parameters: unit -> (string * Modules.Parameter) list,
                   classRows: string list, initialiseRows: int -> unit) =
    let stats = ClassGaussians(match config.Covariance with FullCovariance _ -> true | DiagonalCovariance _ -> false)
    let mutable seenAfter: int list = []
    let mutable snapshot: (string * torch.Tensor) list = []

    member _.Statistics = stats
    /// Classes seen after each task ended so far.
    member _.SeenAfter = seenAfter
    /// The head before the last alignment (empty before the first task ended).
    member _.Snapshot = snapshot

    member _.BeginTask() =
        if config.RestoreBeforeNextTask && not snapshot.IsEmpty then
            use _ = torch.no_grad ()
            let table = Map.ofList snapshot
            for name, p in parameters () do p.copy_ table[name] |> ignore
        if config.FreezeEarlierHeads then initialiseRows (match seenAfter with [] -> 0 | s -> List.last s)

    member _.Observe(features: torch.Tensor, labels: torch.Tensor) = stats.Add(features, labels)

    /// The task's training and feature pass are done: earlier heads put back (FreezeEarlierHeads),
    /// the head kept as it is, then aligned from the second task on.
    member this.EndTask(ending: TaskEnd, forward: torch.Tensor -> torch.Tensor) =
        let first = match seenAfter with [] -> 0 | s -> List.last s
        if config.FreezeEarlierHeads && first > 0 && not snapshot.IsEmpty then
            use _ = torch.no_grad ()
            let table = Map.ofList snapshot
            for name, p in parameters () do
                if List.contains name classRows then
                    (p.narrow (0, 0L, int64 first)).copy_ (table[name].narrow (0, 0L, int64 first)) |> ignore
        seenAfter <- seenAfter @ [ ending.SeenClasses ]
        for _, t in snapshot do t.Dispose()
        // Only a head that is put back (wholly or its earlier rows) needs its pre-alignment copy.
        snapshot <-
            if config.RestoreBeforeNextTask || config.FreezeEarlierHeads then
                [ for name, p in parameters () -> name, p.detach().clone().DetachFromDisposeScope() ]
            else []
        if ending.Task >= 1 && config.Epochs > 0 then
            let blocks = Alignment.blocks seenAfter
            let classes =
                [ for c in stats.Classes do
                      if c < ending.SeenClasses then
                          yield c, (if config.ShrinkOlderMeans then Alignment.shrink (Alignment.taskOf seenAfter c) ending.Task else 1.0) ]
            let trained = parameters () |> List.map snd
            let samples = int64 classes.Length * int64 config.SamplesPerClass
            Alignment.train config forward trained ending.SeenClasses first blocks samples (fun _ -> Alignment.sample config stats classes trained.Head.device)
            |> Alignment.describe
            |> List.singleton
        else []

    /// Statistics, the classes seen after each task, and the snapshot (float32 values, exact).
    member _.State() : (string * ExactTensor) list =
        stats.ToExact()
        @ (if seenAfter.IsEmpty then [] else [ "seen_after", { Shape = [| int64 seenAfter.Length |]; Values = [| for s in seenAfter -> float s |] } ])
        @ [ for name, t in snapshot -> "snapshot." + name, ExactState.ofTensor t ]

    member _.Restore(state: (string * ExactTensor) list) =
        stats.LoadExact [ for k, t in state do if not (k.StartsWith "snapshot.") && k <> "seen_after" then yield k, t ]
        let table = Map.ofList state
        seenAfter <- match table.TryFind "seen_after" with Some s -> [ for v in s.Values -> int v ] | None -> []
        for _, t in snapshot do t.Dispose()
        let current = parameters ()
        snapshot <-
            [ for name, p in current do
                  match table.TryFind("snapshot." + name) with
                  | Some t when t.Shape = p.shape ->
                      yield name, ExactState.toFloat32 p.device t
                  | Some t -> Errors.fail "aligned head: saved snapshot of %s has shape %A, the head's is %A" name t.Shape p.shape
                  | None -> () ]
        if not snapshot.IsEmpty && snapshot.Length <> current.Length then
            Errors.fail "aligned head: saved snapshot has %d of the head's %d parameters" snapshot.Length current.Length
