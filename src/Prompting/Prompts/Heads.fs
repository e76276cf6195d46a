namespace Prompting.Prompts

open TorchSharp
open Prompting

/// The classifier of a prompted model. It owns its end-of-task lifecycle: a prototype head (SimpleCIL),
/// an aligned head (SLCA, VQ-Prompt) and a calibrated predictor (class means, RanPAC's ridge head)
/// learn from the features of every task seen, gathered in the engine's feature pass. The loss always
/// trains the head of `kind`; once a task has ended, a calibrated predictor is what predicts (in
/// evaluation mode). The features it is given are `calibrationWidth` wide: the adapted features
/// (width D), or the pretrained ones followed by the adapted ones (2·D, APER), of which the trained
/// head reads the last D.
type ClassifierHead(kind: HeadKind, width: int, calibrationWidth: int, classes: int, vptInit: bool, calibration: Calibration, ?truncatedNormal: float) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("ClassifierHead")
    let d, c = int64 width, int64 classes
    let hidden =
        match kind with
        | MlpHead k -> [ for _ in 1 .. k -> torch.nn.Linear(d, d) ]
        | _ -> []
    // No linear layer at all for prototypes: TorchSharp registers Module-valued fields on its own,
    // so an unused Linear here would still show up as head.fc.* parameters and trainable state.
    let fc =
        match kind with
        | PrototypeHead
        | CosineHead -> None
        | _ -> Some(torch.nn.Linear(d, c))
    /// Whether something other than the trained head predicts once a task has ended (an aligned
    /// head is the trained head, re-trained).
    let predictsApart = match calibration with TrainedHead | AlignedHead _ -> false | _ -> true
    /// SLCA's initialisation of (a draw of) the final layer: truncated normal (timm's trunc_normal_,
    /// cut at ±2 absolute), bias 0.
    let truncatedNormalInit (weight: torch.Tensor) (bias: torch.Tensor) (std: float) =
        use _ = torch.no_grad ()
        Prompting.Vit.Init.truncatedNormal weight std
        bias.zero_ () |> ignore
    do
        if classes <= 0 then Errors.fail "a classifier needs at least one class, got %d" classes
        if calibrationWidth < width then Errors.fail "a classifier of width %d cannot read %d features" width calibrationWidth
        hidden |> List.iteri (fun i layer -> this.register_module (sprintf "hidden%d" i, layer))
        match kind with
        | PrototypeHead ->
            // SimpleCIL: unit-norm class means; unseen classes stay zero (cosine 0).
            this.register_buffer ("prototypes", torch.zeros (c, d))
        | CosineHead ->
            let bound = 1.0 / sqrt (float width)
            this.register_parameter ("weight", torch.nn.Parameter(torch.empty(c, d).uniform_ (-bound, bound)))
            this.register_parameter ("sigma", torch.nn.Parameter(torch.ones 1L))
        | _ -> fc |> Option.iter (fun fc -> this.register_module ("fc", fc))
        match fc with
        | Some fc when vptInit ->
            use _ = torch.no_grad ()
            torch.nn.init.kaiming_normal_ (fc.weight, mode = torch.nn.init.FanInOut.FanOut) |> ignore
            fc.bias.fill_ ((-(log ((1.0 - 0.01) / 0.01))).ToScalar()) |> ignore
        | Some fc -> truncatedNormal |> Option.iter (truncatedNormalInit fc.weight fc.bias)
        | None -> ()
        match calibration with
        | TrainedHead -> ()
        | ClassMeans -> this.register_buffer ("class_means", torch.zeros (c, int64 calibrationWidth))
        | RandomProjectionRidge _
        | AlignedHead _ -> ()
        if predictsApart then this.register_buffer ("calibrated", torch.zeros 1L)

    let ridge =
        match calibration with
        | RandomProjectionRidge settings ->
            let r = new RidgeReadout(settings, calibrationWidth, classes)
            this.register_module ("ridge", r)
            Some r
        | _ -> None
    let statistics = ClassStatistics()
    /// The rows of classes `first` onwards of the final layer drawn afresh, as the head was
    /// initialised (SLCA's new head for each task).
    let redrawRows (first: int) =
        match fc with
        | Some fc when first < classes ->
            use _ = torch.no_grad ()
            use weight = torch.empty_like fc.weight
            use bias = torch.empty_like fc.bias
            match truncatedNormal with
            | Some std -> truncatedNormalInit weight bias std
            | None ->
                // The linear layer's own initialisation: U(±1/√fan_in) for weight and bias.
                let bound = 1.0 / sqrt (float width)
                weight.uniform_ (-bound, bound) |> ignore
                bias.uniform_ (-bound, bound) |> ignore
            let n = int64 (classes - first)
            (fc.weight.narrow (0, int64 first, n)).copy_ (weight.narrow (0, int64 first, n)) |> ignore
            (fc.bias.narrow (0, int64 first, n)).copy_ (bias.narrow (0, int64 first, n)) |> ignore
        | None when kind = CosineHead && first < classes ->
            // The cosine head's own initialisation: U(±1/√D).
            use _ = torch.no_grad ()
            let bound = 1.0 / sqrt (float width)
            ((this.get_parameter "weight").narrow (0, int64 first, int64 (classes - first))).uniform_ (-bound, bound) |> ignore
        | _ -> ()
    let alignment =
        // The rows that are classes: the final layer's (linear, MLP) or the cosine head's weight
        // (its scale σ is re-trained with them).
        let classRows = match fc with Some _ -> Some [ "fc.weight"; "fc.bias" ] | None when kind = CosineHead -> Some [ "weight" ] | None -> None
        match calibration, classRows with
        | AlignedHead config, Some rows ->
            // By name, when needed: moving the head to a device replaces its parameters.
            Some(HeadAlignment(config, (fun () -> [ for struct (name, p) in this.named_parameters () -> name, p ]), rows, redrawRows))
        | _ -> None
    let needsStatistics = kind = PrototypeHead || calibration = ClassMeans
    let atTaskEnd = if needsStatistics || ridge.IsSome || alignment.IsSome then FeaturePass else NothingAtTaskEnd
    let mutable fitted = false

    member _.Kind = kind

    /// Per-class feature statistics of every task so far (empty unless the head needs them).
    member _.Statistics = statistics

    member _.Calibration = calibration

    /// The ridge head's state, when the head is calibrated by one.
    member _.Ridge = ridge

    /// The aligned head's statistics and snapshot, when the head is aligned (SLCA).
    member _.Alignment = alignment

    /// Whether a calibrated predictor has been fitted (at the end of a task) and predicts; mirrors
    /// the `calibrated` buffer so that a forward pass reads nothing back from the device.
    member _.Calibrated = fitted

    /// Reads the `calibrated` buffer again, after state was loaded into it.
    member this.SyncCalibrated() =
        fitted <- predictsApart && (this.get_buffer "calibrated").cpu().item<float32> () > 0.0f

    interface ITaskPart with
        member _.BeginTask _ = alignment |> Option.iter (fun a -> a.BeginTask())
        member _.AtTaskEnd = atTaskEnd
        member _.ObserveFeatures(features, labels) =
            if needsStatistics then statistics.Add(features, labels)
            alignment |> Option.iter (fun a -> a.Observe(features, labels))
            ridge |> Option.iter (fun r -> r.Observe(features, labels))
        member this.EndTask(ending) =
            if kind = PrototypeHead then this.SetPrototypesFrom "prototypes" statistics
            let report =
                match calibration, ridge, alignment with
                | ClassMeans, _, _ -> this.SetPrototypesFrom "class_means" statistics; []
                | RandomProjectionRidge _, Some r, _ ->
                    r.Fit()
                    // The candidates are powers of ten (RidgeExponents).
                    [ sprintf "ridge head: regulariser 10^%d" (int (round (log10 r.Regulariser))) ]
                | AlignedHead _, _, Some a -> a.EndTask(ending, this.forward)
                | _ -> []
            if predictsApart then
                use _ = torch.no_grad ()
                (this.get_buffer "calibrated").fill_ (1.0.ToScalar()) |> ignore
                fitted <- true
            report
        member _.LifecycleState() =
            (if needsStatistics then statistics.ToExact() else [])
            @ (match ridge with Some r -> [ for k, t in r.State() -> "ridge." + k, t ] | None -> [])
            @ (match alignment with Some a -> [ for k, t in a.State() -> "alignment." + k, t ] | None -> [])
        member _.RestoreLifecycleState state =
            let unprefixed = [ for k, t in state do if not (k.StartsWith "ridge." || k.StartsWith "alignment.") then yield k, t ]
            if needsStatistics then statistics.LoadExact unprefixed
            let aligned = [ for k, t in state do if k.StartsWith "alignment." then yield k.Substring 10, t ]
            // Runs from before VQ-Prompt's recalibration was an aligned head kept its diagonal
            // statistics unprefixed, with the sums of squares as `squares`.
            let aligned =
                if aligned.IsEmpty && not needsStatistics then
                    [ for k, t in unprefixed -> (if k = "squares" then "second" else k), t ]
                else aligned
            alignment |> Option.iter (fun a -> a.Restore aligned)
            ridge |> Option.iter (fun r -> r.Restore [ for k, t in state do if k.StartsWith "ridge." then yield k.Substring 6, t ])

    /// SimpleCIL: the rows of every class in `stats` become its unit mean feature, in `buffer`.
    member this.SetPrototypesFrom (buffer: string) (stats: ClassStatistics) =
        let ids = stats.Classes |> Array.ofList
        if ids.Length > 0 then
            let means = ids |> Array.collect (fun c -> stats.Mean c |> Array.map float32)
            use m = torch.tensor (means, System.ReadOnlySpan<int64> [| int64 ids.Length; int64 (means.Length / ids.Length) |])
            this.SetRows(buffer, ids |> Array.map int64, m)

    /// Replaces the prototypes of `classIds` with the given mean features (SimpleCIL).
    member this.SetPrototypes(classIds: int64[], means: torch.Tensor) = this.SetRows("prototypes", classIds, means)

    /// Replaces rows `classIds` of a class-mean buffer with the given features, L2-normalised.
    member this.SetRows(buffer: string, classIds: int64[], means: torch.Tensor) =
        use _ = torch.no_grad ()
        let protos = this.get_buffer buffer
        use normalised = torch.nn.functional.normalize (means.``to`` protos.device, dim = 1L)
        use ids = torch.tensor(classIds, device = protos.device)
        protos.index_copy_ (0L, ids, normalised) |> ignore

    override this.forward(features) =
        let cosineTo (buffer: string) =
            use f = torch.nn.functional.normalize (features, dim = 1L)
            use pt = (this.get_buffer buffer).t ()
            torch.mm (f, pt)
        // The trained head reads the adapted features: the last D columns (a training pass gives
        // only those).
        let adapted () =
            if features.shape[1] = d then features.alias () else features.narrow (1, features.shape[1] - d, d)
        match kind with
        | _ when not this.training && this.Calibrated ->
            match calibration, ridge with
            | RandomProjectionRidge _, Some r -> r.Logits features
            | _ -> cosineTo "class_means"
        | PrototypeHead -> cosineTo "prototypes"
        | CosineHead ->
            use x = adapted ()
            use f = torch.nn.functional.normalize (x, dim = 1L)
            use w = torch.nn.functional.normalize (this.get_parameter "weight", dim = 1L)
            use cosine = torch.mm (f, w.t ())
            cosine * this.get_parameter "sigma"
        | _ ->
            let mutable x = adapted ()
            for layer in hidden do
                use h = layer.forward x
                x.Dispose()
                x <- torch.nn.functional.relu h
            let out = fc.Value.forward x
            x.Dispose()
            out
