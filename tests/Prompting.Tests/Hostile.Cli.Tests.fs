/// Hostile files through the real CLI (issue 18): `info`, `predict` and `run` must exit non-zero
/// with one line naming the file and the problem, in bounded time.
module Prompting.Tests.HostileCli

open System
open System.IO
open Expecto
open Prompting.Tensors
open Prompting.Tests.TestSupport
open Prompting.Tests.HostileSupport
open Prompting.Tests.Cli

/// The CLI fails with one line naming each fragment, within `seconds`.
let private cliFails (seconds: float) (args: string list) (fragments: string list) =
    within seconds (String.Join(" ", args)) (fun () -> expectOneLineError args fragments) |> ignore

let private tinyCheckpoint =
    lazy
        (let path = Path.Combine(Fixtures.tempDir (), "tiny.safetensors")
         let code, _, err =
             runCli [ "create"; "--image-size"; "32"; "--patch-size"; "8"; "--depth"; "2"; "--width"; "64"; "--heads"; "1"; "--classes"; "10"; "-o"; path ]
         if code <> 0 then failwithf "create failed: %s" err
         path)

let private jpeg () = File.ReadAllBytes(fixture "images/grad_20x52.jpg")

[<Tests>]
let tests =
    testList
        "hostile cli"
        [ test "info: a block index of 99,999,999 in a key name" {
              use dir = new TempDir()
              let tensors, metadata = Safetensors.readWithMetadata (fixture "vit_micro.safetensors")
              let path = dir.File "deep.safetensors"
              Safetensors.writeWithMetadata path metadata (tensors @ [ "blocks.99999999.norm1.weight", HostTensor.create [| 48L |] (Array.zeroCreate 48) ])
              cliFails 30.0 [ "info"; path ] [ path; "blocks.99999999" ]
          }

          test "info: aliased tensors and an npz bomb" {
              use dir = new TempDir()
              let tensors, metadata = Safetensors.readWithMetadata (fixture "vit_micro.safetensors")
              let path = dir.File "alias.safetensors"
              Safetensors.writeWithMetadata path metadata tensors
              // Point norm.bias at norm.weight's bytes (same size) and drop nothing else: aliased ranges.
              let bytes = File.ReadAllBytes path
              let n = int (BitConverter.ToInt64(bytes, 0))
              let header = Text.Encoding.UTF8.GetString(bytes, 8, n)
              let offsetsOf (name: string) =
                  let at = header.IndexOf("\"" + name + "\"")
                  let o = header.IndexOf("\"data_offsets\":[", at)
                  header.Substring(o, header.IndexOf(']', o) - o + 1)
              let edited = header.Replace(offsetsOf "norm.bias", offsetsOf "norm.weight")
              Expect.equal edited.Length header.Length "same header length"
              File.WriteAllBytes(path, Array.concat [ bytes[.. 7]; Text.Encoding.UTF8.GetBytes edited; bytes[8 + n ..] ])
              cliFails 30.0 [ "info"; path ] [ path; "overlap" ]
              let bomb = npzBomb (dir.File "bomb.npz") "Transformer/posembed_input/pos_embedding" [ 600_000_000L ]
              cliFails 30.0 [ "info"; bomb ] [ bomb; "too large" ]
          }

          test "predict: a truncated JPEG and a 1 x 12,000 strip" {
              use dir = new TempDir()
              let cut = dir.File "cut.jpg"
              File.WriteAllBytes(cut, (jpeg ())[.. 622])
              let args images = [ "predict"; "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"; "--device"; "cpu"; "--images"; images; "--output"; dir.File "top5.csv" ]
              cliFails 30.0 (args cut) [ cut; "truncated" ]
              let strip = dir.File "strip.bmp"
              writeBmp strip 1 12000 (fun _ y -> byte y, 0uy, 0uy)
              cliFails 30.0 (args strip) [ strip; "aspect ratio" ]
              Expect.isFalse (File.Exists(dir.File "top5.csv")) "no output"
          }

          test "run: a truncated JPEG fails before the first step; --skip-corrupt lists it and trains" {
              use dir = new TempDir()
              let data = dir.File "data"
              Prompting.Tests.Data.writeImageTree data
              let cut = Path.Combine(data, "train", "a", "zz-cut.jpg")
              File.WriteAllBytes(cut, (jpeg ())[.. 1200])
              let run out extra =
                  [ "run"; "--method"; "linear"; "--benchmark"; "imagefolder"; "--data"; data; "--checkpoint"; tinyCheckpoint.Force()
                    "--tasks"; "3"; "--epochs"; "1"; "--batch-size"; "4"; "--image-size"; "32"; "--device"; "cpu"; "--out"; out ]
                  @ extra
              let out = dir.File "run"
              cliFails 120.0 (run out []) [ cut; "truncated" ]
              let trained = Directory.Exists(Path.Combine(out, "state")) && Directory.GetFiles(Path.Combine(out, "state")).Length > 0
              Expect.isFalse trained "nothing trained before the check"
              Expect.isFalse (File.Exists(Path.Combine(out, "progress.json"))) "no progress"
              let code, _, err = within 120.0 "skip" (fun () -> runCli (run (dir.File "skipping") [ "--skip-corrupt" ]))
              Expect.equal code 0 err
              Expect.stringContains (File.ReadAllText(Path.Combine(dir.File "skipping", "log.txt"))) "zz-cut.jpg" "the log names the bad file"
          } ]
