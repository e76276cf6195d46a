/// A test matrix in the spirit of HuggingFace peft's: one row per entry of `Methods.all` (a method
/// gets its row by being listed there) × generic checks every method must pass, named
/// prompts/matrix/<method>/<check> (Expecto prints "." between the levels unless given
/// `--join-with /`; select with e.g. `--filter prompts/matrix/coda-prompt` or `--filter-test-case gradients`).
///
///   shapes          logits (B, classes), features (B, D), scalar auxiliary loss, Chosen (B, k) in range
///   gradients       after Loss.total + backward only TrainableParameters (exactly what the configuration
///                   trains) have gradients; every prompt group and the head receive one
///   optimiser-step  one AdamW step keeps frozen parameters and buffers bit-identical, moves a trainable one
///   state-round-trip  TrainableState save/load into a fresh model is bit-exact; another method's file is
///                   refused with a one-line PromptingError naming it, and changes nothing
///   no-leak         the live tensor count is flat over 50 training steps (sequenced)
///   deterministic   two seeded runs of build + 3 steps are bit-identical (sequenced)
///   permutation     permuting the batch permutes logits, features and chosen ids
///   parameter-count prompt, head and adapter parameter counts match the analytic count from the config
module Prompting.Tests.PromptsMatrixTests

open System.IO
open Expecto
open TorchSharp
open Prompting
open Prompting.Prompts
open Prompting.Vit
open Prompting.Tensors
open Prompting.Tests.Fixtures
open Prompting.Tests.TestSupport

// ---------------------------------------------------------------------------------------------
// The setting shared by every row: a small backbone (CODA's 100 components need a key width of at
// least 100), two tasks of five classes, batches of four 32 × 32 images, the model at task 1.

let private tasks = 2
let private config = VitConfig.custom 32 8 5 128 2 10
let private layout = TaskLayout.uniform tasks 10
let private batch = 4L
let private task = 1

let private images () = torch.randn (batch, 3L, 32L, 32L)

/// Labels inside the current task's classes.
let private labels () =
    let first, count = TaskLayout.offset layout task, TaskLayout.count layout task
    torch.tensor ([| for i in 0 .. int batch - 1 -> int64 (first + i % count) |])

/// A fitted SimpleCIL stand-in: random unit prototypes, so its logits are not all zero.
let private fitPrototypes (model: PromptedModel) =
    if model.Method.Head = PrototypeHead then
        let classes = TaskLayout.total layout
        use means = torch.randn (int64 classes, int64 config.Width)
        model.Head.SetPrototypes([| 0L .. int64 classes - 1L |], means)

/// The method over a given backbone, at task 1 (after the task-0 start the constructor performs).
let private buildOver (m: Method) (backbone: VisionTransformer) =
    let model = PromptedModel.build m layout backbone
    model.BeginTask task
    fitPrototypes model
    model

let private build (m: Method) = buildOver m (new VisionTransformer(config))

let private optimiserFor (model: PromptedModel) =
    match model.TrainableParameters() with
    | [] -> None
    | ps -> Some(torch.optim.AdamW([ for _, p in ps -> p ], lr = 1e-3, weight_decay = 0.05) :> torch.optim.Optimizer)

/// One training step in its own dispose scope: forward, loss, and (when something trains)
/// backward, optimiser step and zero_grad.
let private trainStep (model: PromptedModel) (optimiser: torch.optim.Optimizer option) (x: torch.Tensor) (y: torch.Tensor) =
    use _ = torch.NewDisposeScope()
    let out = model.Forward(x, true)
    let loss = Loss.total model out y
    match optimiser with
    | Some opt ->
        loss.backward ()
        opt.step () |> ignore
        opt.zero_grad ()
    | None -> ()

/// Eval-mode logits, features and chosen ids, copied to managed memory.
let private evaluate (model: PromptedModel) (x: torch.Tensor) =
    use _ = torch.NewDisposeScope()
    use _ = torch.no_grad ()
    let out = model.Forward(x, false)
    host out.Logits, host out.Features, out.Chosen |> Option.map (fun c -> c.data<int64>().ToArray())

/// Every parameter and buffer by name, copied to managed memory.
let private snapshot (model: PromptedModel) =
    [ for struct (name, p) in model.named_parameters () -> "parameter " + name, host p ]
    @ [ for struct (name, b) in model.named_buffers () -> "buffer " + name, host b ]

let private sameBits (a: HostTensor) (b: HostTensor) =
    a.Shape = b.Shape && bits a.Values = bits b.Values

