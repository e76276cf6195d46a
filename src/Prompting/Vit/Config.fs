namespace Prompting.Vit

open Prompting

/// Architecture of a plain timm-style ViT: pure data, no tensors.
type VitConfig =
    { ImageSize: int
      PatchSize: int
      InChannels: int
      Width: int
      Depth: int
      Heads: int
      MlpHidden: int
      Classes: int }

module VitConfig =
    let grid (c: VitConfig) = c.ImageSize / c.PatchSize
    let patchCount (c: VitConfig) = grid c * grid c
    /// Class token plus patches.
    let tokenCount (c: VitConfig) = patchCount c + 1
    let headDim (c: VitConfig) = c.Width / c.Heads

    let validate (c: VitConfig) =
        let positive name v = if v <= 0 then Errors.fail "ViT config: %s must be positive, got %d" name v
        positive "image size" c.ImageSize
        positive "patch size" c.PatchSize
        positive "width" c.Width
        positive "depth" c.Depth
        positive "heads" c.Heads
        positive "MLP width" c.MlpHidden
        if c.Classes < 0 then Errors.fail "ViT config: classes must be >= 0, got %d" c.Classes
        if c.ImageSize % c.PatchSize <> 0 then
            Errors.fail "ViT config: image size %d is not a multiple of patch size %d" c.ImageSize c.PatchSize
        if c.Width % c.Heads <> 0 then
            Errors.fail "ViT config: width %d is not divisible by %d heads" c.Width c.Heads
        c

    /// A custom size for small research and test models; MLP width is 4 × width.
    let custom imageSize patchSize depth width heads classes =
        validate
            { ImageSize = imageSize
              PatchSize = patchSize
              InChannels = 3
              Width = width
              Depth = depth
              Heads = heads
              MlpHidden = 4 * width
              Classes = classes }

    /// timm's architecture presets (patch 16, 224 px, ImageNet-1k head).
    let presets: (string * VitConfig) list =
        [ "vit-tiny-patch16-224", custom 224 16 12 192 3 1000
          "vit-small-patch16-224", custom 224 16 12 384 6 1000
          "vit-base-patch16-224", custom 224 16 12 768 12 1000
          "vit-large-patch16-224", custom 224 16 24 1024 16 1000 ]

    /// Accepts "vit-base", "vit-base-patch16-224" or timm's "vit_base_patch16_224".
    let preset (name: string) =
        let key = name.Trim().ToLowerInvariant().Replace('_', '-')
        presets
        |> List.tryFind (fun (n, _) -> n = key || n.StartsWith(key + "-patch16"))
        |> function
            | Some(_, c) -> c
            | None ->
                Errors.fail "architecture %s: unknown preset, expected one of %s" name (presets |> List.map fst |> String.concat ", ")

    /// Number of parameters of the model this config describes.
    let parameterCount (c: VitConfig) =
        let d, m, p = int64 c.Width, int64 c.MlpHidden, int64 c.PatchSize
        let patch = d * int64 c.InChannels * p * p + d
        let embed = d + int64 (tokenCount c) * d
        let block = 4L * d + (3L * d * d + 3L * d) + (d * d + d) + (m * d + m) + (d * m + d)
        let head = if c.Classes > 0 then int64 c.Classes * d + int64 c.Classes else 0L
        patch + embed + int64 c.Depth * block + 2L * d + head
