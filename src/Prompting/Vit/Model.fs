namespace Prompting.Vit

open TorchSharp
open TorchSharp.Modules
open Prompting

/// Key/value prefixes for one block's attention, each (B, L, D): prefix-tuning's injection.
/// Each token's D-vector is split over the heads in contiguous chunks of the head width.
[<NoEquality; NoComparison>]
type Prefix = { Key: torch.Tensor; Value: torch.Tensor }

/// Where a per-channel transform may act on the backbone's intermediate features (SSF's sites):
/// the patch projection, six places inside each block, and the final norm.
type FeatureSite =
    | PatchProjection
    | Norm1
    /// The packed query/key/value projection (3·D channels).
    | Qkv
    | AttentionProjection
    | Norm2
    /// The MLP's first layer, before its GELU (hidden channels).
    | Fc1
    | Fc2
    | FinalNorm

/// A per-channel transform of what a site produced (SSF: y = γ ⊙ x + β). It returns a new tensor.
type Modulation = FeatureSite -> torch.Tensor -> torch.Tensor

module Modulation =
    /// `t` through the modulation at `site`, disposing `t` when a new tensor replaces it.
    let apply (modulation: Modulation option) (site: FeatureSite) (t: torch.Tensor) =
        match modulation with
        | None -> t
        | Some f ->
            use _ = t
            f site t

/// What an MLP adapter adds to a block's output, from the attention residual x_a = x + attn(norm1 x)
/// and the MLP's output on norm2 x_a: Pfeiffer-style adapters (VPT) read the MLP output,
/// AdaptFormer's parallel adapter (APER, RanPAC) reads x_a.
type MlpAdapter = torch.Tensor -> torch.Tensor -> torch.Tensor

/// What a prompt method hands to one block: the (possibly extended) token sequence, prefixes, an
/// optional MLP adapter and an optional modulation of the block's intermediate features (SSF).
[<NoEquality; NoComparison>]
type BlockInput =
    { Tokens: torch.Tensor
      Prefix: Prefix option
      MlpAdapter: MlpAdapter option
      Modulation: Modulation option }

module BlockInput =
    let plain (tokens: torch.Tensor) = { Tokens = tokens; Prefix = None; MlpAdapter = None; Modulation = None }

/// The backbone's injection seam, called before every block with its index and incoming tokens.
/// Prompt-tuning returns longer tokens; VPT-deep replaces earlier prompt outputs; prefix-tuning
/// returns a Prefix. One hook serves every method, so no method forks the backbone.
type BlockHook = int -> torch.Tensor -> BlockInput

module Init =
    /// PyTorch's trunc_normal_ (inverse-CDF sampling, bounds a = -2, b = 2 absolute) including its
    /// final clamp, which TorchSharp's version lacks: without it a uniform draw of exactly -1
    /// becomes -inf and poisons the model.
    let truncatedNormal (t: torch.Tensor) (std: float) =
        use _ = torch.no_grad ()
        let cdf (x: float) =
            use v = torch.tensor (x / sqrt 2.0, dtype = torch.float64)
            use e = v.erf ()
            (1.0 + e.item<double> ()) / 2.0
        let lower, upper = cdf (-2.0 / std), cdf (2.0 / std)
        t.uniform_(2.0 * lower - 1.0, 2.0 * upper - 1.0).erfinv_().mul_((std * sqrt 2.0).ToScalar()).clamp_((-2.0).ToScalar(), (2.0).ToScalar())
        |> ignore

/// Conv patch embedding: (B, C, H, W) → (B, G², D). Submodule names follow timm's keys.
type PatchEmbed(inChannels: int, width: int, patch: int) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("PatchEmbed")
    let proj = torch.nn.Conv2d(int64 inChannels, int64 width, int64 patch, stride = int64 patch)
    do this.register_module ("proj", proj)
    member _.Proj = proj

    override _.forward(images) =
        use grid = proj.forward images
        use flat = grid.flatten 2
        flat.transpose (1, 2)

/// Token rows [Start, Start + Count) of a sequence: the only rows a block computes outputs for
/// when nothing later reads the others (the last block feeds the head only its rows).
[<Struct>]
type Rows = { Start: int64; Count: int64 }