// ---------------------------------------------------------------------------------------------
// Expectations derived from the method's configuration alone (not from the model under test).

/// The backbone parameters the method trains, by timm name; the backbone's own head never trains.
let private backboneTrains (m: Method) (name: string) =
    not (name.StartsWith "head.")
    && match m.Backbone with
       | Frozen -> false
       | FullBackbone -> true
       | BiasTerms -> name.EndsWith ".bias"
       | LastBlocks k ->
           name.StartsWith "norm."
           || (name.StartsWith "blocks." && int (name.Split('.')[1]) >= config.Depth - k)

/// Whether a model parameter should train: the method's backbone part, every prompt, key and
/// adapter, and the head unless it is SimpleCIL's (which has no parameters).
let private shouldTrain (m: Method) (name: string) =
    if name.StartsWith "backbone." then backboneTrains m (name.Substring "backbone.".Length)
    elif name.StartsWith "pretrained." then false
    else
        [ "prompts."; "adapters."; "parallel_adapters."; "ssf." ] |> List.exists name.StartsWith
        || (name.StartsWith "head." && m.Head <> PrototypeHead)

let private layerCount (g: PromptGroup) =
    match g.Layers with
    | AllLayers -> config.Depth
    | Only ls -> ls.Length

/// Tokens stored per prompt: 2L for separate key/value prefixes, L otherwise.
let private storedLength (g: PromptGroup) =
    match g.Insertion with
    | PrefixTokens SeparateKeyValue -> 2 * g.Length
    | _ -> g.Length

/// Analytic number of prompt and key parameters of a method (the core has no such count).
let private expectedPromptParameters (m: Method) =
    let d = int64 config.Width
    m.Groups
    |> List.sumBy (fun g ->
        let n, s = int64 (layerCount g), int64 (storedLength g)
        match g.Source with
        | Static -> n * s * d
        | Keyed k ->
            let pool = int64 k.PoolSize
            n * pool * s * d + (if k.KeysPerLayer then n * pool * d else pool * d)
        | Components c ->
            let components = int64 c.Components
            n * (components * s * d + 2L * components * d)
        | Quantised q ->
            let pool = int64 q.PoolSize
            n * (pool * s * d + pool * d))

let private expectedHeadParameters (m: Method) =
    let d, classes = int64 config.Width, int64 (TaskLayout.total layout)
    match m.Head with
    | LinearHead -> d * classes + classes
    | MlpHead k -> int64 k * (d * d + d) + d * classes + classes
    | PrototypeHead -> 0L
    | CosineHead -> d * classes + 1L

let private expectedAdapterParameters (m: Method) =
    let d = int64 config.Width
    let perBlock bottleneck = d * bottleneck + bottleneck + bottleneck * d + d
    let sequential = m.AdapterReduction |> Option.map (fun r -> perBlock (int64 (max 1 (config.Width / r))))
    let parallelAdapter = m.ParallelAdapter |> Option.map (fun a -> perBlock (int64 a.Bottleneck))
    int64 config.Depth * (defaultArg sequential 0L + defaultArg parallelAdapter 0L)

/// SSF: a scale and a shift per channel at the patch projection, the final norm and, per block,
/// norm1 (D), qkv (3D), proj (D), norm2 (D), fc1 (the MLP's width) and fc2 (D).
let private expectedScaleShiftParameters (m: Method) =
    let d = int64 config.Width
    match m.ScaleShift with
    | None -> 0L
    | Some _ -> 2L * (d + d + int64 config.Depth * (d + 3L * d + d + d + int64 config.MlpHidden + d))

/// The first group that selects pool entries: (columns of Chosen, pool size, true-task ids).
let private selection (m: Method) (training: bool) =
    m.Groups
    |> List.tryPick (fun g ->
        match g.Source with
        | Keyed k when training && k.TrainWithTaskId -> Some(1, k.PoolSize, Some task)
        | Keyed k -> Some(k.TopK, k.PoolSize, None)
        | Quantised q -> Some(1, q.PoolSize, None)
        | Static
        | Components _ -> None)

let private numel (ps: (string * torch.Tensor) seq) = ps |> Seq.sumBy (fun (_, p) -> p.numel ())

// ---------------------------------------------------------------------------------------------
// Built once per method and shared by the checks that only read a model (shapes, permutation,
// parameter accounting, and the state file that other rows must refuse to load).

