namespace Prompting.Vit

open System
open System.Text.RegularExpressions
open TorchSharp
open Prompting
open Prompting.Tensors

/// Maps Google's ViT .npz layout (ViT-B_16.npz, optionally under "opt/target/") to timm's names.
/// timm names are this project's checkpoint format, so safetensors files need no map at all.
module KeyMap =
    let private attention = "MultiHeadDotProductAttention_1"

    /// Keys that exist in some checkpoints but have no counterpart in the model.
    let isIgnored (timmKey: string) = timmKey.StartsWith "pre_logits."

    /// Intermediate tensors are bound with `use` throughout: a temporary whose wrapper is
    /// unreferenced can be finalized by a collection during the next native call (a
    /// use-after-free in libtorch, seen when fuzzing npz files).
    let private withTorch (f: torch.Tensor -> torch.Tensor) (t: HostTensor) =
        use input = HostTensor.toTensor t
        use output = f input
        HostTensor.ofTensor output

    let private transpose2 = withTorch (fun t -> t.t ())

    /// (D, H, hd) → (D, D) → transposed: one third of qkv.weight.
    let private headsKernel (t: HostTensor) =
        withTorch (fun x ->
            use rows = x.reshape (x.shape[0], -1L)
            rows.t ()) t

    let private flat (t: HostTensor) = { t with Shape = [| int64 t.Values.Length |] }

    let private concatRows (parts: HostTensor list) =
        let shape = Array.copy parts.Head.Shape
        shape[0] <- parts |> List.sumBy (fun p -> p.Shape[0])
        HostTensor.create shape (parts |> Array.ofList |> Array.collect (fun p -> p.Values))

    let private simple =
        [ "cls", "cls_token", id
          "embedding/kernel", "patch_embed.proj.weight", withTorch (fun t -> t.permute (3L, 2L, 0L, 1L))
          "embedding/bias", "patch_embed.proj.bias", id
          "Transformer/posembed_input/pos_embedding", "pos_embed", id
          "Transformer/encoder_norm/scale", "norm.weight", id
          "Transformer/encoder_norm/bias", "norm.bias", id
          "head/kernel", "head.weight", transpose2
          "head/bias", "head.bias", id
          "pre_logits/kernel", "pre_logits.fc.weight", transpose2
          "pre_logits/bias", "pre_logits.fc.bias", id ]

    let private perBlock =
        [ "LayerNorm_0/scale", "norm1.weight", id
          "LayerNorm_0/bias", "norm1.bias", id
          "LayerNorm_2/scale", "norm2.weight", id
          "LayerNorm_2/bias", "norm2.bias", id
          attention + "/out/kernel", "attn.proj.weight", withTorch (fun t ->
              use rows = t.reshape (-1L, t.shape[2])
              rows.t ())
          attention + "/out/bias", "attn.proj.bias", id
          "MlpBlock_3/Dense_0/kernel", "mlp.fc1.weight", transpose2
          "MlpBlock_3/Dense_0/bias", "mlp.fc1.bias", id
          "MlpBlock_3/Dense_1/kernel", "mlp.fc2.weight", transpose2
          "MlpBlock_3/Dense_1/bias", "mlp.fc2.bias", id ]

    let private blockPrefix = Regex(@"^Transformer/encoderblock_(\d+)/(.*)$")

    /// Converts Google-layout arrays to timm-named tensors. Unknown keys are kept under their own
    /// name so that validation reports them as unexpected; incomplete q/k/v groups are reported.
    let fromGoogle (path: string) (arrays: (string * HostTensor) list) : (string * HostTensor) list =
        let strip (k: string) = if k.StartsWith "opt/target/" then k.Substring 11 else k
        let table = arrays |> List.map (fun (k, v) -> strip k, v) |> dict
        let used = System.Collections.Generic.HashSet<string>()
        let take key =
            used.Add key |> ignore
            table[key]
        // A tensor of the wrong rank makes the conversion itself fail: one line naming both keys.
        let converted (google: string) (timm: string) (convert: unit -> HostTensor) =
            try convert ()
            with
            | :? Runtime.InteropServices.ExternalException
            | :? IndexOutOfRangeException
            | :? ArgumentException as e ->
                let shape = match table.TryGetValue google with | true, t -> HostTensor.shapeText t.Shape | _ -> "?"
                Errors.fail "%s: %s of shape %s cannot be converted to timm's %s (%s)" path google shape timm (e.Message.Split('\n')[0])
        let mapped =
            [ for google, timm, convert in simple do
                  if table.ContainsKey google then yield timm, converted google timm (fun () -> convert (take google))
              let blocks =
                  table.Keys
                  |> Seq.choose (fun k ->
                      let m = blockPrefix.Match k
                      match Int32.TryParse(m.Groups[1].Value, Globalization.NumberStyles.None, Globalization.CultureInfo.InvariantCulture) with
                      | true, i when m.Success -> Some i
                      | _ -> None)
                  |> Seq.distinct
                  |> Seq.sort
              for i in blocks do
                  let pre = sprintf "Transformer/encoderblock_%d/" i
                  for google, timm, convert in perBlock do
                      if table.ContainsKey(pre + google) then
                          let name = sprintf "blocks.%d.%s" i timm
                          yield name, converted (pre + google) name (fun () -> convert (take (pre + google)))
                  for kind, convert, timm in [ "kernel", headsKernel, "weight"; "bias", flat, "bias" ] do
                      let names = [ for n in [ "query"; "key"; "value" ] -> sprintf "%s%s/%s/%s" pre attention n kind ]
                      match names |> List.filter table.ContainsKey with
                      | [] -> ()
                      | present when present.Length = 3 ->
                          let name = sprintf "blocks.%d.attn.qkv.%s" i timm
                          yield name, converted names.Head name (fun () -> concatRows (names |> List.map (take >> convert)))
                      | present ->
                          let missing = names |> List.except present
                          Errors.fail "%s: incomplete attention %s: missing %s" path kind (String.concat ", " missing) ]
        let unknown = [ for KeyValue(k, v) in table do if not (used.Contains k) then yield k, v ]
        mapped @ unknown
