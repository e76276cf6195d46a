module Prompting.Cli.Commands.Methods

open System
open Argu
open TorchSharp
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Prompts
open Prompting.Cli

/// One line per method: name, prompts and keys, other, head, total (trainable parameters).
let list (args: ParseResults<MethodsArgs>) =
    let tasks = args.GetResult(MethodsArgs.Tasks, defaultValue = 10)
    let classes = args.GetResult(MethodsArgs.Classes, defaultValue = 100)
    if tasks <= 0 || classes < tasks then Errors.fail "--tasks %d and --classes %d: need 1 <= tasks <= classes" tasks classes
    let config =
        match args.TryGetResult MethodsArgs.Checkpoint, args.TryGetResult MethodsArgs.Arch with
        | Some _, Some _ -> Errors.fail "methods: give --checkpoint or --arch, not both"
        | Some path, None -> (Checkpoint.read path (args.TryGetResult MethodsArgs.Heads)).Config
        | None, arch -> VitConfig.preset (defaultArg arch "vit-base-patch16-224")
    eprintfn "%-16s %14s %12s %10s %12s   (trainable parameters; width %d, depth %d, %d tasks, %d classes)"
        "method" "prompts+keys" "other" "head" "total" config.Width config.Depth tasks classes
    if args.Contains MethodsArgs.Details then
        for m in Methods.all tasks do
            printfn "%s" (Describe.methodLine m)
    else
        for m in Methods.all tasks do
            let n = Counting.count m config classes
            printfn "%-16s %14d %12d %10d %12d" m.Name n.PromptsAndKeys n.Other n.Head n.Total
    0

let private scalar (t: torch.Tensor) = HostTensor.create [||] [| t.detach().cpu().item<float32> () |]

/// A prompted forward pass on an array, written to an .npz (features, logits, losses, choices).
let forward (args: ParseResults<ForwardArgs>) =
    let state = args.TryGetResult ForwardArgs.State
    let stateHead =
        state |> Option.bind (fun path -> Safetensors.read path |> List.tryFind (fst >> (=) "head.fc.weight") |> Option.map (fun (_, t) -> int t.Shape[0]))
    let tasks = args.GetResult(ForwardArgs.Tasks, defaultValue = 10)
    let classes = args.GetResult(ForwardArgs.Classes, defaultValue = defaultArg stateHead 100)
    let method = Methods.find (args.GetResult ForwardArgs.Method) tasks
    let device = Devices.parse (args.GetResult(ForwardArgs.Device, defaultValue = "auto"))
    let input = Npy.read (args.GetResult ForwardArgs.Input)
    let labels = args.TryGetResult ForwardArgs.Labels |> Option.map Npy.read
    let size = if input.Shape.Length = 4 then Some(int input.Shape[2]) else None
    torch.manual_seed (int64 (args.GetResult(ForwardArgs.Seed, defaultValue = 0))) |> ignore
    let backbone = Checkpoint.load (args.GetResult ForwardArgs.Checkpoint) { LoadOptions.defaults with Heads = args.TryGetResult ForwardArgs.Heads; ImageSize = size }
    use model = PromptedModel.build method (TaskLayout.uniform tasks classes) backbone
    state |> Option.iter (fun path -> TrainableState.load path model)
    args.TryGetResult ForwardArgs.Task |> Option.iter model.RestoreTask
    model.``to`` device |> ignore
    let training = args.Contains ForwardArgs.Train
    if training then model.train () else model.eval ()
    backbone.CheckImageShape input.Shape
    use scope = torch.NewDisposeScope()
    use _ = if training then null else torch.no_grad ()
    let images = (HostTensor.toTensor input).``to`` device
    let output = model.Forward(images, training)
    let members =
        [ yield "features", HostTensor.ofTensor output.Features
          yield "logits", HostTensor.ofTensor output.Logits
          yield "aux_loss", scalar output.AuxLoss
          match labels with
          | Some l ->
              if l.Shape <> [| input.Shape[0] |] then
                  Errors.fail "--labels: expected shape [%d], got %s" input.Shape[0] (HostTensor.shapeText l.Shape)
              let target = (torch.tensor (l.Values |> Array.map int64)).``to`` device
              yield "loss", scalar (Loss.total model output target)
          | None -> ()
          match output.Chosen with
          | Some c -> yield "chosen", HostTensor.ofTensor (c.to_type torch.float32)
          | None -> () ]
    let path = args.GetResult ForwardArgs.Output
    Npz.write path members
    eprintfn "wrote %s (%s)" path (String.Join(", ", members |> List.map fst))
    0