/// Every named method, and calibrated heads on prompt methods (a composition no reference offers).
let private methods =
    let smallRidge = RandomProjectionRidge { Method.ranpacRidge with ProjectionSize = 64 }
    Methods.all tasks
    @ [ { Methods.l2p with Name = "l2p+ridge"; Calibration = smallRidge; Adaptation = FirstTaskOnly }
        { Methods.codaPrompt with Name = "coda-prompt+class-means"; Calibration = ClassMeans }
        { (Methods.dualPrompt tasks) with Name = "dualprompt+aper-features"; Calibration = ClassMeans; HeadFeatures = PretrainedAndAdapted }
        { Prompting.Engine.Configure.withHead "aligned" Methods.codaPrompt with Name = "coda-prompt+aligned" } ]

let private shared = methods |> List.map (fun m -> m.Name, lazy (build m)) |> dict

let private stateDir = lazy (tempDir ())

let private stateFiles =
    methods
    |> List.mapi (fun i m ->
        m.Name,
        lazy
            (let path = Path.Combine(stateDir.Value, sprintf "method%d.safetensors" i)
             TrainableState.save path shared[m.Name].Value
             path))
    |> dict

// ---------------------------------------------------------------------------------------------
// The checks.

let private shapes (m: Method) (model: Lazy<PromptedModel>) () =
    let model = model.Value
    use x = images ()
    let classes = int64 (TaskLayout.total layout)
    for training in [ true; false ] do
        use _ = torch.NewDisposeScope()
        let mode = if training then "training" else "eval"
        let out = model.Forward(x, training)
        Expect.equal out.Logits.shape [| batch; classes |] (sprintf "%s: logits (B, total classes)" mode)
        // APER's calibrated head reads the pretrained features beside the adapted ones: (B, 2D)
        // outside training; a training pass skips them.
        let width = if m.HeadFeatures = PretrainedAndAdapted && not training then 2L * int64 config.Width else int64 config.Width
        Expect.equal out.Features.shape [| batch; width |] (sprintf "%s: features (B, D or 2D)" mode)
        Expect.equal out.AuxLoss.shape [||] (sprintf "%s: auxiliary loss is a scalar" mode)
        Expect.isTrue (out.Logits.isfinite().all().item<bool> ()) (sprintf "%s: finite logits" mode)
        Expect.isTrue (out.Features.isfinite().all().item<bool> ()) (sprintf "%s: finite features" mode)
        Expect.isTrue (out.AuxLoss.isfinite().item<bool> ()) (sprintf "%s: finite auxiliary loss" mode)
        if not training then
            Expect.equal (out.AuxLoss.item<float32> ()) 0.0f "eval: no auxiliary loss"
        match selection m training, out.Chosen with
        | None, None -> ()
        | None, Some c -> failtestf "%s: no group selects pool entries, yet Chosen is %A" mode c.shape
        | Some _, None -> failtestf "%s: a group selects pool entries, yet Chosen is None" mode
        | Some(k, pool, trueTask), Some chosen ->
            Expect.equal chosen.shape [| batch; int64 k |] (sprintf "%s: Chosen is (B, k)" mode)
            Expect.equal chosen.dtype torch.int64 (sprintf "%s: Chosen holds int64 ids" mode)
            let ids = chosen.data<int64>().ToArray()
            for id in ids do
                Expect.isTrue (id >= 0L && id < int64 pool) (sprintf "%s: id %d inside the pool of %d" mode id pool)
            match trueTask with
            | Some t -> Expect.allEqual ids (int64 t) (sprintf "%s: the true task's entry while training" mode)
            | None -> ()

let private gradients (m: Method) () =
    use model = build m
    use x = images ()
    use y = labels ()
    let trainable = model.TrainableParameters() |> List.map fst |> Set.ofList
    let all = [ for struct (name, p) in model.named_parameters () -> name, p ]
    let expected = all |> List.map fst |> List.filter (shouldTrain m) |> Set.ofList
    Expect.equal trainable expected "TrainableParameters are exactly what the configuration trains"
    let gradient (p: torch.Tensor) =
        use g = p.grad
        if isNull g then None else Some(g.abs().max().item<float32> ())
    do
        use _ = torch.NewDisposeScope()
        let out = model.Forward(x, true)
        let loss = Loss.total model out y
        if trainable.IsEmpty then Expect.isFalse loss.requires_grad "nothing trains, so the loss has no graph"
        else loss.backward ()
    let nonZero = ResizeArray<string>()
    for name, p in all do
        match gradient p with
        | Some g when g > 0.0f ->
            Expect.isTrue (trainable.Contains name) (sprintf "%s got a gradient but is not trainable" name)
            nonZero.Add name
        | Some _ -> Expect.isTrue (trainable.Contains name) (sprintf "%s got a (zero) gradient but is not trainable" name)
        | None -> ()
        if name.StartsWith "backbone." && not (trainable.Contains name) then
            Expect.isNone (gradient p) (sprintf "frozen %s has no gradient" name)
    if trainable.IsEmpty then
        Expect.equal m.Head PrototypeHead "only SimpleCIL-style methods train nothing"
        Expect.isEmpty nonZero "no gradients at all"
    else
        Expect.isNonEmpty nonZero "at least one trainable parameter got a non-zero gradient"
        for g in m.Groups do
            Expect.exists nonZero (fun n -> n.StartsWith(sprintf "prompts.%s." g.Name))
                (sprintf "group %s receives a non-zero gradient" g.Name)
        if m.Head <> PrototypeHead then
            Expect.exists nonZero (fun n -> n.StartsWith "head.") "the head receives a non-zero gradient"

