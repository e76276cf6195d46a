namespace Prompting.Prompts

open TorchSharp
open Prompting
open Prompting.Vit
open Prompting.Tensors

/// The classes of each task, contiguous in task order: task t owns [offset t, offset t + count t).
/// With SharedClasses (domain-incremental) every task has all the classes.
type TaskLayout =
    { ClassesPerTask: int list
      SharedClasses: bool }

module TaskLayout =
    /// `tasks` tasks sharing `classes` classes as evenly as possible (earlier tasks get the rest).
    let uniform tasks classes =
        if tasks <= 0 || classes < tasks then Errors.fail "cannot split %d classes into %d tasks" classes tasks
        { ClassesPerTask = [ for t in 0 .. tasks - 1 -> classes / tasks + (if t < classes % tasks then 1 else 0) ]
          SharedClasses = false }
    /// Domain-incremental: `tasks` domains over the same `classes` classes.
    let domains tasks classes =
        if tasks <= 0 || classes <= 0 then Errors.fail "cannot make %d domains of %d classes" tasks classes
        { ClassesPerTask = List.replicate tasks classes; SharedClasses = true }
    /// Disjoint task sizes (a 5-datasets style sequence).
    let ofSizes (sizes: int list) = { ClassesPerTask = sizes; SharedClasses = false }
    let tasks (l: TaskLayout) = l.ClassesPerTask.Length
    let total (l: TaskLayout) = if l.SharedClasses then l.ClassesPerTask.Head else List.sum l.ClassesPerTask
    let offset (l: TaskLayout) t = if l.SharedClasses then 0 else l.ClassesPerTask |> List.take t |> List.sum
    let count (l: TaskLayout) t = l.ClassesPerTask[t]
    /// Classes seen once task t has been learned.
    let seen (l: TaskLayout) t = if l.SharedClasses then total l else offset l (t + 1)

/// One forward pass of a prompted model.
[<NoEquality; NoComparison>]
type PromptedOutput =
    { /// (B, classes) over every class of the layout.
      Logits: torch.Tensor
      /// What the head read: the pre-logits (B, D), or, outside training, the pretrained model's
      /// features followed by them (B, 2·D) when the method's calibrated head reads both.
      Features: torch.Tensor
      /// Sum of the weighted auxiliary losses (a zero scalar when there are none).
      AuxLoss: torch.Tensor
      /// Pool entries chosen by the first selecting group (B, k), when there is one.
      Chosen: torch.Tensor option }

/// Holds the sources of a method's groups under their group names.
type PromptGroups(sources: (PromptGroup * PromptSourceModule) list) as this =
    inherit torch.nn.Module("PromptGroups")
    do for g, s in sources do this.register_module (g.Name, s)
    member _.Sources = sources

