/// `prompting pretrain` and `prompting demo` through the real CLI process.
module Prompting.Tests.PretrainCli

open System
open System.IO
open Expecto
open Prompting.Tests.Fixtures
open Prompting.Tests.Cli

/// 4 classes × (6 train + 3 test) 16×16 BMPs: a bright bar whose place tells the class.
let private writeFolder (dir: string) =
    for c in 0 .. 3 do
        for split, count in [ "train", 6; "test", 3 ] do
            for i in 0 .. count - 1 do
                writeBmp (Path.Combine(dir, split, sprintf "class%d" c, sprintf "img%02d.bmp" i)) 16 16 (fun x y ->
                    let v = if y / 4 = c || (x + i) % 7 = 0 then 230uy else byte (30 + (x * y + i) % 25)
                    v, v, v)
    dir

let private tinyArgs =
    [ "--image-size"; "16"; "--patch-size"; "4"; "--depth"; "1"; "--width"; "16"; "--heads"; "2"; "--decoder-width"; "8"
      "--decoder-depth"; "1"; "--decoder-heads"; "2"; "--epochs"; "1"; "--batch-size"; "8"; "--device"; "cpu" ]

let private checkpointLine (stdout: string) =
    stdout.Split('\n') |> Array.map _.Trim() |> Array.tryFind (fun l -> l.StartsWith "checkpoint: ") |> Option.map (fun l -> l.Substring 12)

[<Tests>]
let tests =
    testSequenced
    <| testList
        "cli pretrain"
        [ test "pretrain writes a cached checkpoint that run --checkpoint loads; the second call reuses it" {
              let dir = tempDir ()
              let data = writeFolder (Path.Combine(dir, "data"))
              let cache = Path.Combine(dir, "cache")
              let args = [ "pretrain"; "--benchmark"; "imagefolder"; "--data"; data; "--cache-dir"; cache ] @ tinyArgs
              let code, stdout, err = runCli args
              Expect.equal code 0 err
              let checkpoint = checkpointLine stdout |> Option.defaultWith (fun () -> failtestf "no checkpoint line in %s" stdout)
              Expect.equal (Path.GetDirectoryName checkpoint) (Path.GetFullPath cache) "in the cache"
              Expect.stringContains err "pretrained" "says it pretrained"
              let code, stdout, err = runCli args
              Expect.equal code 0 err
              Expect.equal (checkpointLine stdout) (Some checkpoint) "same checkpoint"
              Expect.stringContains err "reusing" "says it reused the cache"
              let copy = Path.Combine(dir, "copy.safetensors")
              let code, stdout, err = runCli (args @ [ "--output"; copy ])
              Expect.equal code 0 err
              Expect.equal (checkpointLine stdout) (Some(Path.GetFullPath copy)) "--output names the copy"
              Expect.isTrue (File.ReadAllBytes copy = File.ReadAllBytes checkpoint) "an exact copy"
              let run = Path.Combine(dir, "run")
              let code, stdout, err =
                  runCli [ "run"; "--method"; "linear"; "--benchmark"; "imagefolder"; "--data"; data; "--checkpoint"; checkpoint
                           "--tasks"; "2"; "--epochs"; "1"; "--batch-size"; "4"; "--device"; "cpu"; "--out"; run ]
              Expect.equal code 0 (err + stdout)
              Expect.isTrue (File.Exists(Path.Combine(run, "metrics.json"))) "the run finished"
              let code, stdout, err = runCli [ "info"; checkpoint ]
              Expect.equal code 0 err
              Expect.stringContains stdout "heads       2" "the recorded heads"
              Expect.stringContains stdout "width       16" "the encoder's width"
          }

          test "bad pretraining options: one line, exit 1, nothing cached" {
              let dir = tempDir ()
              let data = writeFolder (Path.Combine(dir, "data"))
              let cache = Path.Combine(dir, "cache")
              let baseArgs = [ "pretrain"; "--benchmark"; "imagefolder"; "--data"; data; "--cache-dir"; cache ] @ tinyArgs
              for extra, fragments in
                  [ [ "--mask-ratio"; "1.5" ], [ "--mask-ratio 1.5" ]
                    [ "--width"; "18"; "--heads"; "3" ], [ "--width 18"; "multiple of 4" ]
                    [ "--patch-size"; "5" ], [ "not a multiple of patch size 5" ]
                    [ "--decoder-width"; "12"; "--decoder-heads"; "5" ], [ "--decoder-heads 5" ]
                    [ "--epochs"; "0" ], [ "--epochs" ]
                    [ "--images"; "0" ], [ "--images" ]
                    [ "--device"; "tpu" ], [ "device tpu" ]
                    [ "--threads"; "0" ], [ "--threads 0" ] ] do
                  expectOneLineError (baseArgs @ extra) fragments |> ignore
              expectOneLineError [ "pretrain"; "--benchmark"; "nope" ] [ "benchmark nope" ] |> ignore
              expectOneLineError [ "pretrain"; "--benchmark"; "sequence" ] [ "sequence" ] |> ignore
              expectOneLineError [ "pretrain"; "--benchmark"; "imagefolder"; "--data"; Path.Combine(dir, "missing") ] [ "does not exist" ] |> ignore
              expectOneLineError [ "pretrain"; "--mask-ratio"; "half" ] [ "mask-ratio" ] |> ignore
              Expect.isFalse (Directory.Exists cache && Directory.GetFiles(cache).Length > 0) "nothing cached"
          }

          test "demo --data with an empty directory says which files to put there" {
              let empty = tempDir ()
              expectOneLineError [ "demo"; "--data"; empty; "--out"; Path.Combine(tempDir (), "out") ] [ empty; "train-images-idx3-ubyte.gz"; "t10k-labels-idx1-ubyte.gz" ] |> ignore
          } ]
