namespace Prompting.Vit

open System
open System.IO
open TorchSharp
open Prompting
open Prompting.Tensors

type CheckpointFormat =
    | Safetensors
    | GoogleNpz

/// Overrides applied when a checkpoint becomes a model.
type LoadOptions =
    { /// Input resolution; position embeddings are resampled when it differs from the checkpoint's.
      ImageSize: int option
      /// Attention heads; checkpoints do not record them, so width / 64 unless given.
      Heads: int option
      /// Number of classes; a different number replaces the head with a freshly initialised one.
      Classes: int option }

module LoadOptions =
    let defaults = { ImageSize = None; Heads = None; Classes = None }

/// A checkpoint read and validated in managed memory, before any model exists.
[<NoEquality; NoComparison>]
type Checkpoint =
    { Path: string
      Format: CheckpointFormat
      /// The architecture the file describes (its own image size and classes).
      Config: VitConfig
      Tensors: Map<string, HostTensor> }

module Checkpoint =
    /// Parameter names and shapes of a model with this config, in timm's order.
    let expectedShapes (c: VitConfig) : (string * int64[]) list =
        let d, m, p = int64 c.Width, int64 c.MlpHidden, int64 c.PatchSize
        [ yield "patch_embed.proj.weight", [| d; int64 c.InChannels; p; p |]
          yield "patch_embed.proj.bias", [| d |]
          yield "cls_token", [| 1L; 1L; d |]
          yield "pos_embed", [| 1L; int64 (VitConfig.tokenCount c); d |]
          for i in 0 .. c.Depth - 1 do
              let b = sprintf "blocks.%d." i
              yield b + "norm1.weight", [| d |]
              yield b + "norm1.bias", [| d |]
              yield b + "attn.qkv.weight", [| 3L * d; d |]
              yield b + "attn.qkv.bias", [| 3L * d |]
              yield b + "attn.proj.weight", [| d; d |]
              yield b + "attn.proj.bias", [| d |]
              yield b + "norm2.weight", [| d |]
              yield b + "norm2.bias", [| d |]
              yield b + "mlp.fc1.weight", [| m; d |]
              yield b + "mlp.fc1.bias", [| m |]
              yield b + "mlp.fc2.weight", [| d; m |]
              yield b + "mlp.fc2.bias", [| d |]
          yield "norm.weight", [| d |]
          yield "norm.bias", [| d |]
          if c.Classes > 0 then
              yield "head.weight", [| int64 c.Classes; d |]
              yield "head.bias", [| int64 c.Classes |] ]

    let private listed (keys: string list) =
        let shown = keys |> List.truncate 8 |> String.concat ", "
        if keys.Length > 8 then sprintf "%s, … (%d in all)" shown keys.Length else shown

    let detectFormat (path: string) =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        let head = Array.zeroCreate<byte> 16
        let n =
            use fs = File.OpenRead path
            fs.Read(head, 0, head.Length)
        let span = ReadOnlySpan(head, 0, n)
        if Npz.isZip span then
            if path.EndsWith(".pt", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".pth", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) then
                Errors.fail "%s: a PyTorch pickle checkpoint, which is not supported; convert it to safetensors" path
            GoogleNpz
        elif n >= 8 && Safetensors.looksLike span then Safetensors
        elif n < 8 then Errors.fail "%s: truncated file (%d bytes): neither safetensors nor npz" path n
        elif path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) then Safetensors
        else Errors.fail "%s: unrecognised format: not safetensors (u64 length + JSON header) nor npz (zip)" path

    let private shapeOf (path: string) (tensors: Map<string, HostTensor>) key =
        match tensors.TryFind key with
        | Some t -> t.Shape
        | None -> Errors.fail "%s: missing key %s: cannot infer the architecture" path key

    /// The number of blocks: the distinct indices N of `blocks.N.*` keys must be 0 .. depth - 1.
    /// A huge index in one key name (`blocks.99999999.norm1.weight`) is an error here, before
    /// anything is sized by it.
    let private blockCount (path: string) (tensors: Map<string, HostTensor>) =
        let indices =
            tensors.Keys
            |> Seq.choose (fun k ->
                let parts = k.Split '.'
                if parts.Length > 2 && parts[0] = "blocks" then
                    match Int32.TryParse(parts[1], Globalization.NumberStyles.None, Globalization.CultureInfo.InvariantCulture) with
                    | true, i -> Some(i, k)
                    | _ -> None
                else None)
            |> Seq.distinctBy fst
            |> Seq.sortBy fst
            |> Array.ofSeq
        if indices.Length = 0 then Errors.fail "%s: no transformer blocks (blocks.N.*) found" path
        let highest, key = indices[indices.Length - 1]
        if highest >= indices.Length then
            let missing = indices |> Array.mapi (fun position (i, _) -> position, i) |> Array.find (fun (position, i) -> position <> i) |> fst
            Errors.fail "%s: key '%s' names block %d, but only %d distinct blocks are present (blocks.%d is missing)" path key highest indices.Length missing
        indices.Length

    /// A dimension read from a file as an int (shapes are int64 there).
    let private dimension (path: string) (key: string) (d: int64) =
        if d > int64 Int32.MaxValue then Errors.fail "%s: %s has a dimension of %d, too large" path key d
        int d

    /// Infers width, depth, patch, grid, MLP width and classes from the tensors.
    let inferConfig (path: string) (heads: int option) (tensors: Map<string, HostTensor>) =
        let patch = shapeOf path tensors "patch_embed.proj.weight"
        let pos = shapeOf path tensors "pos_embed"
        if patch.Length <> 4 || patch[2] <> patch[3] then
            Errors.fail "%s: patch_embed.proj.weight has shape %s, expected [D, C, p, p]" path (HostTensor.shapeText patch)
        if pos.Length <> 3 then Errors.fail "%s: pos_embed has shape %s, expected [1, 1 + G², D]" path (HostTensor.shapeText pos)
        let width = dimension path "patch_embed.proj.weight" patch[0]
        let gridTokens = dimension path "pos_embed" pos[1] - 1
        let grid = int (Math.Round(sqrt (float gridTokens)))
        if grid * grid <> gridTokens then
            Errors.fail "%s: pos_embed has %d patch positions, not a square grid" path gridTokens
        let depth = blockCount path tensors
        let mlp =
            match tensors.TryFind "blocks.0.mlp.fc1.weight" with
            | Some t when t.Shape.Length > 0 -> dimension path "blocks.0.mlp.fc1.weight" t.Shape[0]
            | _ -> 4 * width
        let classes =
            match tensors.TryFind "head.weight" with
            | Some t when t.Shape.Length > 0 -> dimension path "head.weight" t.Shape[0]
            | _ -> 0
        let heads = defaultArg heads (max 1 (width / 64))
        if heads < 1 then Errors.fail "%s: %d attention heads (recorded or given): must be at least 1" path heads
        if width % heads <> 0 then
            Errors.fail "%s: width %d is not divisible by %d heads (pass the number of heads)" path width heads
        let validate c =
            try VitConfig.validate c
            with PromptingError m -> Errors.fail "%s: %s" path m
        validate
            { ImageSize = dimension path "patch_embed.proj.weight" (int64 grid * patch[2])
              PatchSize = dimension path "patch_embed.proj.weight" patch[2]
              InChannels = dimension path "patch_embed.proj.weight" patch[1]
              Width = width
              Depth = depth
              Heads = heads
              MlpHidden = mlp
              Classes = classes }

    /// Reads a safetensors or Google .npz checkpoint and validates every key and shape.
    /// Nothing is allocated in libtorch for the model until this succeeds.
    let read (path: string) (heads: int option) : Checkpoint =
        let format = detectFormat path
        let raw, recordedHeads =
            match format with
            | Safetensors ->
                let tensors, metadata = Safetensors.readWithMetadata path
                tensors, metadata.TryFind "heads" |> Option.bind (fun h -> match Int32.TryParse h with | true, v -> Some v | _ -> None)
            | GoogleNpz -> KeyMap.fromGoogle path (Npz.read path), None
        // Our own exports record the head count; other files fall back to width / 64.
        let heads = Option.orElse recordedHeads heads
        let tensors = raw |> List.filter (fst >> KeyMap.isIgnored >> not) |> Map.ofList
        let config = inferConfig path heads tensors
        let expected = expectedShapes config
        let expectedNames = expected |> List.map fst |> Set.ofList
        let missing = expected |> List.map fst |> List.filter (tensors.ContainsKey >> not)
        let unexpected = tensors.Keys |> Seq.filter (expectedNames.Contains >> not) |> List.ofSeq
        match missing, unexpected with
        | [], [] -> ()
        | m, [] -> Errors.fail "%s: missing keys: %s" path (listed m)
        | [], u -> Errors.fail "%s: unexpected keys: %s" path (listed u)
        | m, u -> Errors.fail "%s: missing keys: %s; unexpected keys: %s" path (listed m) (listed u)
        for name, shape in expected do
            let found = tensors[name].Shape
            if found <> shape then
                Errors.fail "%s: shape mismatch for %s: expected %s, found %s" path name (HostTensor.shapeText shape) (HostTensor.shapeText found)
        { Path = path; Format = format; Config = config; Tensors = tensors }

    /// timm's resample_abs_pos_embed: bicubic (antialiased) over the patch grid, class token kept.
    let resamplePosEmbed (posEmbed: torch.Tensor) (newGrid: int) =
        let width = posEmbed.shape[2]
        let oldGrid = int (Math.Round(sqrt (float (posEmbed.shape[1] - 1L))))
        if oldGrid = newGrid then
            posEmbed.clone ()
        else
            use cls = posEmbed.narrow (1, 0L, 1L)
            use grid = posEmbed.narrow (1, 1L, int64 (oldGrid * oldGrid))
            use image = grid.reshape(1L, int64 oldGrid, int64 oldGrid, width).permute (0L, 3L, 1L, 2L)
            use resized =
                torch.nn.functional.interpolate (
                    image,
                    size = [| int64 newGrid; int64 newGrid |],
                    mode = torch.InterpolationMode.Bicubic,
                    align_corners = false,
                    antialias = true
                )
            use back = resized.permute(0L, 2L, 3L, 1L).reshape (1L, int64 (newGrid * newGrid), width)
            torch.cat ([| cls; back |], 1L)

    /// Builds a model from a validated checkpoint (on the CPU), applying the overrides.
    let toModel (options: LoadOptions) (ck: Checkpoint) : VisionTransformer =
        let imageSize = defaultArg options.ImageSize ck.Config.ImageSize
        if imageSize % ck.Config.PatchSize <> 0 then
            Errors.fail "image size %d is not a multiple of the checkpoint's patch size %d" imageSize ck.Config.PatchSize
        let classes = defaultArg options.Classes ck.Config.Classes
        let target = VitConfig.validate { ck.Config with ImageSize = imageSize; Classes = classes }
        let model = new VisionTransformer(target)
        use _ = torch.no_grad ()
        for KeyValue(name, p) in model.state_dict () do
            let keepFresh = name.StartsWith "head." && classes <> ck.Config.Classes
            if not keepFresh then
                use source = HostTensor.toTensor ck.Tensors[name]
                if name = "pos_embed" then
                    use resampled = resamplePosEmbed source (VitConfig.grid target)
                    p.copy_ resampled |> ignore
                else
                    p.copy_ source |> ignore
        model

    /// Reads, validates and builds in one step.
    let load (path: string) (options: LoadOptions) =
        read path options.Heads |> toModel options

    /// Writes the model's state under timm's names, atomically.
    let export (path: string) (model: VisionTransformer) =
        let c = model.Config
        let metadata =
            Map.ofList
                [ "format", "pt"
                  "producer", "Prompting"
                  "image_size", string c.ImageSize
                  "heads", string c.Heads ]
        let tensors = [ for KeyValue(name, t) in model.state_dict () -> name, HostTensor.ofTensor t ]
        Tensors.Safetensors.writeWithMetadata path metadata tensors
