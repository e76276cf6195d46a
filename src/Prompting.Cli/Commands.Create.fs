module Prompting.Cli.Commands.Create

open Argu
open TorchSharp
open Prompting
open Prompting.Vit
open Prompting.Cli

/// Writes a randomly initialised ViT (a preset or a custom size) as a timm-named safetensors file.
let run (args: ParseResults<CreateArgs>) =
    let custom () =
        let get (value: int option) name =
            match value with
            | Some v -> v
            | None -> Errors.fail "create: --%s is required for a custom architecture" name
        VitConfig.custom
            (get (args.TryGetResult CreateArgs.Image_Size) "image-size")
            (get (args.TryGetResult CreateArgs.Patch_Size) "patch-size")
            (get (args.TryGetResult CreateArgs.Depth) "depth")
            (get (args.TryGetResult CreateArgs.Width) "width")
            (get (args.TryGetResult CreateArgs.Heads) "heads")
            (args.GetResult(CreateArgs.Classes, defaultValue = 1000))
    let config =
        match args.TryGetResult CreateArgs.Arch with
        | Some "custom"
        | None -> custom ()
        | Some name ->
            let preset = VitConfig.preset name
            { preset with
                ImageSize = args.GetResult(CreateArgs.Image_Size, defaultValue = preset.ImageSize)
                Classes = args.GetResult(CreateArgs.Classes, defaultValue = preset.Classes) }
            |> VitConfig.validate
    torch.manual_seed (int64 (args.GetResult(CreateArgs.Seed, defaultValue = 0))) |> ignore
    use model = new VisionTransformer(config)
    let output = args.GetResult CreateArgs.Output
    Checkpoint.export output model
    eprintfn "wrote %s (%d parameters)" output (VitConfig.parameterCount config)
    0
