/// End-to-end checks of `prompting run`, `eval` and `report` through the real CLI process, on a
/// tiny generated image-folder benchmark and a tiny random checkpoint.
module Prompting.Tests.CliRun

open System
open System.Diagnostics
open System.IO
open System.Text.Json
open System.Text.RegularExpressions
open Expecto
open Prompting
open Prompting.Data
open Prompting.Tests.Fixtures
open Prompting.Tests.Cli

let cliDll =
    let config = if AppContext.BaseDirectory.Contains "/Debug/" then "Debug" else "Release"
    Path.Combine(root, "src", "Prompting.Cli", "bin", config, "net10.0", "prompting.dll")

/// 4 classes × (8 train + 4 test) 16×16 BMPs, each class its own colour with a little noise.
let writeBenchmark (dir: string) =
    let colours = [| 220, 30, 30; 30, 200, 40; 40, 50, 230; 210, 210, 40 |]
    for c in 0 .. colours.Length - 1 do
        let r, g, b = colours[c]
        for split, count in [ "train", 8; "test", 4 ] do
            for i in 0 .. count - 1 do
                let jitter x y = (x * 7 + y * 13 + i * 29 + c * 3) % 31 - 15
                let clamp v = byte (max 0 (min 255 v))
                writeBmp (Path.Combine(dir, split, sprintf "class%d" c, sprintf "img%02d.bmp" i)) 16 16 (fun x y ->
                    clamp (r + jitter x y), clamp (g + jitter y x), clamp (b - jitter x y))
    dir

/// The shared inputs: the benchmark and a tiny random checkpoint (made by `prompting create`).
let inputs =
    lazy
        (let dir = tempDir ()
         let data = writeBenchmark (Path.Combine(dir, "data"))
         let checkpoint = Path.Combine(dir, "tiny.safetensors")
         let code, _, err =
             runCli [ "create"; "--image-size"; "32"; "--patch-size"; "8"; "--depth"; "2"; "--width"; "64"; "--heads"; "1"
                      "--classes"; "10"; "-o"; checkpoint ]
         if code <> 0 then failwithf "create failed: %s" err
         data, checkpoint)

let runArgs (data: string) (checkpoint: string) (out: string) (epochs: int) (extra: string list) =
    [ "run"; "--method"; "linear"; "--benchmark"; "imagefolder"; "--data"; data; "--checkpoint"; checkpoint
      "--tasks"; "2"; "--epochs"; string epochs; "--batch-size"; "8"; "--image-size"; "32"; "--device"; "cpu"
      "--out"; out ]
    @ extra

/// A finished two-task run that the error cases must leave untouched.
let finishedRun =
    lazy
        (let data, checkpoint = inputs.Force()
         let out = Path.Combine(tempDir (), "run")
         let code, stdout, err = runCli (runArgs data checkpoint out 2 [])
         if code <> 0 then failwithf "run failed (%d): %s\n%s" code err stdout
         out)

/// Every file under a directory with its bytes.
let snapshot (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.sort
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), File.ReadAllBytes f)
    |> Map.ofArray

let expectSameFiles (before: Map<string, byte[]>) (after: Map<string, byte[]>) (what: string) =
    Expect.sequenceEqual (Map.keys after) (Map.keys before) (what + ": same files")
    for KeyValue(name, bytes) in before do
        Expect.isTrue (after[name] = bytes) (sprintf "%s: %s unchanged" what name)

let matrix (run: string) = (Metrics.readJson (Path.Combine(run, "metrics.json"))).ClassIncremental.Matrix

let epochLosses (run: string) =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "progress.json")))
    doc.RootElement.GetProperty("EpochLosses").GetRawText()

/// CIFAR-10's binary layout with two records per batch file.
let private writeCifar (dir: string) =
    Directory.CreateDirectory dir |> ignore
    File.WriteAllLines(Path.Combine(dir, Cifar.metaFile Cifar.Cifar10), [ for i in 0..9 -> sprintf "class%d" i ])
    let records = [ for r in 0..1 -> r, Array.init Cifar.pixelBytes (fun i -> byte ((i * 7 + r * 50) % 256)) ]
    for f in Cifar.trainFiles Cifar.Cifar10 @ Cifar.testFiles Cifar.Cifar10 do
        File.WriteAllBytes(Path.Combine(dir, f), Cifar.encode Cifar.Cifar10 records)
    dir