/// A backbone plus a method's prompts, head and trainable parts. Submodule names give the
/// trainable-state keys: prompts.<group>.layer<N>.{prompt,keys,attention}, prompts.<group>.keys,
/// head.fc.{weight,bias}, head.hidden<i>.*, head.prototypes, adapters.*, backbone.<timm key>.
type PromptedModel(method: Method, backbone: VisionTransformer, layout: TaskLayout) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("PromptedModel")
    let c = backbone.Config
    let layersOf = PromptGroup.layers c.Depth
    let shapeOf (g: PromptGroup) =
        { Group = g; Layers = layersOf g; Width = c.Width; PatchSize = c.PatchSize
          StoredLength = PromptGroup.storedLength g; Tasks = TaskLayout.tasks layout }
    let validate () =
        let names = method.Groups |> List.map (fun g -> g.Name)
        if names.Length <> (List.distinct names).Length then Errors.fail "method %s: group names must be distinct" method.Name
        for g in method.Groups do
            let ls = layersOf g
            if ls.IsEmpty then Errors.fail "method %s: group %s has no layers" method.Name g.Name
            for l in ls do
                if l < 0 || l >= c.Depth then
                    Errors.fail "method %s: group %s uses layer %d but the backbone has %d blocks" method.Name g.Name l c.Depth
            if g.Length <= 0 then Errors.fail "method %s: group %s needs a positive length" method.Name g.Name
            match g.Insertion with
            | PrefixTokens SplitHalves when g.Length % 2 <> 0 ->
                Errors.fail "method %s: group %s splits its prompt into key and value halves, so its length %d must be even" method.Name g.Name g.Length
            | _ -> ()
        let tokenGroups = method.Groups |> List.filter (fun g -> match g.Insertion with PromptTokens _ -> true | _ -> false)
        if tokenGroups.Length > 1 then Errors.fail "method %s: at most one group may insert prompt tokens" method.Name
        if method.HeadInput = PromptMean && tokenGroups.IsEmpty then
            Errors.fail "method %s: a prompt-mean head needs a group that inserts prompt tokens" method.Name
    do
        validate ()
        Method.checkComposition method
    let makeSource (g: PromptGroup) : PromptSourceModule =
        match g.Source with
        | Static
        | Keyed _ -> new PoolSource(shapeOf g)
        | Components _ -> new ComponentSource(shapeOf g)
        | Quantised _ -> new QuantisedSource(shapeOf g)
    let groups = new PromptGroups([ for g in method.Groups -> g, makeSource g ])
    let head =
        new ClassifierHead(method.Head, c.Width, Method.calibrationWidth c.Width method, TaskLayout.total layout, method.VptHeadInit, method.Calibration,
                           ?truncatedNormal = method.HeadTruncatedNormal)
    let adapters = method.AdapterReduction |> Option.map (fun r -> new Adapters(c.Width, c.Depth, r))
    let parallelAdapters = method.ParallelAdapter |> Option.map (fun a -> new ParallelAdapters(c.Width, c.Depth, a))
    let scaleShift = method.ScaleShift |> Option.map (fun s -> new ScaleShiftModule(c, s))
    /// APER's frozen pretrained model beside the adapted one: the backbone itself run without the
    /// method's injections, or, when training changes the backbone's own weights, a frozen copy
    /// taken now (before any training).
    let pretrainedCopy =
        if method.HeadFeatures = PretrainedAndAdapted && method.Backbone <> Frozen then
            let copy = new VisionTransformer(c)
            copy.load_state_dict (backbone.state_dict ()) |> ignore
            for p in copy.parameters () do p.requires_grad <- false
            Some copy
        else None
    let needsQuery = groups.Sources |> List.exists (fun (_, s) -> s.NeedsQuery)
    /// Blocks of the un-prompted backbone the query pass runs (all of them in the references).
    let queryDepth =
        match method.QueryDepth with
        | None -> c.Depth
        | Some k when k >= 1 && k <= c.Depth -> k
        | Some k -> Errors.fail "method %s: query depth %d must be between 1 and the backbone's %d blocks" method.Name k c.Depth
    /// Leading blocks the query pass and the prompted pass share (see Method.sharedBlocks).
    let sharedBlocks = Method.sharedBlocks c.Depth method
    let mutable task = 0
    /// The frozen backbone's compute type: float32, or bfloat16 for mixed precision.
    let mutable computeType = torch.float32
    do
        this.register_module ("backbone", backbone)
        this.register_module ("prompts", groups)
        this.register_module ("head", head)
        adapters |> Option.iter (fun a -> this.register_module ("adapters", a))
        parallelAdapters |> Option.iter (fun a -> this.register_module ("parallel_adapters", a))
        scaleShift |> Option.iter (fun s -> this.register_module ("ssf", s))
        pretrainedCopy |> Option.iter (fun p -> this.register_module ("pretrained", p))
        // Freeze what the method does not train; the backbone's own head is never used.
        for struct (name, p) in backbone.named_parameters () do
            let trainable =
                not (name.StartsWith "head.")
                && match method.Backbone with
                   | Frozen -> false
                   | FullBackbone -> true
                   | BiasTerms -> name.EndsWith ".bias"
                   | LastBlocks k ->
                       name.StartsWith "norm."
                       || (name.StartsWith "blocks." && int (name.Split('.')[1]) >= c.Depth - k)
            p.requires_grad <- trainable
        // A prototype head has no parameters (its rows are a buffer): nothing of the head to freeze.
        for _, s in groups.Sources do s.BeginTask 0

    member _.Method = method
    member _.Backbone = backbone
    member _.Layout = layout
    member _.Head = head
    member _.Groups = groups.Sources
    /// The task being learned (or last learned).
    member _.Task = task

    /// The parts with a per-task lifecycle under their state names: the prompt sources, then the head.
    member _.Parts: (string * ITaskPart) list =
        [ for g, s in groups.Sources -> "prompts." + g.Name, s :> ITaskPart ] @ [ "head", head :> ITaskPart ]

    /// Lifecycle: task `t` begins (prompt copying, Gram–Schmidt initialisation of new components).
    member this.BeginTask(t: int) =
        if t < 0 || t >= TaskLayout.tasks layout then Errors.fail "task %d is outside 0..%d" t (TaskLayout.tasks layout - 1)
        task <- t
        for _, part in this.Parts do part.BeginTask t

    /// What the parts ask of the engine once the task's training is done.
    member this.AtTaskEnd =
        if this.Parts |> List.exists (fun (_, p) -> p.AtTaskEnd = FeaturePass) then FeaturePass else NothingAtTaskEnd

    /// Hands features (B, D) and labels (B) of the feature pass to the parts that asked for it.
    member this.ObserveFeatures(features: torch.Tensor, labels: torch.Tensor) =
        for _, part in this.Parts do
            if part.AtTaskEnd = FeaturePass then part.ObserveFeatures(features, labels)

    /// Lifecycle: the current task's training (and feature pass) is done. Returns what the parts
    /// did, one line each, for the run's log.
    member this.EndTask() =
        let ending = { Task = task; SeenClasses = TaskLayout.seen layout task }
        [ for _, part in this.Parts do yield! part.EndTask ending ]

    /// Every part's state kept across tasks, named "<part>.<name>" (saved with each task).
    member this.LifecycleState() =
        [ for name, part in this.Parts do
              for key, t in part.LifecycleState() -> name + "." + key, t ]

    /// Restores what LifecycleState returned; parts missing from `state` start afresh.
    member this.RestoreLifecycleState(state: (string * ExactTensor) list) =
        for name, part in this.Parts do
            let prefix = name + "."
            part.RestoreLifecycleState [ for key, t in state do if key.StartsWith prefix then yield key.Substring prefix.Length, t ]

    /// Sets the task without lifecycle effects (used when restoring saved state).
    member _.RestoreTask(t: int) =
        task <- t
        head.SyncCalibrated()

    /// Mixed precision: the frozen backbone computes in `dtype` (bfloat16) while prompts, keys and
    /// the head stay float32 and receive float32 gradients through the casts. Only for methods
    /// that keep the backbone frozen and add no adapters.
    member _.SetComputeType(dtype: torch.ScalarType) =
        if dtype <> torch.float32 then
            if method.Backbone <> Frozen || Method.addsBlockModules method then
                Errors.fail "method %s trains backbone parts, so it cannot run the backbone in %A" method.Name dtype
        backbone.``to`` dtype |> ignore
        computeType <- dtype

    member _.ComputeType = computeType

    /// Whether the trainable parts learn on the current task (every task, or the first only).
    member _.LearnsThisTask = Method.learnsOn task method

    /// The frozen pretrained copy of the backbone (APER's concatenation when the backbone trains).
    member _.PretrainedCopy = pretrainedCopy

    /// Parameters that receive gradients, with their state names.
    member this.TrainableParameters() =
        [ for struct (name, p) in this.named_parameters () do if p.requires_grad then yield name, p ]

    member private _.ToCompute(t: torch.Tensor) = if computeType <> torch.float32 then t.to_type computeType else t

    /// One patch embedding serves both passes (it may train, in some baselines); blocks before the
    /// first injection are shared too when nothing in them trains, computed once without gradient.
    /// Returns the tokens after the shared blocks and their number.
    member private _.SharedStart(images: torch.Tensor, forQuery: bool) =
        // The query is the pretrained model's: SSF's patch modulation is not part of it (with SSF no
        // block is shared, so the query pass embeds on its own).
        let modulation = if forQuery then None else scaleShift |> Option.map (fun s -> s.Outside)
        let tokens = backbone.Embed(images, modulation)
        let shared = if needsQuery then sharedBlocks else 0
        if shared = 0 then tokens, 0
        else
            use _ = torch.no_grad ()
            use _ = tokens
            backbone.ForwardBlocks(tokens, 0, shared, None, None), shared

    /// The query the prompt sources see for these images: the frozen, un-prompted backbone's class
    /// token after QueryDepth blocks through the final norm (B, D), float32, without gradient.
    member this.Query(images: torch.Tensor) =
        let computed = this.ToCompute images
        try
            let entry, shared = this.SharedStart(computed, true)
            use _ = entry
            use q = backbone.QueryFrom(entry, shared, queryDepth)
            q.to_type torch.float32
        finally
            if not (obj.ReferenceEquals(computed, images)) then computed.Dispose()

    /// The frozen pretrained model's features f_PTM (B, D), float32, without gradient: the
    /// backbone without the method's injections, or its frozen copy when the backbone trains.
    member private _.PretrainedFeatures(images: torch.Tensor) =
        let model = defaultArg pretrainedCopy backbone
        use _ = torch.no_grad ()
        use f = model.ClassFeatures images
        f.to_type torch.float32

    member this.Forward(images: torch.Tensor, training: bool) : PromptedOutput =
        let b = images.shape[0]
        let d = int64 c.Width
        let mixed = computeType <> torch.float32
        let toCompute = this.ToCompute
        let images = toCompute images
        let entry, shared = this.SharedStart(images, false)
        let query =
            if not needsQuery then None
            elif scaleShift.IsSome then
                let queryEntry, queryShared = this.SharedStart(images, true)
                use _ = queryEntry
                Some((backbone.QueryFrom(queryEntry, queryShared, queryDepth)).to_type torch.float32)
            else Some((backbone.QueryFrom(entry, shared, queryDepth)).to_type torch.float32)
        let context = { Query = query; Training = training; Task = task; Batch = b }
        let prepared = [ for g, s in groups.Sources -> g, s.Prepare context ]
        let mutable span: (int64 * int64) option = None
        let mutable placement = AfterClassToken
        let hook (layer: int) (x: torch.Tensor) : BlockInput =
            let mutable tokens = x
            let keys = ResizeArray<torch.Tensor>()
            let values = ResizeArray<torch.Tensor>()
            for g, out in prepared do
                match out.At layer with
                | None -> ()
                | Some chosen ->
                    match g.Insertion with
                    | PromptTokens(where, withClassPosition) ->
                        let flat = toCompute (chosen.reshape (b, -1L, d))
                        let positioned =
                            if withClassPosition then flat + backbone.PositionEmbedding.narrow (1, 0L, 1L) else flat
                        let prompt =
                            if training && g.Dropout > 0.0 then torch.nn.functional.dropout (positioned, g.Dropout, true)
                            else positioned
                        let n = prompt.shape[1]
                        let start, removed =
                            match span with
                            | None -> (match where with AfterClassToken -> 1L | BeforeClassToken -> 0L), 0L
                            | Some(start, len) -> start, len
                        if removed = n then
                            // Same-length replacement (VPT-deep): its backward copies the gradient
                            // once, where narrow + cat would fill and add whole-sequence tensors.
                            let replaced = tokens.clone ()
                            (replaced.narrow (1, start, n)).copy_ prompt |> ignore
                            tokens <- replaced
                        else
                            let before = tokens.narrow (1, 0L, start)
                            let after = tokens.narrow (1, start + removed, tokens.shape[1] - start - removed)
                            tokens <- torch.cat ([| before; prompt; after |], 1L)
                        span <- Some(start, n)
                        placement <- where
                    | PrefixTokens _ ->
                        let half = chosen.shape[2] / 2L
                        keys.Add(toCompute ((chosen.narrow (2, 0L, half)).reshape (b, -1L, d)))
                        values.Add(toCompute ((chosen.narrow (2, half, half)).reshape (b, -1L, d)))
            let prefix =
                match keys.Count with
                | 0 -> None
                | 1 -> Some { Key = keys[0]; Value = values[0] }
                | _ -> Some { Key = torch.cat (keys.ToArray(), 1L); Value = torch.cat (values.ToArray(), 1L) }
            let adapter =
                match adapters, parallelAdapters with
                | Some a, _ -> Some(a.At layer)
                | None, Some a -> Some(a.At(layer, training))
                | None, None -> None
            { Tokens = tokens
              Prefix = prefix
              MlpAdapter = adapter
              Modulation = scaleShift |> Option.map (fun s -> s.At layer) }
        // The last block computes only the rows the head reads (known once its hook has run).
        let headRows () : Rows =
            match method.HeadInput, span with
            | PromptMean, Some(start, len) -> { Start = start; Count = len }
            | _, Some(_, len) when placement = BeforeClassToken -> { Start = len; Count = 1L }
            | _ -> { Start = 0L; Count = 1L }
        let features = backbone.ForwardFrom(entry, shared, Some hook, Some headRows, scaleShift |> Option.map (fun s -> s.Outside))
        let preLogits =
            match method.HeadInput with
            | PromptMean -> features.mean ([| 1L |])
            | ClassToken -> features.select (1, 0L)
        let preLogits = if mixed then preLogits.to_type torch.float32 else preLogits
        // The pretrained features are for the calibrated head only, which never trains: a training
        // pass (whose loss reads the adapted features) skips their forward pass.
        let headFeatures =
            match method.HeadFeatures with
            | AdaptedFeatures -> preLogits
            | PretrainedAndAdapted when training -> preLogits
            | PretrainedAndAdapted ->
                let pretrained =
                    match query, pretrainedCopy with
                    // The query is the frozen, un-prompted model's features when it runs every block.
                    | Some q, None when queryDepth = c.Depth -> q.alias ()
                    | _ -> this.PretrainedFeatures images
                use _ = pretrained
                torch.cat ([| pretrained; preLogits |], 1L)
        let logits = head.forward headFeatures
        let aux =
            match Sources.sumLosses (prepared |> List.choose (fun (_, o) -> o.AuxLoss)) with
            | Some l -> l
            | None -> torch.zeros ([||], device = images.device)
        { Logits = logits
          Features = headFeatures
          AuxLoss = aux
          Chosen = prepared |> List.tryPick (fun (_, o) -> o.Chosen) }

    override this.forward(images) = this.Forward(images, this.training).Logits

module PromptedModel =
    /// Builds a trainable model of `method` over `backbone` for a task layout.
    let build (method: Method) (layout: TaskLayout) (backbone: VisionTransformer) =
        new PromptedModel(method, backbone, layout)
