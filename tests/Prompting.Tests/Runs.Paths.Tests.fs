/// A trained run used from anywhere: `predict --run` without the training data, canonical paths,
/// old runs' relative paths, and a checkpoint or data directory that moved (accepted by content).
module Prompting.Tests.RunsPaths

open System
open System.IO
open System.Text.Json
open Expecto
open Prompting
open Prompting.Engine
open Prompting.Tensors
open Prompting.Tests.Fixtures
open Prompting.Tests.Cli
open Prompting.Tests.CliRun

/// data/, ck.safetensors (a copy of the shared tiny checkpoint) and runs/r trained from `root` with
/// relative paths, as a newcomer types them.
let private trainedFromRelativePaths () =
    let root = tempDir ()
    let _, checkpoint = inputs.Force()
    writeBenchmark (Path.Combine(root, "data")) |> ignore
    File.Copy(checkpoint, Path.Combine(root, "ck.safetensors"))
    let code, stdout, err = runCliIn root (runArgs "data" "ck.safetensors" (Path.Combine("runs", "r")) 1 [])
    if code <> 0 then failwithf "run failed (%d): %s\n%s" code err stdout
    root, Path.Combine(root, "runs", "r")

let private recordedConfig (run: string) =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "config.json")))
    let c = doc.RootElement.GetProperty "Config"
    c.GetProperty("Data").GetString(), c.GetProperty("Checkpoint").GetString()

/// CSV rows of `predict`: file and top-5 class names.
let private readTop (csv: string) =
    File.ReadAllLines csv |> Array.skip 1 |> Array.map (fun l -> let cells = l.Split ',' in cells[0], cells[1..])

/// "task N: class-incremental X%" lines of `eval`.
let private evalLines (stdout: string) =
    stdout.Split('\n') |> Array.filter (fun l -> l.StartsWith "task ") |> Array.map _.Trim()

/// Rewrites config.json's paths as an older version recorded them: as typed.
let private recordAsTyped (run: string) (data: string) (checkpoint: string) =
    let path = Path.Combine(run, "config.json")
    let o = Nodes.JsonNode.Parse(File.ReadAllText path)
    o["Config"]["Data"] <- Nodes.JsonValue.Create data
    o["Config"]["Checkpoint"] <- Nodes.JsonValue.Create checkpoint
    File.WriteAllText(path, o.ToJsonString())

