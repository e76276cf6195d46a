/// Sanity checks on the real data in ../shared; skipped with a message when it is absent.
module Prompting.Tests.Shared

open System.IO
open System.Formats.Tar
open Expecto
open Prompting
open Prompting.Vit
open Prompting.Tests.Fixtures

let private weights = "weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
let private cifar = "data/cifar10-jpeg.tar"

/// ImageNet-1k classes a CIFAR-10 photo of each class may sensibly be given (WordNet groups).
let private plausible =
    Map.ofList
        [ "dog", set [ 151..268 ]
          "frog", set [ 30; 31; 32 ]
          "horse", set [ 339; 603 ]
          "truck", set [ 555; 569; 573; 575; 656; 675; 717; 734; 864; 867 ]
          "ship", set [ 403; 472; 484; 510; 554; 576; 625; 628; 724; 780; 814; 833; 871; 914 ] ]

/// The first `perClass` test photos of the given classes, read straight from the tar.
let private cifarImages (tar: string) (perClass: int) =
    let found = System.Collections.Generic.Dictionary<string, ResizeArray<string * byte[]>>()
    use reader = new TarReader(File.OpenRead tar)
    let mutable entry = reader.GetNextEntry()
    while not (isNull entry) do
        let parts = entry.Name.Split('/')
        if parts.Length = 4 && parts[1] = "test" && plausible.ContainsKey parts[2] && not (isNull entry.DataStream) then
            let list =
                match found.TryGetValue parts[2] with
                | true, l -> l
                | _ ->
                    let l = ResizeArray()
                    found[parts[2]] <- l
                    l
            if list.Count < perClass then
                use ms = new MemoryStream()
                entry.DataStream.CopyTo ms
                list.Add((entry.Name, ms.ToArray()))
        entry <- reader.GetNextEntry()
    [ for KeyValue(cls, list) in found do for name, bytes in list -> cls, name, bytes ]

[<Tests>]
let tests =
    testList
        "shared"
        [ test "the real ViT-Ti classifies CIFAR-10 photos sensibly" {
              match sharedFile weights, sharedFile cifar with
              | Some w, Some tar ->
                  let images = cifarImages tar 8
                  Expect.equal images.Length 40 "eight photos of five classes"
                  use model = Checkpoint.load w LoadOptions.defaults |> Predict.prepare TorchSharp.torch.CPU
                  let dir = tempDir ()
                  let files =
                      images |> List.mapi (fun i (_, _, bytes) ->
                          let path = Path.Combine(dir, sprintf "%03d.jpg" i)
                          File.WriteAllBytes(path, bytes)
                          path) |> Array.ofList
                  let logits = Predict.onImages model TorchSharp.torch.CPU 20 Logits Preprocessing.augreg files
                  let hits =
                      images |> List.mapi (fun i (cls, _, _) ->
                          let top5 = Predict.topK 5 logits.Values[i * 1000 .. (i + 1) * 1000 - 1]
                          top5 |> Array.exists plausible[cls].Contains) |> List.filter id |> List.length
                  // By chance about 1% of top-5 sets would hit; the real model gets most of them.
                  Expect.isGreaterThanOrEqual hits 24 (sprintf "%d of 40 top-5 predictions are plausible" hits)
              | _ -> skiptest "../shared (ViT-Ti weights and CIFAR-10) not present"
          } ]
