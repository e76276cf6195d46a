namespace Prompting.Prompts

open TorchSharp
open Prompting.Vit

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

    /// Block `layer`'s adapter: it reads the MLP's output.
    member _.At(layer: int) : MlpAdapter =
        let down, up = pairs[layer]
        fun _ mlpOut ->
            use h = down.forward mlpOut
            use a = torch.nn.functional.relu h
            up.forward a

/// AdaptFormer's parallel adapter (APER-Adapter, RanPAC): per block it adds
/// Scale · up(dropout(relu(down x_a))) beside the MLP, reading the un-normalised attention residual
/// x_a. Down keeps PyTorch's default initialisation with a zero bias; up starts at zero.
type ParallelAdapters(width: int, depth: int, settings: ParallelAdapter) as this =
    inherit torch.nn.Module("ParallelAdapters")
    let pairs =
        [ for i in 0 .. depth - 1 ->
              let down = torch.nn.Linear(int64 width, int64 settings.Bottleneck)
              let up = torch.nn.Linear(int64 settings.Bottleneck, int64 width)
              this.register_module (sprintf "block%d_down" i, down)
              this.register_module (sprintf "block%d_up" i, up)
              down, up ]
    do
        if settings.Bottleneck <= 0 then Prompting.Errors.fail "parallel adapter: bottleneck %d must be positive" settings.Bottleneck
        use _ = torch.no_grad ()
        for down, up in pairs do
            torch.nn.init.zeros_ down.bias |> ignore
            torch.nn.init.zeros_ up.weight |> ignore
            torch.nn.init.zeros_ up.bias |> ignore

    /// Block `layer`'s adapter: it reads the attention residual; dropout acts in training passes.
    member _.At(layer: int, training: bool) : MlpAdapter =
        let down, up = pairs[layer]
        fun residual _ ->
            use h = down.forward residual
            use a = torch.nn.functional.relu h
            use dropped = torch.nn.functional.dropout (a, settings.Dropout, training)
            use u = up.forward dropped
            u * settings.Scale

/// SSF: γ ⊙ x + β at every FeatureSite, γ from N(1, std²) and β from N(0, std²). Parameters are
/// named patch_{scale,shift}, block<i>_<site>_{scale,shift} and final_{scale,shift}.
type ScaleShiftModule(config: VitConfig, settings: ScaleShift) as this =
    inherit torch.nn.Module("ScaleShift")
    let pair (name: string) (channels: int) =
        let scale = torch.nn.Parameter(torch.empty (int64 channels))
        let shift = torch.nn.Parameter(torch.empty (int64 channels))
        using (torch.no_grad ()) (fun _ ->
            torch.nn.init.normal_ (scale, 1.0, settings.InitStd) |> ignore
            torch.nn.init.normal_ (shift, 0.0, settings.InitStd) |> ignore)
        this.register_parameter (name + "_scale", scale)
        this.register_parameter (name + "_shift", shift)
        name
    let d = config.Width
    let blockSites =
        [ Norm1, "norm1", d; Qkv, "qkv", 3 * d; AttentionProjection, "proj", d; Norm2, "norm2", d; Fc1, "fc1", config.MlpHidden; Fc2, "fc2", d ]
    let patchName = pair "patch" d
    let blockNames =
        [| for i in 0 .. config.Depth - 1 -> Map.ofList [ for site, name, channels in blockSites -> site, pair (sprintf "block%d_%s" i name) channels ] |]
    let finalName = pair "final" d

    let transform (name: string) (x: torch.Tensor) =
        // Fetched by name: moving the module to another device replaces the Parameter objects.
        use scaled = x * this.get_parameter (name + "_scale")
        scaled + this.get_parameter (name + "_shift")

    /// The modulation of block `layer`'s sites.
    member _.At(layer: int) : Modulation =
        let names = blockNames[layer]
        fun site x -> transform (names[site]) x

    /// The modulation of the patch projection and the final norm (the sites outside the blocks).
    member _.Outside: Modulation =
        fun site x ->
            match site with
            | PatchProjection -> transform patchName x
            | FinalNorm -> transform finalName x
            | other -> Prompting.Errors.fail "SSF: %A is a site inside a block" other
