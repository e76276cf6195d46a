namespace Prompting.Prompts

open TorchSharp
open Prompting

/// Static prompts (a pool of one, no keys) and keyed pools with top-k cosine selection
/// (L2P, DualPrompt's G- and E-prompts). Parameters: `layerN.prompt` (M, S, D) per layer, and
/// `keys` (M, D) shared by the group's layers or `layerN.keys` per layer.
type PoolSource(shape: SourceShape) as this =
    inherit PromptSourceModule("PoolSource")
    let pool, keyed =
        match shape.Group.Source with
        | Static -> 1, None
        | Keyed k -> k.PoolSize, Some k
        | other -> invalidArg "shape" (sprintf "PoolSource cannot serve %A" other)
    let d = int64 shape.Width
    let layers = [ for l in shape.Layers -> l, new ParameterSet(Sources.layerName l) ]
    do
        if pool <= 0 then Errors.fail "prompt group %s: pool size must be positive" shape.Group.Name
        match keyed with
        | Some k when k.TopK <= 0 || k.TopK > pool ->
            Errors.fail "prompt group %s: top-k %d must be between 1 and the pool size %d" shape.Group.Name k.TopK pool
        | _ -> ()
        for l, set in layers do
            set.Add("prompt", Sources.initial shape [| int64 pool; int64 shape.StoredLength; d |])
            match keyed with
            | Some k when k.KeysPerLayer -> set.Add("keys", Sources.initial shape [| int64 pool; d |])
            | _ -> ()
            this.register_module (Sources.layerName l, set)
        match keyed with
        | Some k when not k.KeysPerLayer ->
            this.register_parameter ("keys", torch.nn.Parameter(Sources.initial shape [| int64 pool; d |]))
        | _ -> ()

    let prompt (layer: int) = (layers |> List.find (fst >> (=) layer) |> snd)["prompt"]

    /// Ids (B, k) for one key set, plus the weighted pull loss while training.
    let select (k: KeyedPool) (ctx: SourceContext) (keys: torch.Tensor) =
        let q = Sources.requireQuery shape.Group.Name ctx
        let cos = Sources.cosine q keys
        let ids =
            if ctx.Training && k.TrainWithTaskId then
                if ctx.Task >= pool then
                    Errors.fail "prompt group %s: task %d has no entry in a pool of %d" shape.Group.Name ctx.Task pool
                torch.full ([| ctx.Batch; 1L |], (int64 ctx.Task).ToScalar(), dtype = torch.int64, device = q.device)
            else
                let struct (_, top) = cos.topk (k.TopK, dim = 1, largest = true, sorted = true)
                if k.BatchwiseSelection then
                    // The k ids chosen most often in the batch (ties: lower id), for every sample.
                    use counts = torch.bincount(top.flatten (), minlength = int64 pool).``to`` torch.int64
                    use order = (counts * int64 (pool + 1) - torch.arange(int64 pool, device = q.device)).argsort(descending = true)
                    use major = order.narrow (0, 0L, int64 k.TopK)
                    major.unsqueeze(0).expand(ctx.Batch, -1L).contiguous ()
                else top
        let pull =
            if not ctx.Training then None
            else
                let batch = float ctx.Batch
                let loss =
                    match k.PullLoss with
                    | NegativeCosine -> -(cos.gather(1L, ids).sum ()) / batch
                    | OneMinusCosine -> (1.0 - cos.gather (1L, ids)).sum () / batch
                    | OneMinusCosineSummed -> (1.0 - cos.gather (1L, ids)).sum ()
                    | CrossSampleQuirk -> (1.0 - cos.index_select (1L, ids.flatten ())).sum ()
                Some(loss * k.PullWeight)
        ids, pull

    override _.NeedsQuery = keyed.IsSome

    override this.Prepare(ctx) =
        match keyed with
        | None ->
            { At = Sources.perLayer [ for l, _ in layers -> l, (prompt l).unsqueeze(0).expand (ctx.Batch, -1L, -1L, -1L) ]
              AuxLoss = None
              Chosen = None }
        | Some k when not k.KeysPerLayer ->
            let ids, pull = select k ctx (this.get_parameter "keys")
            { At = Sources.perLayer [ for l, _ in layers -> l, Sources.gather (prompt l) ids ]
              AuxLoss = pull
              Chosen = Some ids }
        | Some k ->
            let chosen = [ for l, set in layers -> l, select k ctx set["keys"] ]
            { At = Sources.perLayer [ for l, (ids, _) in chosen -> l, Sources.gather (prompt l) ids ]
              AuxLoss = Sources.sumLosses (chosen |> List.choose (snd >> snd))
              Chosen = Some(fst (snd chosen.Head)) }

    override _.BeginTask(task) =
        match keyed with
        | Some k when k.CopyPreviousAtTaskStart && task > 0 && task < pool ->
            use _ = torch.no_grad ()
            for l, _ in layers do
                let p = prompt l
                use previous = p.select(0, int64 (task - 1)).clone ()
                p.select(0, int64 task).copy_ previous |> ignore
        | _ -> ()
