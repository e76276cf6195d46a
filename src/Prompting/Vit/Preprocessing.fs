namespace Prompting.Vit

/// Evaluation preprocessing metadata of a checkpoint, kept apart from the architecture (as timm does).
type Preprocessing =
    { /// Shorter side is resized to size / CropPct (floored) before the center crop.
      CropPct: float
      Mean: float32[]
      Std: float32[] }

module Preprocessing =
    /// AugReg ViTs (the ../shared ViT-Ti among them): crop_pct 0.9, mean = std = 0.5.
    let augreg =
        { CropPct = 0.9
          Mean = [| 0.5f; 0.5f; 0.5f |]
          Std = [| 0.5f; 0.5f; 0.5f |] }

    /// The usual ImageNet statistics, for checkpoints trained with them.
    let imagenet =
        { CropPct = 0.875
          Mean = [| 0.485f; 0.456f; 0.406f |]
          Std = [| 0.229f; 0.224f; 0.225f |] }

    /// timm: scale_size = floor(img_size / crop_pct).
    let resizeTarget (imageSize: int) (p: Preprocessing) = int (floor (float imageSize / p.CropPct))
