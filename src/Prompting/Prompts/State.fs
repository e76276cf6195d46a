namespace Prompting.Prompts

open System
open TorchSharp
open Prompting
open Prompting.Tensors

/// Saving and loading a prompted model's trainable state (prompts, keys, head, adapters and any
/// trained backbone part) as safetensors under the model's stable submodule names.
module TrainableState =
    /// Every tensor that a method changes: all parameters outside the backbone, the head's
    /// buffers, and the backbone parameters the method trains. The frozen pretrained copy (APER)
    /// is the checkpoint itself, so it is not state.
    let tensors (model: PromptedModel) =
        let isBackbone (name: string) = name.StartsWith "backbone." || name.StartsWith "pretrained."
        [ for struct (name, p) in model.named_parameters () do
              if not (isBackbone name) || p.requires_grad then yield name, (p :> torch.Tensor)
          for struct (name, b) in model.named_buffers () do
              if not (isBackbone name) then yield name, b ]

    let save (path: string) (model: PromptedModel) =
        let metadata =
            Map.ofList
                [ "format", "pt"
                  "producer", "Prompting"
                  "method", model.Method.Name
                  "task", string model.Task ]
        Safetensors.writeWithMetadata path metadata [ for name, t in tensors model -> name, HostTensor.ofTensor t ]

    /// Loads a file written by `save` (or by hand with the same names); the method it records (if
    /// any) and every name and shape must match, and nothing is changed unless all of them do.
    let load (path: string) (model: PromptedModel) =
        let loaded, metadata = Safetensors.readWithMetadata path
        // Methods can share tensor names and shapes (l2p and l2p-jax, full and joint) yet mean
        // different things by them, so a recorded method must be the model's own.
        match metadata.TryFind "method" with
        | Some saved when saved <> model.Method.Name ->
            Errors.fail "%s: trainable state of method %s cannot be loaded into a %s model" path saved model.Method.Name
        | _ -> ()
        let expected = tensors model
        let expectedNames = expected |> List.map fst |> Set.ofList
        let table = Map.ofList loaded
        let missing = expected |> List.map fst |> List.filter (table.ContainsKey >> not)
        let unexpected = loaded |> List.map fst |> List.filter (expectedNames.Contains >> not)
        if not missing.IsEmpty then Errors.fail "%s: missing trainable tensors: %s" path (String.Join(", ", missing))
        if not unexpected.IsEmpty then Errors.fail "%s: unexpected tensors for method %s: %s" path model.Method.Name (String.Join(", ", unexpected))
        for name, t in expected do
            if table[name].Shape <> t.shape then
                Errors.fail "%s: shape mismatch for %s: expected %s, found %s" path name (HostTensor.shapeText t.shape) (HostTensor.shapeText table[name].Shape)
        use _ = torch.no_grad ()
        for name, t in expected do
            use source = HostTensor.toTensor table[name]
            t.copy_ source |> ignore
        match metadata.TryFind "task" |> Option.map Int32.TryParse with
        | Some(true, task) when task >= 0 && task < TaskLayout.tasks model.Layout -> model.RestoreTask task
        | Some(true, task) -> Errors.fail "%s: stored task %d is outside 0..%d" path task (TaskLayout.tasks model.Layout - 1)
        | Some(false, _) -> Errors.fail "%s: stored task '%s' is not a number" path metadata["task"]
        | None -> ()
