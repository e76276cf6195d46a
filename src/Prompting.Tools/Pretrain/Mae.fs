namespace Prompting.Pretrain

open System
open TorchSharp
open TorchSharp.Modules
open Prompting
open Prompting.Vit

/// Which patches of each image the encoder sees. Patches are numbered row-major over the grid,
/// as the patch embedding flattens them.
[<NoEquality; NoComparison>]
type Masking =
    { /// (B, keep) the visible patches of each image, in the order its noise ranks them.
      Keep: torch.Tensor
      /// (B, L) float: 1 where the patch is hidden (the loss is computed there), 0 where visible.
      Hidden: torch.Tensor
      /// (B, L) where each patch sits in that image's [visible; hidden] order (undoes the shuffle).
      Restore: torch.Tensor }

    interface IDisposable with
        member m.Dispose() =
            m.Keep.Dispose()
            m.Hidden.Dispose()
            m.Restore.Dispose()

module Masking =
    /// MAE's per-sample random masking: each image ranks its own noise (B, L); the `keep` patches
    /// with the lowest noise are visible, the others hidden.
    let ofNoise (noise: torch.Tensor) (keep: int) =
        if noise.dim () <> 2L then Errors.fail "masking: noise must be (batch, patches), got %d dimensions" (noise.dim ())
        let patches = noise.shape[1]
        if keep < 1 || int64 keep >= patches then Errors.fail "masking: %d visible of %d patches (need 1 .. %d)" keep patches (patches - 1L)
        use shuffle = noise.argsort (1L, false)
        let restore = shuffle.argsort (1L, false)
        let visible = shuffle.narrow(1, 0L, int64 keep).contiguous ()
        use ordered = torch.ones (noise.shape, dtype = torch.float32, device = noise.device)
        ordered.narrow(1, 0L, int64 keep).zero_ () |> ignore
        let hidden = ordered.gather (1L, restore)
        { Keep = visible; Hidden = hidden; Restore = restore }

    /// Fresh masks for a batch: uniform noise from `generator` (on the CPU, so a seed gives the same
    /// masks on every device), then moved to `device`.
    let random (generator: torch.Generator) (batch: int) (patches: int) (keep: int) (device: torch.Device) =
        use noise = torch.rand ([| int64 batch; int64 patches |], generator = generator)
        use onDevice = noise.``to`` device
        ofNoise onDevice keep

/// The pieces of MAE's objective, separately testable.
module Mae =
    /// (B, C, H, W) → (B, L, p·p·C): patch (i, j) row-major, inside it rows, columns, then channels
    /// (MAE's patchify).
    let patchify (patch: int) (images: torch.Tensor) =
        let b, c, h, w = images.shape[0], images.shape[1], images.shape[2], images.shape[3]
        let p = int64 patch
        if h % p <> 0L || w % p <> 0L then Errors.fail "patchify: images of %dx%d are not a multiple of patch %d" w h patch
        use grid = images.reshape (b, c, h / p, p, w / p, p)
        use ordered = grid.permute (0L, 2L, 4L, 3L, 5L, 1L)
        ordered.reshape (b, (h / p) * (w / p), p * p * c)

    /// The per-patch target: normalised by the patch's own mean and (unbiased) variance when asked.
    let target (normalise: bool) (patches: torch.Tensor) =
        if not normalise then patches.alias ()
        else
            use mean = patches.mean ([| -1L |], keepdim = true)
            use var = patches.var (-1L, true, true)
            use centred = patches - mean
            use std = (var + 1e-6).sqrt ()
            centred / std

    /// Mean squared error per patch, averaged over the hidden patches only: Σ hidden·mse / Σ hidden.
    let maskedLoss (prediction: torch.Tensor) (target: torch.Tensor) (hidden: torch.Tensor) =
        use diff = prediction - target
        use squared = diff.square ()
        use perPatch = squared.mean ([| -1L |])
        use weighted = perPatch * hidden
        use total = weighted.sum ()
        use count = hidden.sum ()
        total / count

    /// MAE's fixed 2-D sine-cosine position embedding, (1 + G², D) with a zero row for the class
    /// token: the first half of D encodes the column, the second half the row.
    let sinCosPositions (width: int) (grid: int) : float32[] =
        if width % 4 <> 0 then Errors.fail "sine-cosine position embedding: width %d is not a multiple of 4" width
        let quarter = width / 4
        let omega = Array.init quarter (fun i -> 1.0 / Math.Pow(10000.0, float i / float quarter))
        let out = Array.zeroCreate<float32> ((1 + grid * grid) * width)
        for row in 0 .. grid - 1 do
            for col in 0 .. grid - 1 do
                let start = (1 + row * grid + col) * width
                let encode (offset: int) (position: int) =
                    for i in 0 .. quarter - 1 do
                        out[start + offset + i] <- float32 (sin (float position * omega[i]))
                        out[start + offset + quarter + i] <- float32 (cos (float position * omega[i]))
                encode 0 col
                encode (width / 2) row
        out