[<Tests>]
let tests =
    testSequenced
    <| testList
        "runs and paths"
        [ test "a run records canonical paths and its classes; predict --run needs only the run and the checkpoint" {
              let root, run = trainedFromRelativePaths ()
              Expect.equal (recordedConfig run) (Path.Combine(root, "data"), Path.Combine(root, "ck.safetensors")) "absolute paths recorded"
              // Test images copied out, then the training data removed.
              let images = Path.Combine(tempDir (), "images")
              for c in 0 .. 3 do
                  for i in 0 .. 3 do
                      let name = sprintf "class%d-img%02d.bmp" c i
                      Directory.CreateDirectory images |> ignore
                      File.Copy(Path.Combine(root, "data", "test", sprintf "class%d" c, sprintf "img%02d.bmp" i), Path.Combine(images, name))
              Directory.Delete(Path.Combine(root, "data"), true)
              let csv = Path.Combine(tempDir (), "top.csv")
              let code, stdout, err = runCliIn (tempDir ()) [ "predict"; "--run"; run; "--images"; images; "--output"; csv; "--device"; "cpu" ]
              Expect.equal code 0 (err + stdout)
              Expect.equal (File.ReadAllLines(csv)[0]) "file,top1,top2,top3,top4,top5" "predict's CSV header"
              let rows = readTop csv
              Expect.equal rows.Length 16 "one row per image"
              for _, top in rows do
                  Expect.equal (Array.sort (Array.truncate 4 top)) [| "class0"; "class1"; "class2"; "class3" |] "the four classes seen, by name"
              // The run's own evaluation after the last task, recomputed from the CSV: task t's
              // classes are the t-th pair of the recorded class order.
              use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "scenario.json")))
              let order = [| for n in doc.RootElement.GetProperty("ClassNames").EnumerateArray() -> n.GetString() |]
              let accuracy t =
                  let mine = rows |> Array.filter (fun (file, _) -> Array.contains (file.Split('-')[0]) order[2 * t .. 2 * t + 1])
                  100.0 * float (mine |> Array.filter (fun (file, top) -> file.Split('-')[0] = top[0]) |> Array.length) / float mine.Length
              let m = matrix run
              for t in 0 .. 1 do Expect.floatClose Accuracy.veryHigh (accuracy t) (m[1][t]) (sprintf "task %d's accuracy as the run evaluated it" t)
              // --input: the same images as one array, transformed as the run's evaluation does.
              let transform = RunPredict.transform (Run.readRecorded run).Config
              let files = Directory.GetFiles images |> Array.sort
              let npy = Path.Combine(tempDir (), "x.npy")
              Npy.write npy (HostTensor.create [| int64 files.Length; 3L; 32L; 32L |] (files |> Array.collect (fun f -> transform.Apply (Random 0) (Images.decode f))))
              let logitsFile = Path.Combine(tempDir (), "logits.npy")
              let codeN, _, errN = runCli [ "predict"; "--run"; run; "--input"; npy; "--output"; logitsFile; "--device"; "cpu" ]
              Expect.equal codeN 0 errN
              let logits = Npy.read logitsFile
              Expect.equal logits.Shape [| 16L; 4L |] "logits over the 4 classes seen"
              let argmaxNames = Array.init 16 (fun i -> order[Array.IndexOf(logits.Values[i * 4 .. i * 4 + 3], Array.max logits.Values[i * 4 .. i * 4 + 3])])
              Expect.equal argmaxNames (rows |> Array.map (fun (_, top) -> top[0])) "the array's top classes are the images'"
              let small = Path.Combine(tempDir (), "small.npy")
              Npy.write small (HostTensor.create [| 1L; 3L; 16L; 16L |] (Array.zeroCreate 768))
              expectOneLineError [ "predict"; "--run"; run; "--input"; small; "--output"; logitsFile ] [ small; "[1, 3, 16, 16]"; "[N, 3, 32, 32]" ] |> ignore
              // eval needs the data: one line naming them.
              let code2, _, err2 = runCli [ "eval"; "--run"; run; "--device"; "cpu" ]
              Expect.notEqual code2 0 "eval without the data fails"
              Expect.stringContains err2 (Path.Combine(root, "data")) "names the missing data"
          }

          test "an older run's relative paths resolve from another directory; moved files are accepted by content" {
              let root, run = trainedFromRelativePaths ()
              let last = (matrix run)[1]
              let expected = [| for j in 0 .. 1 -> sprintf "task %d: class-incremental %.2f%%" (j + 1) last[j] |]
              recordAsTyped run "data" "ck.safetensors"
              File.Delete(Path.Combine(run, "scenario.json"))
              let code, stdout, err = runCliIn (tempDir ()) [ "eval"; "--run"; run; "--device"; "cpu" ]
              Expect.equal code 0 err
              Expect.equal (evalLines stdout |> Array.map (fun l -> l.Split(',')[0])) expected "found against the run's ancestors"
              // The same run resumed with the absolute paths of the same files is no change.
              let codeR, _, errR = runCli (runArgs (Path.Combine(root, "data")) (Path.Combine(root, "ck.safetensors")) run 1 [])
              Expect.equal codeR 0 errR
              // Moved checkpoint and data.
              let moved = Path.Combine(tempDir (), "moved")
              Directory.CreateDirectory moved |> ignore
              File.Move(Path.Combine(root, "ck.safetensors"), Path.Combine(moved, "vit.safetensors"))
              Directory.Move(Path.Combine(root, "data"), Path.Combine(moved, "data"))
              let lost = expectOneLineError [ "eval"; "--run"; run; "--device"; "cpu" ] [ "ck.safetensors"; "checkpoint not found"; "--checkpoint" ]
              Expect.isFalse (lost.Contains "\n") "one line"
              let code2, _, err2 = runCli [ "run"; "--method"; "linear"; "--benchmark"; "imagefolder"; "--data"; Path.Combine(moved, "data")
                                            "--checkpoint"; Path.Combine(moved, "vit.safetensors"); "--tasks"; "2"; "--epochs"; "1"
                                            "--batch-size"; "8"; "--image-size"; "32"; "--device"; "cpu"; "--out"; run ]
              Expect.equal code2 0 err2
              let log = File.ReadAllText(Path.Combine(run, "log.txt"))
              Expect.stringContains log "the checkpoint moved (same SHA-256)" "the log says the checkpoint moved"
              Expect.stringContains log "the data moved (same data index)" "the log says the data moved"
              Expect.equal (recordedConfig run) (Path.Combine(moved, "data"), Path.Combine(moved, "vit.safetensors")) "the new paths recorded"
              let code3, stdout3, err3 = runCli [ "eval"; "--run"; run; "--device"; "cpu" ]
              Expect.equal code3 0 err3
              Expect.equal (evalLines stdout3 |> Array.map (fun l -> l.Split(',')[0])) expected "same results from the moved files"
              // Other data under the moved path's name: one image fewer is not the run's data.
              let other = Path.Combine(tempDir (), "other")
              writeBenchmark other |> ignore
              File.Delete(Path.Combine(other, "train", "class0", "img00.bmp"))
              expectOneLineError [ "eval"; "--run"; run; "--data"; other; "--device"; "cpu" ] [ other; "not the data this run was made with" ] |> ignore
              // A different checkpoint is refused by its SHA-256.
              let bigger = Path.Combine(moved, "other.safetensors")
              File.WriteAllBytes(bigger, Array.append (File.ReadAllBytes(Path.Combine(moved, "vit.safetensors"))) [| 0uy |])
              expectOneLineError [ "eval"; "--run"; run; "--checkpoint"; bigger; "--device"; "cpu" ] [ bigger; "SHA-256"; "differs" ] |> ignore
              // predict --run on the run that now records the moved files.
              let csv = Path.Combine(tempDir (), "top.csv")
              let code4, _, err4 = runCli [ "predict"; "--run"; run; "--images"; Path.Combine(moved, "data", "test"); "--output"; csv; "--device"; "cpu" ]
              Expect.equal code4 0 err4
              Expect.equal (readTop csv).Length 16 "every test image classified"
          } ]
