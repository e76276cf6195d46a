namespace Prompting.Pretrain

open Prompting
open Prompting.Vit

/// Self-supervised masked-image-modelling pretraining (MAE-style) of a small ViT: pure data, no
/// tensors. Everything that changes the resulting weights is here, so a hash of this record (plus
/// the identity of the images) names the cached backbone.
type MaeConfig =
    { /// The encoder that becomes the backbone (Classes = 0: no head).
      Encoder: VitConfig
      DecoderWidth: int
      DecoderDepth: int
      DecoderHeads: int
      /// Share of patches hidden from the encoder, per image.
      MaskRatio: float
      /// Reconstruct each patch's pixels normalised by that patch's own mean and variance (MAE's
      /// norm_pix_loss), which makes the encoder model structure rather than brightness.
      NormalisePixels: bool
      Epochs: int
      BatchSize: int
      /// Peak learning rate of AdamW (β = 0.9, 0.95), reached after the warm-up, then cosine to 0.
      LearningRate: float
      WarmupEpochs: float
      WeightDecay: float
      /// Training images used at most (a seeded subset when the split is larger); None: all.
      Images: int option
      /// RandomResizedCrop's smallest area fraction (MAE uses 0.2); 1.0 turns cropping off.
      CropScaleMin: float
      HorizontalFlip: bool
      Seed: int }

module MaeConfig =
    /// The demo's backbone: 28 px Fashion-MNIST, 7 × 7 patches of 4 px, 5 blocks (DualPrompt and
    /// CODA-Prompt insert prompts into blocks 0-4). Chosen by the measurements in docs/demo.md.
    let demo =
        { Encoder = VitConfig.custom 28 4 5 96 3 0
          DecoderWidth = 64
          DecoderDepth = 2
          DecoderHeads = 2
          MaskRatio = 0.75
          NormalisePixels = true
          Epochs = 3
          BatchSize = 128
          LearningRate = 1.5e-3
          WarmupEpochs = 0.5
          WeightDecay = 0.05
          Images = Some 20000
          CropScaleMin = 0.2
          HorizontalFlip = true
          Seed = 0 }

    /// Patches the encoder sees per image: at least one is kept and at least one is hidden.
    let visiblePatches (c: MaeConfig) =
        let patches = VitConfig.patchCount c.Encoder
        max 1 (min (patches - 1) (int (float patches * (1.0 - c.MaskRatio))))

    /// Checks every field, naming the option a user would change.
    let validate (c: MaeConfig) =
        VitConfig.validate c.Encoder |> ignore
        if c.Encoder.Classes <> 0 then Errors.fail "pretrain: the encoder has no head (classes must be 0, got %d)" c.Encoder.Classes
        if c.Encoder.InChannels <> 3 then Errors.fail "pretrain: the encoder must take 3 channels, got %d" c.Encoder.InChannels
        if VitConfig.patchCount c.Encoder < 2 then
            Errors.fail "pretrain: --image-size %d with --patch-size %d gives %d patch(es); masking needs at least 2"
                c.Encoder.ImageSize c.Encoder.PatchSize (VitConfig.patchCount c.Encoder)
        let positive name v = if v <= 0 then Errors.fail "pretrain: --%s must be positive, got %d" name v
        positive "decoder-width" c.DecoderWidth
        positive "decoder-depth" c.DecoderDepth
        positive "decoder-heads" c.DecoderHeads
        positive "epochs" c.Epochs
        positive "batch-size" c.BatchSize
        // The fixed sine-cosine position embeddings split the width into four equal parts.
        if c.Encoder.Width % 4 <> 0 then Errors.fail "pretrain: --width %d must be a multiple of 4" c.Encoder.Width
        if c.DecoderWidth % 4 <> 0 then Errors.fail "pretrain: --decoder-width %d must be a multiple of 4" c.DecoderWidth
        if c.DecoderWidth % c.DecoderHeads <> 0 then
            Errors.fail "pretrain: --decoder-width %d is not divisible by --decoder-heads %d" c.DecoderWidth c.DecoderHeads
        if not (c.MaskRatio > 0.0 && c.MaskRatio < 1.0) then
            Errors.fail "pretrain: --mask-ratio %g must be between 0 and 1 (exclusive)" c.MaskRatio
        if not (c.LearningRate > 0.0) then Errors.fail "pretrain: --lr %g must be positive" c.LearningRate
        if c.WarmupEpochs < 0.0 || c.WarmupEpochs > float c.Epochs then
            Errors.fail "pretrain: warm-up of %g epochs must lie between 0 and --epochs %d" c.WarmupEpochs c.Epochs
        if c.WeightDecay < 0.0 then Errors.fail "pretrain: weight decay %g must not be negative" c.WeightDecay
        match c.Images with
        | Some n when n < 1 -> Errors.fail "pretrain: --images %d must be at least 1" n
        | _ -> ()
        if not (c.CropScaleMin > 0.0 && c.CropScaleMin <= 1.0) then
            Errors.fail "pretrain: --crop-scale %g must be in (0, 1]" c.CropScaleMin
        c