let private optimiserStep (m: Method) () =
    use model = build m
    use x = images ()
    use y = labels ()
    let trainable = model.TrainableParameters() |> List.map fst |> Set.ofList
    let before = snapshot model
    let optimiser = optimiserFor model
    trainStep model optimiser x y
    let after = Map.ofList (snapshot model)
    let mutable changed = []
    for name, old in before do
        let isTrainable = name.StartsWith "parameter " && trainable.Contains(name.Substring "parameter ".Length)
        if isTrainable then
            if not (sameBits old after[name]) then changed <- name :: changed
        else
            Expect.isTrue (sameBits old after[name]) (sprintf "%s is bit-identical after the step" name)
    if trainable.IsEmpty then Expect.isNone optimiser "nothing to optimise"
    else Expect.isNonEmpty changed "the step changed at least one trainable parameter"

let private roundTrip (m: Method) () =
    let dir = tempDir ()
    let path = Path.Combine(dir, "state.safetensors")
    use x = images ()
    use y = labels ()
    let backbone = new VisionTransformer(config)
    let pretrained = [ for struct (name, p) in backbone.named_parameters () -> name, host p ]
    use original = buildOver m backbone
    trainStep original (optimiserFor original) x y
    TrainableState.save path original
    let logits, features, chosen = evaluate original x

    // A fresh model: the same pretrained backbone, its own random prompts and head.
    let fresh = new VisionTransformer(config)
    do
        use _ = torch.no_grad ()
        let table = Map.ofList pretrained
        for struct (name, p) in fresh.named_parameters () do
            use source = HostTensor.toTensor table[name]
            p.copy_ source |> ignore
    use restored = PromptedModel.build m layout fresh
    let freshLogits, _, _ = evaluate restored x
    Expect.isFalse (sameBits freshLogits logits) "before loading, the fresh model differs"
    TrainableState.load path restored
    Expect.equal restored.Task original.Task "the task is restored"
    let check what =
        let l, f, c = evaluate restored x
        expectBitExact l logits (what + ": eval logits")
        expectBitExact f features (what + ": eval features")
        Expect.equal c chosen (what + ": chosen ids")
    check "after loading"

    // Another method's state is refused, by a one-line error naming the file, and changes nothing.
    let refuse (file: string) (what: string) =
        let message = promptingError what (fun () -> TrainableState.load file restored)
        expectMessage message [ file ] what
    let next = methods[(methods |> List.findIndex (fun o -> o.Name = m.Name) |> (+) 1) % methods.Length]
    refuse stateFiles[next.Name].Value (sprintf "the state of %s" next.Name)
    // The same tensors under another method's name: only the recorded method tells them apart.
    let renamed = Path.Combine(dir, "renamed.safetensors")
    let tensors, metadata = Safetensors.readWithMetadata path
    Safetensors.writeWithMetadata renamed (metadata.Add("method", m.Name + "-other")) tensors
    refuse renamed "identical tensors saved by another method"
    check "after the refused loads"
    try Directory.Delete(dir, true) with _ -> ()

let private noLeak (m: Method) () =
    use model = build m
    use x = images ()
    use y = labels ()
    let optimiser = optimiserFor model
    // Tensors that only wait for the finaliser (orphans of model building) must not count.
    let live () =
        System.GC.Collect()
        System.GC.WaitForPendingFinalizers()
        System.GC.Collect()
        torch.Tensor.TotalCount
    trainStep model optimiser x y
    let afterFirst = live ()
    for _ in 2 .. 50 do trainStep model optimiser x y
    Expect.equal (live ()) afterFirst "live tensors after 50 steps = after the first"

