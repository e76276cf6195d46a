namespace Prompting.Prompts

open Prompting.Vit

/// Trainable parameters of a method, split the way papers report them.
type ParameterCounts =
    { /// Prompts, keys and attention vectors of every group.
      PromptsAndKeys: int64
      /// Adapters, SSF, trained backbone parameters and hidden layers of an MLP head.
      Other: int64
      /// The classifier layer.
      Head: int64
      Total: int64 }

/// Parameter counts from the configuration alone (no model is built, so ViT-L costs nothing).
/// The test matrix checks them against built models.
module Counting =
    let groupParameters (c: VitConfig) (g: PromptGroup) =
        let n = int64 (PromptGroup.layers c.Depth g).Length
        let s, d = int64 (PromptGroup.storedLength g), int64 c.Width
        match g.Source with
        | Static -> n * s * d
        | Keyed k ->
            let m = int64 k.PoolSize
            n * m * s * d + (if k.KeysPerLayer then n * m * d else m * d)
        | Components a ->
            let m = int64 a.Components
            n * (m * s * d + 2L * m * d)
        | Quantised q ->
            let m = int64 q.PoolSize
            n * (m * s * d + m * d)

    /// Backbone parameters a method trains (the backbone's own head is never used).
    let backboneParameters (c: VitConfig) (training: BackboneTraining) =
        let d, m = int64 c.Width, int64 c.MlpHidden
        let block = 4L * d + (3L * d * d + 3L * d) + (d * d + d) + (m * d + m) + (d * m + d)
        match training with
        | Frozen -> 0L
        | FullBackbone -> VitConfig.parameterCount { c with Classes = 0 }
        | LastBlocks k -> int64 (min k c.Depth) * block + 2L * d
        | BiasTerms ->
            // patch embedding, per block norm1, qkv, proj, norm2, fc1, fc2 biases, final norm
            d + int64 c.Depth * (d + 3L * d + d + d + m + d) + d

    let count (method: Method) (c: VitConfig) (classes: int) =
        let d, k = int64 c.Width, int64 classes
        let prompts = method.Groups |> List.sumBy (groupParameters c)
        let hidden =
            match method.Head with
            | MlpHead layers -> int64 layers * (d * d + d)
            | _ -> 0L
        let adapters =
            match method.AdapterReduction with
            | Some r ->
                let b = int64 (max 1 (c.Width / r))
                int64 c.Depth * (d * b + b + b * d + d)
            | None -> 0L
        let parallelAdapters =
            match method.ParallelAdapter with
            | Some a ->
                let b = int64 a.Bottleneck
                int64 c.Depth * (d * b + b + b * d + d)
            | None -> 0L
        let scaleShift =
            match method.ScaleShift with
            // Patch projection, final norm, and per block norm1, qkv (3D), proj, norm2, fc1 (MLP width), fc2.
            | Some _ -> 2L * (2L * d + int64 c.Depth * (7L * d + int64 c.MlpHidden))
            | None -> 0L
        let other = hidden + adapters + parallelAdapters + scaleShift + backboneParameters c method.Backbone
        let head =
            match method.Head with
            | PrototypeHead -> 0L
            | CosineHead -> d * k + 1L
            | _ -> d * k + k
        { PromptsAndKeys = prompts
          Other = other
          Head = head
          Total = prompts + other + head }