/// Multi-head self-attention with optional key/value prefixes, through scaled_dot_product_attention
/// (libtorch's fused flash-attention kernel on the CPU, forward and backward).
type Attention(width: int, heads: int) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("Attention")
    let headDim = width / heads
    let qkv = torch.nn.Linear(int64 width, int64 (3 * width), hasBias = true)
    let proj = torch.nn.Linear(int64 width, int64 width)
    do
        this.register_module ("qkv", qkv)
        this.register_module ("proj", proj)

    /// (B, L, D) → (B, H, L, hd).
    let splitHeads (t: torch.Tensor) =
        use r = t.reshape (t.shape[0], t.shape[1], int64 heads, int64 headDim)
        r.transpose (1, 2)

    /// Queries (B, H, n, hd) attend to the prefixes followed by keys and values k0, v0 (B, H, N, hd);
    /// merged back to (B, n, D) and projected.
    let attend (q: torch.Tensor) (k0: torch.Tensor) (v0: torch.Tensor) (prefix: Prefix option) =
        let b, n = q.shape[0], q.shape[2]
        use attended =
            match prefix with
            | None -> torch.nn.functional.scaled_dot_product_attention (q, k0, v0)
            | Some p ->
                use pk = splitHeads p.Key
                use pv = splitHeads p.Value
                use k = torch.cat ([| pk; k0 |], 2L)
                use v = torch.cat ([| pv; v0 |], 2L)
                torch.nn.functional.scaled_dot_product_attention (q, k, v)
        use headsLast = attended.transpose (1, 2)
        use merged = headsLast.reshape (b, n, int64 width)
        proj.forward merged

    member _.Forward(x: torch.Tensor, prefix: Prefix option, modulation: Modulation option) =
        let b, n = x.shape[0], x.shape[1]
        use packed = Modulation.apply modulation Qkv (qkv.forward x)
        use unpacked = packed.reshape (b, n, 3L, int64 heads, int64 headDim)
        use split = unpacked.permute (2L, 0L, 3L, 1L, 4L)
        // unbind, not three selects: its backward stacks the three gradients in one copy, where
        // each select's backward would fill a zero tensor of the packed size and add them up.
        let parts = split.unbind 0
        use q = parts[0]
        use k0 = parts[1]
        use v0 = parts[2]
        Modulation.apply modulation AttentionProjection (attend q k0 v0 prefix)

    /// Outputs for `rows` only: keys and values still come from every token, but queries (a third
    /// of the qkv projection), the attention rows and the output projection only for those rows.
    /// A modulation of the packed projection needs all of it, so it takes the full path and keeps the rows.
    member this.Forward(x: torch.Tensor, prefix: Prefix option, modulation: Modulation option, rows: Rows) =
        match modulation with
        | Some _ ->
            use all = this.Forward(x, prefix, modulation)
            all.narrow(1, rows.Start, rows.Count).contiguous ()
        | None -> this.RowsForward(x, prefix, rows)

    member private _.RowsForward(x: torch.Tensor, prefix: Prefix option, rows: Rows) =
        let b, n, d = x.shape[0], x.shape[1], int64 width
        use weight = qkv.weight.narrow (0, 0L, d)
        use bias = qkv.bias.narrow (0, 0L, d)
        use kvWeight = qkv.weight.narrow (0, d, 2L * d)
        use kvBias = qkv.bias.narrow (0, d, 2L * d)
        use kept = x.narrow (1, rows.Start, rows.Count)
        use queries = torch.nn.functional.linear (kept, weight, bias)
        use q = splitHeads queries
        use packed = torch.nn.functional.linear (x, kvWeight, kvBias)
        use unpacked = packed.reshape (b, n, 2L, int64 heads, int64 headDim)
        use split = unpacked.permute (2L, 0L, 3L, 1L, 4L)
        let parts = split.unbind 0
        use k0 = parts[0]
        use v0 = parts[1]
        attend q k0 v0 prefix

    override this.forward(x) = this.Forward(x, None, None)

/// fc1 → exact (erf) GELU → fc2.
type Mlp(width: int, hidden: int) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("Mlp")
    let fc1 = torch.nn.Linear(int64 width, int64 hidden)
    let act = torch.nn.GELU()
    let fc2 = torch.nn.Linear(int64 hidden, int64 width)
    do
        this.register_module ("fc1", fc1)
        this.register_module ("act", act)
        this.register_module ("fc2", fc2)

    member _.Forward(x: torch.Tensor, modulation: Modulation option) =
        use h = Modulation.apply modulation Fc1 (fc1.forward x)
        use a = act.forward h
        Modulation.apply modulation Fc2 (fc2.forward a)

    override this.forward(x) = this.Forward(x, None)

