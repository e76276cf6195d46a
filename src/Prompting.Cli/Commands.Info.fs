module Prompting.Cli.Commands.Info

open Argu
open Prompting.Vit
open Prompting.Cli

let private describe (ck: Checkpoint) =
    let c = ck.Config
    printfn "file        %s" ck.Path
    printfn "format      %A" ck.Format
    printfn "image size  %d (grid %d, patch %d)" c.ImageSize (VitConfig.grid c) c.PatchSize
    printfn "width       %d" c.Width
    printfn "depth       %d" c.Depth
    printfn "heads       %d" c.Heads
    printfn "mlp width   %d" c.MlpHidden
    printfn "classes     %d" c.Classes
    printfn "parameters  %d" (VitConfig.parameterCount c)

let run (args: ParseResults<InfoArgs>) =
    Checkpoint.read (args.GetResult InfoArgs.Checkpoint) (args.TryGetResult InfoArgs.Heads) |> describe
    0

let convert (args: ParseResults<ConvertArgs>) =
    let ck = Checkpoint.read (args.GetResult ConvertArgs.Checkpoint) (args.TryGetResult ConvertArgs.Heads)
    let options =
        { ImageSize = args.TryGetResult ConvertArgs.Image_Size
          Heads = args.TryGetResult ConvertArgs.Heads
          Classes = args.TryGetResult ConvertArgs.Classes }
    use model = Checkpoint.toModel options ck
    let output = args.GetResult ConvertArgs.Output
    Checkpoint.export output model
    eprintfn "wrote %s" output
    0
