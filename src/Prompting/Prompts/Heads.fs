namespace Prompting.Prompts

open TorchSharp
open Prompting

/// The classifier of a prompted model.
type ClassifierHead(kind: HeadKind, width: int, classes: int, vptInit: bool) as this =
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
        | PrototypeHead -> None
        | _ -> Some(torch.nn.Linear(d, c))
    do
        if classes <= 0 then Errors.fail "a classifier needs at least one class, got %d" classes
        hidden |> List.iteri (fun i layer -> this.register_module (sprintf "hidden%d" i, layer))
        match kind with
        | PrototypeHead ->
            // SimpleCIL: unit-norm class means; unseen classes stay zero (cosine 0).
            this.register_buffer ("prototypes", torch.zeros (c, d))
        | _ -> fc |> Option.iter (fun fc -> this.register_module ("fc", fc))
        match fc with
        | Some fc when vptInit ->
            use _ = torch.no_grad ()
            torch.nn.init.kaiming_normal_ (fc.weight, mode = torch.nn.init.FanInOut.FanOut) |> ignore
            fc.bias.fill_ ((-(log ((1.0 - 0.01) / 0.01))).ToScalar()) |> ignore
        | _ -> ()

    member _.Kind = kind

    /// Replaces the prototypes of `classIds` with the given mean features (SimpleCIL).
    member this.SetPrototypes(classIds: int64[], means: torch.Tensor) =
        use _ = torch.no_grad ()
        let protos = this.get_buffer "prototypes"
        use normalised = torch.nn.functional.normalize (means.``to`` protos.device, dim = 1L)
        use ids = torch.tensor(classIds, device = protos.device)
        protos.index_copy_ (0L, ids, normalised) |> ignore

    override this.forward(features) =
        match kind with
        | PrototypeHead ->
            use f = torch.nn.functional.normalize (features, dim = 1L)
            use pt = (this.get_buffer "prototypes").t ()
            torch.mm (f, pt)
        | _ ->
            let mutable x = features.alias ()
            for layer in hidden do
                use h = layer.forward x
                x.Dispose()
                x <- torch.nn.functional.relu h
            let out = fc.Value.forward x
            x.Dispose()
            out

/// VPT's Adapter baseline: after each block's MLP, x ↦ x + up(relu(down(x))); up starts at zero
/// so training begins from the pretrained function.
type Adapters(width: int, depth: int, reduction: int) as this =
    inherit torch.nn.Module("Adapters")
    let bottleneck = max 1 (width / reduction)
    let pairs =
        [ for i in 0 .. depth - 1 ->
              let down = torch.nn.Linear(int64 width, int64 bottleneck)
              let up = torch.nn.Linear(int64 bottleneck, int64 width)
              this.register_module (sprintf "block%d_down" i, down)
              this.register_module (sprintf "block%d_up" i, up)
              down, up ]
    do
        use _ = torch.no_grad ()
        for _, up in pairs do
            torch.nn.init.zeros_ up.weight |> ignore
            torch.nn.init.zeros_ up.bias |> ignore

    member _.At(layer: int) : torch.Tensor -> torch.Tensor =
        let down, up = pairs[layer]
        fun x ->
            use h = down.forward x
            use a = torch.nn.functional.relu h
            up.forward a