[<Tests>]
let tests =
    testSequenced
    <| testList
        "cli run"
        [ test "domain-incremental through the CLI: one task per domain directory, shared classes" {
              let _, checkpoint = inputs.Force()
              let root = tempDir ()
              writeBenchmark (Path.Combine(root, "domains", "a")) |> ignore
              writeBenchmark (Path.Combine(root, "domains", "b")) |> ignore
              let out = Path.Combine(root, "run")
              let code, stdout, err =
                  runCli [ "run"; "--method"; "linear"; "--benchmark"; "domains"; "--data"; Path.Combine(root, "domains")
                           "--checkpoint"; checkpoint; "--epochs"; "1"; "--batch-size"; "8"; "--image-size"; "32"
                           "--device"; "cpu"; "--out"; out ]
              Expect.equal code 0 (err + stdout)
              let m = matrix out
              Expect.equal (m |> Array.map Array.length) [| 1; 2 |] "two domains, evaluated over the shared classes"
              let config = File.ReadAllText(Path.Combine(out, "config.json"))
              Expect.stringContains config "DomainIncremental" "recorded scenario"
          }

          test "run writes a complete run directory; eval and report agree with it" {
              let run = finishedRun.Force()
              for f in [ "config.json"; "progress.json"; "metrics.json"; "metrics.csv"; "summary.csv"; "report.html"; "log.txt"
                         Path.Combine("state", "task-00.safetensors"); Path.Combine("state", "task-01.safetensors") ] do
                  Expect.isTrue (File.Exists(Path.Combine(run, f))) (sprintf "%s written" f)
              let html = File.ReadAllText(Path.Combine(run, "report.html"))
              Expect.isFalse (Regex.IsMatch(html, """<script[^>]*\bsrc\s*=\s*["']?(https?:)?//""", RegexOptions.IgnoreCase))
                  "report.html loads no remote script"
              let m = matrix run
              Expect.equal m.Length 2 "two rows: one per task"
              Expect.equal m[1].Length 2 "the last row covers both tasks"
              let code, stdout, err = runCli [ "eval"; "--run"; run; "--device"; "cpu" ]
              Expect.equal code 0 err
              let printed =
                  [ for l in stdout.Split('\n') do
                        let hit = Regex.Match(l, @"^task (\d+): class-incremental ([0-9.]+)%")
                        if hit.Success then yield int hit.Groups[1].Value, hit.Groups[2].Value ]
              Expect.equal printed [ for j in 0..1 -> j + 1, sprintf "%.2f" (m[1][j]) ] "eval reproduces the last row"
              let data, checkpoint = inputs.Force()
              let run2 = Path.Combine(tempDir (), "run2")
              let code2, _, err2 = runCli (runArgs data checkpoint run2 1 [ "--seed"; "1" ])
              Expect.equal code2 0 err2
              let comparison = Path.Combine(tempDir (), "comparison.html")
              let code3, stdout3, err3 = runCli [ "report"; run; run2; "--output"; comparison ]
              Expect.equal code3 0 err3
              Expect.isTrue (File.Exists comparison) "comparison written"
              Expect.stringContains stdout3 "linear" "the table names the method"
          }

          test "a run killed with SIGKILL mid-way resumes to the same results as an uninterrupted one" {
              let data, checkpoint = inputs.Force()
              let killed = Path.Combine(tempDir (), "killed")
              let straight = Path.Combine(tempDir (), "straight")
              let epochs = 6
              let psi = ProcessStartInfo("dotnet", cliDll :: runArgs data checkpoint killed epochs [], RedirectStandardOutput = true,
                                         RedirectStandardError = true, UseShellExecute = false)
              use p = Process.Start psi
              let _ = p.StandardOutput.ReadToEndAsync()
              let _ = p.StandardError.ReadToEndAsync()
              let progressed () =
                  let path = Path.Combine(killed, "progress.json")
                  try
                      use doc = JsonDocument.Parse(File.ReadAllText path)
                      doc.RootElement.GetProperty("EpochsDone").GetInt32() >= 1
                      || doc.RootElement.GetProperty("CompletedTasks").GetInt32() >= 1
                  with _ -> false
              let clock = Stopwatch.StartNew()
              while not (progressed ()) && not p.HasExited && clock.Elapsed < TimeSpan.FromMinutes 3.0 do
                  Threading.Thread.Sleep 20
              Expect.isFalse p.HasExited "the run was still going when progress appeared"
              p.Kill true
              p.WaitForExit()
              let midEpoch =
                  use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(killed, "progress.json")))
                  Expect.isLessThan (doc.RootElement.GetProperty("CompletedTasks").GetInt32()) 2 "killed before the end"
                  doc.RootElement.GetProperty("EpochsDone").GetInt32() > 0
              let code, _, err = runCli (runArgs data checkpoint killed epochs [])
              Expect.equal code 0 err
              if midEpoch then
                  Expect.stringContains (File.ReadAllText(Path.Combine(killed, "log.txt"))) "resuming" "the rerun resumed mid-task"
              let code2, _, err2 = runCli (runArgs data checkpoint straight epochs [])
              Expect.equal code2 0 err2
              Expect.equal (matrix killed) (matrix straight) "same accuracy matrix"
              Expect.equal (epochLosses killed) (epochLosses straight) "same per-epoch losses"
          }

          test "bad inputs fail with one line naming the problem and leave an earlier run untouched" {
              let data, checkpoint = inputs.Force()
              let run = finishedRun.Force()
              let before = snapshot run
              expectOneLineError (runArgs data checkpoint run 2 [] |> List.map (fun a -> if a = "linear" then "nosuchmethod" else a))
                  [ "nosuchmethod" ] |> ignore
              expectOneLineError (runArgs data checkpoint run 2 [] |> List.map (fun a -> if a = "imagefolder" then "nosuchbench" else a))
                  [ "nosuchbench" ] |> ignore
              expectOneLineError (runArgs data checkpoint run 2 [ "--scenario"; "joint"; "--tasks"; "3" ]) [ "joint"; "--tasks" ] |> ignore
              expectOneLineError (runArgs data checkpoint run 2 [ "--train-per-class"; "0" ]) [ "--train-per-class" ] |> ignore
              expectOneLineError (runArgs data checkpoint run 2 [ "--query-depth"; "0" ]) [ "--query-depth" ] |> ignore
              let deep = Path.Combine(tempDir (), "too-deep")
              expectOneLineError (runArgs data checkpoint deep 2 [ "--query-depth"; "3" ]) [ "--query-depth 3"; "2 blocks" ] |> ignore
              Expect.isFalse (Directory.Exists deep) "nothing written for a query deeper than the checkpoint"
              expectOneLineError (runArgs data checkpoint run 2 [ "--seed"; "7" ]) [ "different configuration"; "Seed" ] |> ignore
              expectOneLineError (runArgs data checkpoint run 3 []) [ "different configuration"; "Epochs" ] |> ignore
              // A CIFAR-10 directory whose first training batch is cut short.
              let cifar = writeCifar (Path.Combine(tempDir (), "cifar"))
              let batch = Path.Combine(cifar, "data_batch_1.bin")
              File.WriteAllBytes(batch, (File.ReadAllBytes batch)[.. Cifar.recordSize Cifar.Cifar10 + 100])
              let fresh = Path.Combine(tempDir (), "cifar-run")
              expectOneLineError (runArgs cifar checkpoint fresh 2 [] |> List.map (fun a -> if a = "imagefolder" then "cifar10" else a))
                  [ "data_batch_1.bin"; "truncated" ] |> ignore
              Expect.isEmpty (if Directory.Exists fresh then Directory.GetFiles(fresh, "*", SearchOption.AllDirectories) else [||])
                  "nothing written for a run that could not read its data"
              expectSameFiles before (snapshot run) "the earlier run"
          }

          test "data that went bad or missing stops a rerun with one line and leaves the run untouched" {
              let _, checkpoint = inputs.Force()
              let data = writeBenchmark (Path.Combine(tempDir (), "data"))
              let run = Path.Combine(tempDir (), "run")
              let code, _, err = runCli (runArgs data checkpoint run 1 [])
              Expect.equal code 0 err
              let before = snapshot run
              // A non-image file appears: named, unless --skip-corrupt (a different configuration here).
              File.WriteAllText(Path.Combine(data, "train", "class1", "notes.txt"), "not an image")
              expectOneLineError (runArgs data checkpoint run 1 []) [ "notes.txt" ] |> ignore
              expectSameFiles before (snapshot run) "after the non-image file"
              // Adding --skip-corrupt to a resume is allowed when nothing else changed; the
              // finished run keeps its results, and its configuration records the option.
              let results = matrix run
              let code1, _, err1 = runCli (runArgs data checkpoint run 1 [ "--skip-corrupt" ])
              Expect.equal code1 0 err1
              Expect.equal (matrix run) results "the finished run's results"
              Expect.stringContains (File.ReadAllText(Path.Combine(run, "config.json"))) "\"SkipCorrupt\": true" "recorded"
              let before = snapshot run
              let fresh = Path.Combine(tempDir (), "skipping")
              let code2, _, err2 = runCli (runArgs data checkpoint fresh 1 [ "--skip-corrupt" ])
              Expect.equal code2 0 err2
              Expect.stringContains (File.ReadAllText(Path.Combine(fresh, "log.txt"))) "notes.txt" "the log names the skipped file"
              Expect.equal (matrix fresh).Length 2 "the run finished"
              // The data directory disappears.
              Directory.Move(data, data + "-gone")
              expectOneLineError (runArgs data checkpoint run 1 [ "--skip-corrupt" ]) [ data ] |> ignore
              expectSameFiles before (snapshot run) "after the data went missing"
          }

          test "--query-depth and --bf16 reach the recorded configuration" {
              let data, checkpoint = inputs.Force()
              let out = Path.Combine(tempDir (), "early-query")
              let args = runArgs data checkpoint out 1 [ "--query-depth"; "1"; "--bf16" ] |> List.map (fun a -> if a = "linear" then "l2p" else a)
              let code, stdout, err = runCli args
              Expect.equal code 0 (err + stdout)
              use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "config.json")))
              let config = doc.RootElement.GetProperty "Config"
              Expect.equal (config.GetProperty("Method").GetProperty("QueryDepth").GetInt32()) 1 "query depth recorded"
              Expect.isTrue (config.GetProperty("Method").GetProperty("Recipe").GetProperty("Bf16").GetBoolean()) "bf16 recorded"
              Expect.equal (matrix out).Length 2 "the run finished"
          }

          test "too few steps and a batch over the task's data: the same warnings in the log, the printed summary, the report and progress.json" {
              let data, checkpoint = inputs.Force()
              let out = Path.Combine(tempDir (), "big-batch")
              let args = runArgs data checkpoint out 1 [] |> List.map (fun a -> if a = "8" then "128" else a)
              let code, stdout, err = runCli args
              Expect.equal code 0 (err + stdout)
              // 2 tasks of 2 classes × 8 training images: ceil(16 / 128) = 1 batch, 1 epoch.
              let expected =
                  [ "tasks 1-2: 1 optimiser step per task (1 epoch × 1 batch of up to 128 for 16 training images), fewer than 10: lower --batch-size or raise --epochs"
                    "tasks 1-2: the batch of 128 exceeds the task's 16 training images: every step is one partial batch of the whole task" ]
              let log = File.ReadAllText(Path.Combine(out, "log.txt"))
              let html = File.ReadAllText(Path.Combine(out, "report.html"))
              use progress = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "progress.json")))
              let recorded = [ for w in progress.RootElement.GetProperty("Warnings").EnumerateArray() -> w.GetString() ]
              for w in expected do
                  Expect.stringContains log ("warning: " + w) "in the log"
                  Expect.stringContains stdout w "in the printed summary"
                  Expect.stringContains html (Prompting.Report.escape w) "in the report"
                  Expect.contains recorded w "recorded"
              // log.txt ends with the summary: its last line is the summary's last row.
              let lastLine = log.TrimEnd().Split('\n') |> Array.last
              Expect.stringContains lastLine "| warning" "the log ends with the summary table"
              Expect.stringContains log "summary:" "introduced"
              // The report: one line of settings, each task's classes, the loss of each epoch.
              Expect.stringContains html "method linear; head linear" "settings line"
              for part in [ "image size 32"; "1 epoch;"; "batch 128"; "seed 0"; "tiny.safetensors (frozen)" ] do
                  Expect.stringContains html part (sprintf "settings: %s" part)
              let classes = [ for t in progress.RootElement.GetProperty("TaskClasses").EnumerateArray() -> [ for c in t.EnumerateArray() -> c.GetString() ] ]
              Expect.equal (classes |> List.map List.length) [ 2; 2 ] "two classes per task"
              Expect.equal (List.concat classes |> List.sort) [ "class0"; "class1"; "class2"; "class3" ] "every class once"
              for t in classes do Expect.stringContains html (String.Join(", ", t)) "each task's classes in the report"
              Expect.stringContains log (sprintf "(%s)" (String.Join(", ", classes.Head))) "and in the log"
              for row in progress.RootElement.GetProperty("EpochLosses").EnumerateArray() do
                  for loss in row.EnumerateArray() do
                      Expect.stringContains html (loss.GetDouble().ToString("F4", Globalization.CultureInfo.InvariantCulture)) "each epoch's loss"
          }

          test "an undecodable .bmp stops the run with one line naming it unless --skip-corrupt" {
              let _, checkpoint = inputs.Force()
              let broken = writeBenchmark (Path.Combine(tempDir (), "broken"))
              File.WriteAllBytes(Path.Combine(broken, "train", "class2", "zz-broken.bmp"), Array.init 100 byte)
              let out = Path.Combine(tempDir (), "broken-run")
              expectOneLineError (runArgs broken checkpoint out 1 []) [ "zz-broken.bmp" ] |> ignore
              let fresh = Path.Combine(tempDir (), "broken-skipping")
              let code, _, err = runCli (runArgs broken checkpoint fresh 1 [ "--skip-corrupt" ])
              Expect.equal code 0 err
              Expect.stringContains (File.ReadAllText(Path.Combine(fresh, "log.txt"))) "zz-broken.bmp" "the log names the skipped file"
          } ]
