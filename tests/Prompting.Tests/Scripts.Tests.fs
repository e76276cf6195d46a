/// The protocol scripts (scripts/*.fsx) run end to end through `dotnet fsi` on tiny data.
module Prompting.Tests.Scripts

open System.Diagnostics
open System.Text.RegularExpressions
open System.IO
open System.Text.Json
open Expecto
open Prompting.Data
open Prompting.Tests.Fixtures

/// A single-folder ImageNet-R-like tree: `classes` class directories of `perClass` BMP images.
let private singleFolderTree (root: string) (classes: int) (perClass: int) =
    for c in 0 .. classes - 1 do
        let dir = Path.Combine(root, sprintf "n%03d" c)
        Directory.CreateDirectory dir |> ignore
        for i in 0 .. perClass - 1 do
            Cli.writeBmp (Path.Combine(dir, sprintf "img_%d.bmp" i)) 12 12 (fun x y -> byte (c * 12), byte (x * 20 + i), byte (y * 20))

/// Runs `dotnet fsi scripts/NAME.fsx -- ARGS`: exit code, stdout, stderr.
let private runScript (name: string) (args: string list) =
    let script = Path.Combine(root, "scripts", name + ".fsx")
    let psi = ProcessStartInfo("dotnet", [ "fsi"; script; "--" ] @ args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let stdout = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, stdout, err.Result

/// Each protocol script with the line its run states before reading any data, for --seed 2:
/// the registered benchmark, the reference split and the reference code's class order (CODA-Prompt's
/// lists and its repeat rule random.seed(2) for ImageNet-R and for CODA-P/VQ-Prompt on CIFAR-100; the
/// natural order of the L2P and DualPrompt PyTorch ports on CIFAR-100; VPT: one joint task).
let private protocolDefaults =
    [ "l2p-cifar100", [], "method l2p on cifar100 (split official): 10 task(s), ClassIncremental, class order natural"
      "dualprompt-cifar100", [], "method dualprompt on cifar100 (split official): 10 task(s), ClassIncremental, class order natural"
      "coda-prompt-cifar100", [], "method coda-prompt on cifar100 (split official): 10 task(s), ClassIncremental, class order python:2"
      "vq-prompt-cifar100", [], "method vq-prompt on cifar100 (split official): 10 task(s), ClassIncremental, class order python:2"
      "l2p-imagenet-r", [], "method l2p on imagenet-r (split coda): 10 task(s), ClassIncremental, class order python:2"
      "dualprompt-imagenet-r", [], "method dualprompt on imagenet-r (split coda): 10 task(s), ClassIncremental, class order python:2"
      "coda-prompt-imagenet-r", [], "method coda-prompt on imagenet-r (split coda): 10 task(s), ClassIncremental, class order python:2"
      "vq-prompt-imagenet-r", [], "method vq-prompt on imagenet-r (split coda): 10 task(s), ClassIncremental, class order python:2"
      "vpt-transfer", [ "--benchmark"; "vtab1k-kitti" ], "method vpt-deep on vtab1k-kitti (split final): 1 task(s), Joint"
      "vpt-transfer", [ "--benchmark"; "fgvc-cub" ], "method vpt-deep on fgvc-cub (split final): 1 task(s), Joint" ]

/// A CIFAR-10 in the binary layout under dir/cifar10: one image per class in each training batch
/// (5 per class) and in the test batch.
let private tinyCifar10 (dir: string) =
    let data = Path.Combine(dir, "cifar10")
    Directory.CreateDirectory data |> ignore
    let records = [ for c in 0..9 -> c, Prompting.Tests.Data.cifarPixels c ]
    for f in Cifar.trainFiles Cifar.Cifar10 @ Cifar.testFiles Cifar.Cifar10 do
        File.WriteAllBytes(Path.Combine(data, f), Cifar.encode Cifar.Cifar10 records)
    Prompting.Tests.Data.writeText (Path.Combine(data, Cifar.metaFile Cifar.Cifar10)) Prompting.Tests.Data.cifar10Names
    data

[<Tests>]
let tests =
    testList
        "scripts"
        [ test "every protocol script runs its registered benchmark on the reference split and class order by default" {
              let missing = Path.Combine(tempDir (), "nowhere")
              for name, extra, expected in protocolDefaults do
                  let code, stdout, err =
                      runScript name ([ "--data"; missing; "--checkpoint"; fixture "vit_depth5.safetensors"; "--heads"; "2"; "--seed"; "2"; "--device"; "cpu" ] @ extra)
                  Expect.equal code 1 (sprintf "%s: stops at the missing data (%s%s)" name stdout err)
                  Expect.stringContains stdout expected (sprintf "%s %A: the stated run" name extra)
                  Expect.stringContains err "nowhere does not exist" (sprintf "%s: one line naming the missing data" name)
          }

          test "l2p-imagenet-r.fsx --split seeded splits a single-folder tree 80/20 and runs 10 tasks for 1 epoch" {
              let dir = tempDir ()
              let data = Path.Combine(dir, "imagenet-r")
              singleFolderTree data 200 5
              let out = Path.Combine(dir, "run")
              let script = Path.Combine(root, "scripts", "l2p-imagenet-r.fsx")
              let args =
                  [ "fsi"; script; "--"; "--data"; data; "--split"; "seeded"; "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"
                    "--out"; out; "--epochs"; "1"; "--batch-size"; "8"; "--device"; "cpu" ]
              let psi = ProcessStartInfo("dotnet", args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
              use p = Process.Start psi
              let err = p.StandardError.ReadToEndAsync()
              let stdout = p.StandardOutput.ReadToEnd()
              p.WaitForExit()
              Expect.equal p.ExitCode 0 (stdout + err.Result)
              Expect.isTrue (File.Exists(Path.Combine(out, "report.html"))) "report.html written"
              Expect.stringContains stdout "report:" "prints the report path"
              // The registered imagenet-r benchmark splits in memory; the log states each task's images.
              let tasks =
                  File.ReadAllLines(Path.Combine(out, "log.txt"))
                  |> Array.choose (fun line ->
                      let m = System.Text.RegularExpressions.Regex.Match(line, @"task \d+/10: \d+ classes, (\d+) train and (\d+) test images")
                      if m.Success then Some(int m.Groups[1].Value, int m.Groups[2].Value) else None)
              Expect.equal tasks.Length 10 "ten tasks logged"
              Expect.equal (Array.sumBy fst tasks, Array.sumBy snd tasks) (800, 200) "80/20 split of 1000 images (ImageNet-R has 200 classes)"
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
          }

          test "results-cifar10.fsx passes --query-depth to every run and states it" {
              let dir = tempDir ()
              let data = tinyCifar10 dir
              let script = Path.Combine(root, "scripts", "results-cifar10.fsx")
              let runScript (extra: string list) =
                  let out = Path.Combine(dir, "sweep")
                  let args =
                      [ "fsi"; script; "--"; "--data"; data; "--checkpoint"; fixture "vit_depth5.safetensors"; "--out"; out
                        "--methods"; "l2p,simplecil"; "--seeds"; "0"; "--image-size"; "32"; "--train-per-class"; "2"
                        "--test-per-class"; "1"; "--epochs"; "1"; "--batch-size"; "4" ] @ extra
                  let psi = ProcessStartInfo("dotnet", args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
                  use p = Process.Start psi
                  let err = p.StandardError.ReadToEndAsync()
                  let stdout = p.StandardOutput.ReadToEnd()
                  p.WaitForExit()
                  p.ExitCode, stdout, err.Result, out
              let code, _, err, _ = runScript [ "--query-depth"; "6" ]
              Expect.equal code 1 err
              TestSupport.expectMessage (err.Trim()) [ "--query-depth 6"; "5 blocks" ] "a depth beyond the checkpoint's"
              let code, stdout, err, out = runScript [ "--query-depth"; "2" ]
              Expect.equal code 0 (stdout + err)
              Expect.stringContains stdout "query after 2 blocks" "the printed description"
              Expect.stringContains (File.ReadAllText(Path.Combine(out, "table.md"))) "query after 2 blocks" "table.md"
              Expect.isTrue (File.Exists(Path.Combine(out, "results.md"))) "the sweep's own results"
              Expect.isTrue (File.Exists(Path.Combine(out, "sweep-definition.json"))) "run as a sweep definition"
              for m in [ "l2p"; "simplecil" ] do
                  use config = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "runs", sprintf "%s-s0" m, "config.json")))
                  let recorded = config.RootElement.GetProperty("Config").GetProperty("Method").GetProperty("QueryDepth")
                  Expect.equal (recorded.GetInt32()) 2 (sprintf "%s: prompting run got --query-depth 2" m)
          }

          test "compose.fsx composes g-coda from registered parts and runs it on cifar10 with its own recipe" {
              let dir = tempDir ()
              let data = tinyCifar10 dir
              let out = Path.Combine(dir, "run")
              let code, stdout, err =
                  runDotnet [ "fsi"; Path.Combine(root, "scripts", "compose.fsx"); "--"; "--data"; data; "--checkpoint"; fixture "vit_depth5.safetensors"
                              "--heads"; "2"; "--image-size"; "32"; "--epochs"; "1"; "--components"; "10"; "--out"; out; "--device"; "cpu" ]
              Expect.equal code 0 (stdout + err)
              Expect.stringContains stdout "report:" "prints the report path"
              use config = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "config.json")))
              let c = config.RootElement.GetProperty "Config"
              let m = c.GetProperty "Method"
              Expect.equal (m.GetProperty("Name").GetString()) "g-coda" "the composed method"
              Expect.equal (c.GetProperty("Benchmark").GetString()) "cifar10" "a registered benchmark"
              Expect.equal (c.GetProperty("Tasks").GetInt32()) 5 "5 tasks"
              // The parts as the registered methods define them: the G-prompt of dualprompt-coda and CODA's pool.
              let groups = m.GetProperty "Groups"
              let general = Prompting.Engine.Json.deserialize<Prompting.Prompts.PromptGroup> "groups[0]" (groups[0].GetRawText())
              Expect.equal general Prompting.Prompts.Methods.dualPromptCoda.Groups.Head "the G-prompt, unchanged"
              let pool = groups[1]
              Expect.equal (pool.GetProperty("Length").GetInt32()) 8 "CODA's prompt length"
              let compact (e: JsonElement) = Regex.Replace(e.GetRawText(), @"\s", "")
              Expect.stringContains (compact (pool.GetProperty "Layers")) "[2,3,4]" "layers 2-4"
              Expect.stringContains (compact (pool.GetProperty "Source")) "\"Components\":10" "a pool of --components 10"
              let recipe = m.GetProperty "Recipe"
              Expect.equal (recipe.GetProperty("BatchSize").GetInt32()) 64 "its own batch"
              Expect.equal (recipe.GetProperty("Epochs").GetInt32()) 1 "--epochs overrides only the epochs"
              Expect.isTrue (recipe.GetProperty("DropLast").GetBoolean()) "CODA's drop-last, inherited"
              Expect.stringContains (recipe.GetProperty("Schedule").GetRawText()) "QuarterCosine" "CODA's schedule, inherited"
              Expect.equal (Prompting.Tests.CliRun.matrix out).Length 5 "five tasks evaluated"
          }

          test "every name compose.fsx uses is documented in docs/adding-a-method.md" {
              let script = File.ReadAllText(Path.Combine(root, "scripts", "compose.fsx"))
              let code = script.Split('\n') |> Array.filter (fun l -> not (l.TrimStart().StartsWith "//")) |> String.concat "\n"
              let doc = File.ReadAllText(Path.Combine(root, "docs", "adding-a-method.md"))
              // Qualified names (Methods.codaPrompt), record fields set (Name =) and constructors used.
              let qualified = [ for m in Regex.Matches(code, @"\b([A-Z][A-Za-z]*(?:\.[A-Za-z]+)+)") -> m.Groups[1].Value ]
              let fields = [ for m in Regex.Matches(code, @"\b([A-Z][A-Za-z]*) =") -> m.Groups[1].Value ]
              let constructors = [ "Only"; "Components"; "ClassIncremental"; "Normalised" ]
              let names = qualified @ fields @ constructors |> List.filter (fun n -> not (n.StartsWith "Prompting.")) |> List.distinct
              Expect.isNonEmpty names "names found"
              for name in names do
                  Expect.stringContains doc (sprintf "`%s" name) (sprintf "%s is documented" name)
          } ]
