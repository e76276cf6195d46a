/// The protocol scripts (scripts/*.fsx) run end to end through `dotnet fsi` on tiny data.
module Prompting.Tests.Scripts

open System.Diagnostics
open System.IO
open Expecto
open Prompting.Tests.Fixtures

/// A single-folder ImageNet-R-like tree: `classes` class directories of `perClass` BMP images.
let private singleFolderTree (root: string) (classes: int) (perClass: int) =
    for c in 0 .. classes - 1 do
        let dir = Path.Combine(root, sprintf "n%03d" c)
        Directory.CreateDirectory dir |> ignore
        for i in 0 .. perClass - 1 do
            Cli.writeBmp (Path.Combine(dir, sprintf "img_%d.bmp" i)) 12 12 (fun x y -> byte (c * 12), byte (x * 20 + i), byte (y * 20))

[<Tests>]
let tests =
    testList
        "scripts"
        [ test "l2p-imagenet-r.fsx splits a single-folder tree 80/20 and runs 10 tasks for 1 epoch" {
              let dir = tempDir ()
              let data = Path.Combine(dir, "imagenet-r")
              singleFolderTree data 20 5
              let out = Path.Combine(dir, "run")
              let script = Path.Combine(root, "scripts", "l2p-imagenet-r.fsx")
              let args =
                  [ "fsi"; script; "--"; "--data"; data; "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"
                    "--out"; out; "--epochs"; "1"; "--batch-size"; "8"; "--device"; "cpu" ]
              let psi = ProcessStartInfo("dotnet", args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
              use p = Process.Start psi
              let err = p.StandardError.ReadToEndAsync()
              let stdout = p.StandardOutput.ReadToEnd()
              p.WaitForExit()
              Expect.equal p.ExitCode 0 (stdout + err.Result)
              Expect.isTrue (File.Exists(Path.Combine(out, "report.html"))) "report.html written"
              Expect.stringContains stdout "report:" "prints the report path"
              let split = Path.Combine(out, "imagenet-r-split")
              let count part = Directory.GetFiles(Path.Combine(split, part), "*", SearchOption.AllDirectories).Length
              Expect.equal (count "train", count "test") (80, 20) "80/20 split of 100 images"
              let config = File.ReadAllText(Path.Combine(out, "config.json"))
              Expect.stringContains config "\"GradientClip\": 1" "L2P's gradient clipping is in the recorded config"
          } 
          // Regression: the end-of-task statistics pass ran under no_grad and so did VQ-Prompt's head
          // recalibration (from the second task on), whose backward then failed.
          test "vq-prompt recalibrates its head after the second task" {
              let dir = tempDir ()
              for part, n in [ "train", 3; "test", 1 ] do
                  singleFolderTree (Path.Combine(dir, "data", part)) 4 n
              let out = Path.Combine(dir, "run")
              let code, stdout, err =
                  Cli.runCli [ "run"; "--method"; "vq-prompt"; "--benchmark"; "imagefolder"; "--data"; Path.Combine(dir, "data")
                               "--checkpoint"; fixture "vit_depth5.safetensors"; "--heads"; "2"; "--tasks"; "2"; "--epochs"; "1"
                               "--batch-size"; "4"; "--device"; "cpu"; "--out"; out ]
              Expect.equal code 0 (stdout + err)
              Expect.isTrue (File.Exists(Path.Combine(out, "report.html"))) "report.html written"
          } ]