/// A masked autoencoder around a timm-named VisionTransformer encoder: the encoder sees only the
/// visible patches (plus the class token); a light decoder fills in mask tokens and predicts the
/// pixels of every patch; the loss is taken on the hidden ones. Only the encoder is kept.
type MaskedAutoencoder(config: MaeConfig) as this =
    inherit torch.nn.Module("MaskedAutoencoder")
    let c = MaeConfig.validate config
    let e = c.Encoder
    let patches = VitConfig.patchCount e
    let pixelsPerPatch = e.PatchSize * e.PatchSize * e.InChannels
    let encoder = new VisionTransformer(e)
    let decoderEmbed = torch.nn.Linear(int64 e.Width, int64 c.DecoderWidth)
    let maskToken = torch.nn.Parameter(torch.zeros (1L, 1L, int64 c.DecoderWidth))
    let decoderBlocks =
        torch.nn.ModuleList<Block>([| for _ in 1 .. c.DecoderDepth -> new Block(c.DecoderWidth, c.DecoderHeads, 4 * c.DecoderWidth) |])
    let decoderNorm = torch.nn.LayerNorm([| int64 c.DecoderWidth |], eps = 1e-6)
    let decoderPred = torch.nn.Linear(int64 c.DecoderWidth, int64 pixelsPerPatch)
    let decoderPositions =
        torch.tensor (Mae.sinCosPositions c.DecoderWidth (VitConfig.grid e), ReadOnlySpan<int64> [| 1L; int64 patches + 1L; int64 c.DecoderWidth |])
    do
        this.register_module ("encoder", encoder)
        this.register_module ("decoder_embed", decoderEmbed)
        this.register_parameter ("mask_token", maskToken)
        this.register_module ("decoder_blocks", decoderBlocks)
        this.register_module ("decoder_norm", decoderNorm)
        this.register_module ("decoder_pred", decoderPred)
        this.register_buffer ("decoder_pos_embed", decoderPositions)
        // MAE's initialisation: fixed sine-cosine positions in the encoder (not trained), Xavier
        // linear layers and patch projection, N(0, 0.02) class and mask tokens, zero biases.
        use _ = torch.no_grad ()
        use positions = torch.tensor (Mae.sinCosPositions e.Width (VitConfig.grid e), ReadOnlySpan<int64> [| 1L; int64 patches + 1L; int64 e.Width |])
        encoder.PositionEmbedding.copy_ positions |> ignore
        encoder.PositionEmbedding.requires_grad <- false
        for struct (name, p) in this.named_parameters () do
            if name.EndsWith ".weight" && p.dim () >= 2L then
                use flat = p.view (p.shape[0], -1L)
                torch.nn.init.xavier_uniform_ flat |> ignore
            elif name.EndsWith ".bias" && not (name.Contains "norm") then torch.nn.init.zeros_ p |> ignore
        torch.nn.init.normal_ (encoder.ClassToken, std = 0.02) |> ignore
        torch.nn.init.normal_ (maskToken, std = 0.02) |> ignore

    member _.Config = c
    member _.Encoder = encoder
    member _.Patches = patches
    member _.VisiblePatches = MaeConfig.visiblePatches c

    /// Final-norm tokens of the class token and the visible patches: (B, 1 + keep, D).
    member _.Encode(images: torch.Tensor, masking: Masking) =
        use tokens = encoder.Embed images
        use cls = tokens.narrow (1, 0L, 1L)
        use all = tokens.narrow (1, 1L, int64 patches)
        use index = masking.Keep.unsqueeze(-1).expand (-1L, -1L, int64 e.Width)
        use visible = all.gather (1L, index)
        use sequence = torch.cat ([| cls; visible |], 1L)
        encoder.ForwardTokens(sequence, None)

    /// Predicted pixels of every patch (B, L, p·p·C) from the encoded visible tokens.
    member this.Decode(latent: torch.Tensor, masking: Masking) =
        let b = latent.shape[0]
        let keep = latent.shape[1] - 1L
        use embedded = decoderEmbed.forward latent
        use cls = embedded.narrow (1, 0L, 1L)
        use visible = embedded.narrow (1, 1L, keep)
        use masks = maskToken.expand (b, int64 patches - keep, -1L)
        use shuffled = torch.cat ([| visible; masks |], 1L)
        use index = masking.Restore.unsqueeze(-1).expand (-1L, -1L, int64 c.DecoderWidth)
        use ordered = shuffled.gather (1L, index)
        use sequence = torch.cat ([| cls; ordered |], 1L)
        // The registered buffer itself (moved with the module): not disposed here.
        let positions = this.get_buffer "decoder_pos_embed"
        let mutable x = sequence + positions
        for block in decoderBlocks do
            let next = block.forward x
            x.Dispose()
            x <- next
        use normed = decoderNorm.forward x
        x.Dispose()
        use predicted = decoderPred.forward normed
        predicted.narrow(1, 1L, int64 patches).contiguous ()

    /// The reconstruction loss of a batch under the given masks.
    member this.Loss(images: torch.Tensor, masking: Masking) =
        use latent = this.Encode(images, masking)
        use prediction = this.Decode(latent, masking)
        use pixels = Mae.patchify e.PatchSize images
        use target = Mae.target c.NormalisePixels pixels
        Mae.maskedLoss prediction target masking.Hidden
