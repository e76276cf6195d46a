namespace Prompting.Vit

open TorchSharp
open TorchSharp.Modules
open Prompting

/// Key/value prefixes for one block's attention, each (B, L, D): prefix-tuning's injection.
/// Each token's D-vector is split over the heads in contiguous chunks of the head width.
[<NoEquality; NoComparison>]
type Prefix = { Key: torch.Tensor; Value: torch.Tensor }

/// What a prompt method hands to one block: the (possibly extended) token sequence, prefixes, and
/// an optional adapter applied to the MLP output before the residual (Pfeiffer-style, as in VPT).
[<NoEquality; NoComparison>]
type BlockInput =
    { Tokens: torch.Tensor
      Prefix: Prefix option
      MlpAdapter: (torch.Tensor -> torch.Tensor) option }

module BlockInput =
    let plain (tokens: torch.Tensor) = { Tokens = tokens; Prefix = None; MlpAdapter = None }

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

/// Multi-head self-attention with optional key/value prefixes, through scaled_dot_product_attention.
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

    member _.Forward(x: torch.Tensor, prefix: Prefix option) =
        let b, n = x.shape[0], x.shape[1]
        use packed = qkv.forward x
        use unpacked = packed.reshape (b, n, 3L, int64 heads, int64 headDim)
        use split = unpacked.permute (2L, 0L, 3L, 1L, 4L)
        use q = split.select (0, 0L)
        use k0 = split.select (0, 1L)
        use v0 = split.select (0, 2L)
        let attend (k: torch.Tensor) (v: torch.Tensor) = torch.nn.functional.scaled_dot_product_attention (q, k, v)
        use attended =
            match prefix with
            | None -> attend k0 v0
            | Some p ->
                use pk = splitHeads p.Key
                use pv = splitHeads p.Value
                use k = torch.cat ([| pk; k0 |], 2L)
                use v = torch.cat ([| pv; v0 |], 2L)
                attend k v
        use headsLast = attended.transpose (1, 2)
        use merged = headsLast.reshape (b, n, int64 width)
        proj.forward merged

    override this.forward(x) = this.Forward(x, None)

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

    override _.forward(x) =
        use h = fc1.forward x
        use a = act.forward h
        fc2.forward a

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

    member _.Forward(x: torch.Tensor, prefix: Prefix option, adapter: (torch.Tensor -> torch.Tensor) option) =
        use n1 = norm1.forward x
        use a = attn.Forward(n1, prefix)
        use x1 = x + a
        use n2 = norm2.forward x1
        use m = mlp.forward n2
        match adapter with
        | None -> x1 + m
        | Some f ->
            use adapted = f m
            use mOut = m + adapted
            x1 + mOut

    member this.Forward(x: torch.Tensor, prefix: Prefix option) = this.Forward(x, prefix, None)
    override this.forward(x) = this.Forward(x, None, None)

/// timm's VisionTransformer (class token, learned absolute position embedding, final norm,
/// linear head on the final-norm class token). Parameter names are timm's checkpoint keys.
type VisionTransformer(config: VitConfig) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("VisionTransformer")
    let c = VitConfig.validate config
    let patchEmbed = new PatchEmbed(c.InChannels, c.Width, c.PatchSize)
    let clsToken = torch.nn.Parameter(torch.zeros (1L, 1L, int64 c.Width))
    let posEmbed = torch.nn.Parameter(torch.zeros (1L, int64 (VitConfig.tokenCount c), int64 c.Width))
    let blocks =
        torch.nn.ModuleList<Block>([| for _ in 1 .. c.Depth -> new Block(c.Width, c.Heads, c.MlpHidden) |])
    let norm = torch.nn.LayerNorm([| int64 c.Width |], eps = 1e-6)
    let head: torch.nn.Module<torch.Tensor, torch.Tensor> =
        if c.Classes > 0 then torch.nn.Linear(int64 c.Width, int64 c.Classes) else torch.nn.Identity()
    do
        this.register_module ("patch_embed", patchEmbed)
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

    /// Patch tokens with the class token prepended and position embeddings added: (B, 1+G², D).
    member this.Embed(images: torch.Tensor) =
        this.CheckImages images
        use patches = patchEmbed.forward images
        use cls = this.ClassToken.expand (images.shape[0], -1L, -1L)
        use tokens = torch.cat ([| cls; patches |], 1L)
        tokens + this.PositionEmbedding

    /// Runs the blocks (consulting the hook before each) and the final norm: (B, N', D).
    member _.ForwardTokens(tokens: torch.Tensor, hook: BlockHook option) =
        let mutable x = tokens.alias ()
        for i in 0 .. c.Depth - 1 do
            let input =
                match hook with
                | Some h -> h i x
                | None -> BlockInput.plain x
            let next = blocks[i].Forward(input.Tokens, input.Prefix, input.MlpAdapter)
            if not (obj.ReferenceEquals(input.Tokens, x)) then input.Tokens.Dispose()
            x.Dispose()
            x <- next
        let out = norm.forward x
        x.Dispose()
        out

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

    /// The query of pool-based methods: final-norm CLS of the un-prompted model, without gradients.
    member this.Query(images: torch.Tensor) =
        use _ = torch.no_grad ()
        use features = this.ForwardFeatures images
        (this.PreLogits features).detach ()

    override this.forward(images) =
        use features = this.ForwardFeatures images
        this.ForwardHead features