/// Pre-norm transformer block: x + attn(norm1 x), then x + mlp(norm2 x); LayerNorm eps 1e-6.
type Block(width: int, heads: int, hidden: int) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("Block")
    let norm1 = torch.nn.LayerNorm([| int64 width |], eps = 1e-6)
    let attn = new Attention(width, heads)
    let norm2 = torch.nn.LayerNorm([| int64 width |], eps = 1e-6)
    let mlp = new Mlp(width, hidden)
    do
        this.register_module ("norm1", norm1)
        this.register_module ("attn", attn)
        this.register_module ("norm2", norm2)
        this.register_module ("mlp", mlp)

    /// The block on x (B, N, D); with `rows`, the output holds only those rows (B, rows, D),
    /// computed exactly as the full block computes them.
    member _.Forward(x: torch.Tensor, prefix: Prefix option, adapter: MlpAdapter option, modulation: Modulation option, rows: Rows option) =
        use n1 = Modulation.apply modulation Norm1 (norm1.forward x)
        use a =
            match rows with
            | None -> attn.Forward(n1, prefix, modulation)
            | Some r -> attn.Forward(n1, prefix, modulation, r)
        use residual =
            match rows with
            | None -> x.alias ()
            | Some r -> x.narrow (1, r.Start, r.Count)
        use x1 = residual + a
        use n2 = Modulation.apply modulation Norm2 (norm2.forward x1)
        use m = mlp.Forward(n2, modulation)
        match adapter with
        | None -> x1 + m
        | Some f ->
            use adapted = f x1 m
            use mOut = m + adapted
            x1 + mOut

    member this.Forward(x: torch.Tensor, prefix: Prefix option, adapter: MlpAdapter option) =
        this.Forward(x, prefix, adapter, None, None)

    member this.Forward(x: torch.Tensor, prefix: Prefix option) = this.Forward(x, prefix, None, None, None)
    override this.forward(x) = this.Forward(x, None, None, None, None)