let private deterministic (m: Method) () =
    let run (seed: int64) =
        torch.manual_seed seed |> ignore
        use model = build m
        use x = images ()
        use y = labels ()
        let optimiser = optimiserFor model
        for _ in 1 .. 3 do trainStep model optimiser x y
        let trainingLogits =
            use _ = torch.NewDisposeScope()
            use _ = torch.no_grad ()
            host (model.Forward(x, true).Logits)
        let logits, features, _ = evaluate model x
        [ "training logits", trainingLogits; "eval logits", logits; "eval features", features ] @ snapshot model
    let first, second = run 1234L, run 1234L
    Expect.equal (List.map fst second) (List.map fst first) "same tensors"
    for (name, a), (_, b) in List.zip first second do
        expectBitExact b a name

let private permutation (model: Lazy<PromptedModel>) () =
    let model = model.Value
    use x = images ()
    // Commutes with neither reversing nor rolling the batch, so such mix-ups cannot hide.
    let order = [| 2; 0; 1; 3 |]
    use perm = torch.tensor (order |> Array.map int64)
    use permuted = x.index_select (0L, perm)
    let logits, features, chosen = evaluate model x
    let pLogits, pFeatures, pChosen = evaluate model permuted
    let reorder (t: HostTensor) =
        use source = HostTensor.toTensor t
        use picked = source.index_select (0L, perm)
        host picked
    Expect.isLessThan (relativeError pLogits.Values (reorder logits).Values) 1e-5 "logits follow the samples"
    Expect.isLessThan (relativeError pFeatures.Values (reorder features).Values) 1e-5 "features follow the samples"
    match chosen, pChosen with
    | Some c, Some pc ->
        let k = c.Length / int batch
        let rows = [| for i in 0 .. int batch - 1 -> c[i * k .. i * k + k - 1] |]
        let expected = order |> Array.collect (fun i -> rows[i])
        Expect.equal pc expected "chosen ids follow the samples"
    | None, None -> ()
    | _ -> failtest "Chosen present for one batch but not the other"

let private accounting (m: Method) (model: Lazy<PromptedModel>) () =
    let model = model.Value
    let parameters = [ for struct (name, p) in model.named_parameters () -> name, (p :> torch.Tensor) ]
    let under (prefix: string) = parameters |> List.filter (fun (n, _) -> n.StartsWith prefix)
    Expect.equal (numel (under "prompts.")) (expectedPromptParameters m) "prompt and key parameters"
    Expect.equal (numel (under "head.")) (expectedHeadParameters m) "head parameters"
    Expect.equal (numel (under "adapters.") + numel (under "parallel_adapters.")) (expectedAdapterParameters m) "adapter parameters"
    Expect.equal (numel (under "ssf.")) (expectedScaleShiftParameters m) "SSF parameters"
    let backbone = numel [ for struct (name, p) in model.Backbone.named_parameters () -> name, (p :> torch.Tensor) ]
    // APER's frozen copy of the pretrained backbone, kept only when the backbone itself trains.
    let pretrainedCopy = if m.HeadFeatures = PretrainedAndAdapted && m.Backbone <> Frozen then backbone else 0L
    Expect.equal (numel (under "pretrained.")) pretrainedCopy "pretrained copy"
    Expect.equal
        (numel parameters)
        (backbone + pretrainedCopy + expectedPromptParameters m + expectedHeadParameters m + expectedAdapterParameters m + expectedScaleShiftParameters m)
        "nothing else holds parameters"
    // The core's analytic count (used by `prompting methods`) agrees with the built model.
    let counts = Counting.count m model.Backbone.Config (TaskLayout.total model.Layout)
    Expect.equal counts.PromptsAndKeys (expectedPromptParameters m) "Counting: prompts and keys"
    let trainable = model.TrainableParameters() |> List.sumBy (fun (_, p) -> p.numel ())
    Expect.equal counts.Total trainable "Counting: total trainable parameters"

// ---------------------------------------------------------------------------------------------

let private row (m: Method) =
    let model = shared[m.Name]
    testList
        m.Name
        [ test "shapes" { shapes m model () }
          test "gradients" { gradients m () }
          test "optimiser-step" { optimiserStep m () }
          test "state-round-trip" { roundTrip m () }
          testSequenced <| test "no-leak" { noLeak m () }
          testSequenced <| test "deterministic" { deterministic m () }
          test "permutation" { permutation model () }
          test "parameter-count" { accounting m model () } ]

[<Tests>]
let matrixTests = testList "prompts" [ testList "matrix" [ for m in methods -> row m ] ]