/// timm's VisionTransformer (class token, learned absolute position embedding, final norm,
/// linear head on the final-norm class token). Parameter names are timm's checkpoint keys.
type VisionTransformer(config: VitConfig) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("VisionTransformer")
    let c = VitConfig.validate config
    // Named as registered: once this model is nested in another module, TorchSharp's reflection
    // also registers module-typed fields under their field names, which would list it twice.
    let patch_embed = new PatchEmbed(c.InChannels, c.Width, c.PatchSize)
    let clsToken = torch.nn.Parameter(torch.zeros (1L, 1L, int64 c.Width))
    let posEmbed = torch.nn.Parameter(torch.zeros (1L, int64 (VitConfig.tokenCount c), int64 c.Width))
    let blocks =
        torch.nn.ModuleList<Block>([| for _ in 1 .. c.Depth -> new Block(c.Width, c.Heads, c.MlpHidden) |])
    let norm = torch.nn.LayerNorm([| int64 c.Width |], eps = 1e-6)
    /// The class token's row: all the head (and the query) reads of the last block.
    let classRow = { Start = 0L; Count = 1L }
    let head: torch.nn.Module<torch.Tensor, torch.Tensor> =
        if c.Classes > 0 then torch.nn.Linear(int64 c.Width, int64 c.Classes) else torch.nn.Identity()
    do
        this.register_module ("patch_embed", patch_embed)
        this.register_parameter ("cls_token", clsToken)
        this.register_parameter ("pos_embed", posEmbed)
        this.register_module ("blocks", blocks)
        this.register_module ("norm", norm)
        this.register_module ("head", head)
        // timm-like initialisation for models trained from scratch; checkpoints overwrite it.
        use _ = torch.no_grad ()
        for struct (name, p) in this.named_parameters () do
            if name.EndsWith ".weight" && p.dim () >= 2L then Init.truncatedNormal p 0.02
            elif name = "pos_embed" then Init.truncatedNormal p 0.02
            elif name = "cls_token" then torch.nn.init.normal_ (p, std = 1e-6) |> ignore
            elif name.StartsWith "head." then torch.nn.init.zeros_ p |> ignore

    member _.Config = c
    member _.Blocks = blocks
    member _.Head = head
    // Fetched by registered name: moving the module to another device replaces Parameter objects.
    member this.ClassToken = this.get_parameter "cls_token"
    member this.PositionEmbedding = this.get_parameter "pos_embed"

    /// Checks an image batch against the configured input before libtorch sees it.
    member this.CheckImages(images: torch.Tensor) = this.CheckImageShape images.shape

    /// Checks the shape of an image batch (N, C, S, S) against the configured input.
    member _.CheckImageShape(s: int64[]) =
        if s.Length <> 4 || s[1] <> int64 c.InChannels || s[2] <> int64 c.ImageSize || s[3] <> int64 c.ImageSize then
            Errors.fail "input: expected images of shape [N, %d, %d, %d], got %s" c.InChannels c.ImageSize c.ImageSize (Prompting.Tensors.HostTensor.shapeText s)

    /// Patch tokens with the class token prepended and position embeddings added: (B, 1+G², D);
    /// a modulation acts on the patch projection's output (SSF).
    member this.Embed(images: torch.Tensor, modulation: Modulation option) =
        this.CheckImages images
        use patches = Modulation.apply modulation PatchProjection (patch_embed.forward images)
        use cls = this.ClassToken.expand (images.shape[0], -1L, -1L)
        use tokens = torch.cat ([| cls; patches |], 1L)
        tokens + this.PositionEmbedding

    member this.Embed(images: torch.Tensor) = this.Embed(images, None)

    /// Runs blocks [first, stop) on tokens that have been through blocks [0, first), consulting
    /// the hook before each. `lastRows`, asked after the hook of block stop − 1, restricts that
    /// block's output to the rows something reads.
    member _.ForwardBlocks(tokens: torch.Tensor, first: int, stop: int, hook: BlockHook option, lastRows: (unit -> Rows) option) =
        if first < 0 || first > stop || stop > c.Depth then
            invalidArg "first" (sprintf "blocks %d..%d outside 0..%d" first stop c.Depth)
        let mutable x = tokens.alias ()
        for i in first .. stop - 1 do
            let input =
                match hook with
                | Some h -> h i x
                | None -> BlockInput.plain x
            let rows = if i = stop - 1 then lastRows |> Option.map (fun f -> f ()) else None
            let next = blocks[i].Forward(input.Tokens, input.Prefix, input.MlpAdapter, input.Modulation, rows)
            if not (obj.ReferenceEquals(input.Tokens, x)) then input.Tokens.Dispose()
            x.Dispose()
            x <- next
        x

    /// Blocks [first, Depth) as in Blocks, then the final norm: (B, N', D), or (B, rows, D).
    member this.ForwardFrom(tokens: torch.Tensor, first: int, hook: BlockHook option, lastRows: (unit -> Rows) option, modulation: Modulation option) =
        use x = this.ForwardBlocks(tokens, first, c.Depth, hook, lastRows)
        Modulation.apply modulation FinalNorm (norm.forward x)

    member this.ForwardFrom(tokens: torch.Tensor, first: int, hook: BlockHook option, lastRows: (unit -> Rows) option) =
        this.ForwardFrom(tokens, first, hook, lastRows, None)

    /// Runs the blocks (consulting the hook before each) and the final norm: (B, N', D).
    member this.ForwardTokens(tokens: torch.Tensor, hook: BlockHook option) = this.ForwardFrom(tokens, 0, hook, None)

    /// Final-norm tokens of the (optionally prompted) model.
    member this.ForwardFeatures(images: torch.Tensor, ?hook: BlockHook) =
        use tokens = this.Embed images
        this.ForwardTokens(tokens, hook)

    /// The pre-logits: final-norm class token (B, D).
    member _.PreLogits(features: torch.Tensor) = features.select (1, 0L)

    /// Head on the final-norm class token.
    member this.ForwardHead(features: torch.Tensor) =
        use cls = this.PreLogits features
        head.forward cls

    /// The final-norm class token (B, D) with the last block computed for that token only.
    member this.ClassFeatures(images: torch.Tensor) =
        use tokens = this.Embed images
        use cls = this.ForwardFrom(tokens, 0, None, Some(fun () -> classRow))
        cls.select (1, 0L)

    /// The un-prompted class token after `depth` blocks through the final norm (B, D), from tokens
    /// that have already been through blocks [0, first): computed in inference mode with nothing
    /// kept for backward, the last block for the class token only. The result is an ordinary
    /// tensor without gradient (inference tensors cannot be saved for a later backward).
    member this.QueryFrom(tokens: torch.Tensor, first: int, depth: int) =
        if depth < 1 || depth > c.Depth || first > depth then
            invalidArg "depth" (sprintf "query after %d blocks (from block %d) outside 1..%d" depth first c.Depth)
        let cls =
            use _ = torch.inference_mode ()
            use x =
                if first = depth then tokens.narrow (1, 0L, 1L)
                else this.ForwardBlocks(tokens, first, depth, None, Some(fun () -> classRow))
            use normed = norm.forward x
            normed.select (1, 0L)
        use _ = cls
        cls.clone ()

    /// The query of pool-based methods: final-norm CLS of the un-prompted model, without gradients.
    member this.Query(images: torch.Tensor) =
        use tokens = this.Embed images
        this.QueryFrom(tokens, 0, c.Depth)

    override this.forward(images) =
        use cls = this.ClassFeatures images
        head.forward cls
