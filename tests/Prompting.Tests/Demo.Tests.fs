/// The demo: getting the data (apt, downloader, instructions), the comparison and its report,
/// and a whole demo on tiny generated IDX files.
module Prompting.Tests.Demo

open System
open System.IO
open System.IO.Compression
open Expecto
open TorchSharp
open Prompting
open Prompting.Demo
open Prompting.Pretrain
open Prompting.Vit
open Prompting.Tests.Fixtures
open Prompting.Tests.TestSupport

/// Writes the four Fashion-MNIST IDX files (gzipped) with `perClass` train and test images of
/// each of the 10 classes: 8×8 grey images, a bar whose place tells the class.
let writeIdx (dir: string) (perClass: int) =
    Directory.CreateDirectory dir |> ignore
    let bigEndian (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]
    let gz (name: string) (bytes: byte[]) =
        use file = File.Create(Path.Combine(dir, name))
        use zip = new GZipStream(file, CompressionLevel.Fastest)
        zip.Write(bytes, 0, bytes.Length)
    for split, salt in [ "train", 0; "t10k", 1 ] do
        let count = 10 * perClass
        let labels = Array.init count (fun i -> byte (i % 10))
        let pixels =
            Array.init count (fun i ->
                let c = i % 10
                Array.init 64 (fun k ->
                    let y, x = k / 8, k % 8
                    if y = c % 8 || x = (c + 3) % 8 then 220uy else byte ((x * 5 + y * 3 + i + salt) % 40)))
            |> Array.concat
        gz (split + "-images-idx3-ubyte.gz") (Array.concat [ [| 0uy; 0uy; 8uy; 3uy |]; bigEndian count; bigEndian 8; bigEndian 8; pixels ])
        gz (split + "-labels-idx1-ubyte.gz") (Array.concat [ [| 0uy; 0uy; 8uy; 1uy |]; bigEndian count; labels ])
    dir

/// A data environment over temporary directories that records the commands it is asked to run.
type private FakeMachine(root: string, isRoot: bool, hasApt: bool, sudo: bool, aptWorks: bool, installNeedsUpdate: bool, download: bool) =
    let commands = ResizeArray<string>()
    let downloads = ref 0
    let mutable updated = false
    let system = Path.Combine(root, "system")
    let cache = Path.Combine(root, "cache")
    member _.Commands = List.ofSeq commands
    member _.Downloads = downloads.Value
    member _.System = system
    member _.Cache = cache
    member _.Environment: DataEnvironment =
        { IsRoot = isRoot
          HasAptGet = hasApt
          PasswordlessSudo = fun () -> sudo
          Exec =
            fun program args ->
                let line = String.Join(" ", program :: args)
                commands.Add line
                if line.EndsWith "update" then
                    updated <- true
                    0
                elif aptWorks && (updated || not installNeedsUpdate) then
                    writeIdx system 1 |> ignore
                    0
                else 100
          Download =
            fun () ->
                downloads.Value <- downloads.Value + 1
                if download then writeIdx cache 1 else Errors.fail "cannot download http://example (no route to host)"
          SystemDirectory = system
          CacheDirectory = cache
          Log = ignore }

let private machine (isRoot, hasApt, sudo, aptWorks, needsUpdate, download) = FakeMachine(tempDir (), isRoot, hasApt, sudo, aptWorks, needsUpdate, download)

[<Tests>]
let data =
    testList
        "demo data"
        [ test "apt is used as root, through sudo -n without a password, and not otherwise" {
              let command (isRoot, hasApt, sudo) = DemoData.aptCommand (machine(isRoot, hasApt, sudo, true, false, true).Environment)
              Expect.equal (command (true, true, false)) (Some("apt-get", [ "install"; "-y"; "dataset-fashion-mnist" ])) "root"
              Expect.equal (command (false, true, true)) (Some("sudo", [ "-n"; "apt-get"; "install"; "-y"; "dataset-fashion-mnist" ])) "password-less sudo"
              Expect.equal (command (false, true, false)) None "sudo would ask for a password"
              Expect.equal (command (true, false, true)) None "no apt-get"
          }

          test "installed data is used as it is: nothing run, nothing downloaded" {
              let m = machine (true, true, true, true, false, true)
              writeIdx m.System 1 |> ignore
              Expect.equal (DemoData.ensure m.Environment None) m.System "the package's directory"
              Expect.isEmpty m.Commands "no command"
              Expect.equal m.Downloads 0 "no download"
              let cached = machine (true, true, true, true, false, true)
              writeIdx cached.Cache 1 |> ignore
              Expect.equal (DemoData.ensure cached.Environment None) cached.Cache "the download cache"
              Expect.isEmpty cached.Commands "no command for cached data"
          }

          test "missing data as root: apt-get install -y dataset-fashion-mnist, then the package's directory" {
              let m = machine (true, true, false, true, false, true)
              Expect.equal (DemoData.ensure m.Environment None) m.System "installed"
              Expect.equal m.Commands [ "apt-get install -y dataset-fashion-mnist" ] "one install"
              Expect.equal m.Downloads 0 "no download"
          }

          test "on a machine without package lists, apt-get update and a second install" {
              let m = machine (false, true, true, true, true, true)
              Expect.equal (DemoData.ensure m.Environment None) m.System "installed after the update"
              Expect.equal
                  m.Commands
                  [ "sudo -n apt-get install -y dataset-fashion-mnist"; "sudo -n apt-get update"; "sudo -n apt-get install -y dataset-fashion-mnist" ]
                  "install, update, install"
          }

          test "without usable apt, or when it fails, the downloader" {
              for isRoot, hasApt, sudo, aptWorks in [ false, true, false, true; true, false, true, true; true, true, true, false ] do
                  let m = machine (isRoot, hasApt, sudo, aptWorks, false, true)
                  Expect.equal (DemoData.ensure m.Environment None) m.Cache "downloaded into the cache"
                  Expect.equal m.Downloads 1 "one download"
          }

          test "when everything fails, one line says which files to put where" {
              let m = machine (false, true, false, true, false, false)
              let message = promptingError "no data" (fun () -> DemoData.ensure m.Environment None)
              expectMessage
                  message
                  [ "train-images-idx3-ubyte.gz"; "train-labels-idx1-ubyte.gz"; "t10k-images-idx3-ubyte.gz"; "t10k-labels-idx1-ubyte.gz"
                    m.Cache; "apt-get install -y dataset-fashion-mnist"; "no route to host" ]
                  "everything failed"
          }

          test "--data pointing at an empty directory: the files and that directory, nothing installed" {
              let m = machine (true, true, true, true, false, true)
              let empty = tempDir ()
              let message = promptingError "empty --data" (fun () -> DemoData.ensure m.Environment (Some empty))
              expectMessage message [ empty; "train-images-idx3-ubyte.gz"; "t10k-labels-idx1-ubyte.gz" ] "empty directory"
              Expect.isEmpty m.Commands "no apt for a directory the user chose"
              Expect.equal m.Downloads 0 "no download either"
          } ]

/// A run summary with a given accuracy matrix (class-incremental).
let private summary (name: string) (matrix: float[][]) (seconds: float) : RunSummary =
    let evaluations = matrix |> Array.map (Array.map (fun a -> { ClassIncremental = a; TaskIncremental = a; PromptChoice = None }))
    { Method = name; Seed = 0; Metrics = Metrics.ofEvaluations evaluations; TrainSeconds = seconds; PeakMemoryBytes = 0L
      TrainableParameters = 10L; Checkpoint = "c"; CheckpointSha256 = "0"; ConfigJson = "{}"
      Settings = ""; TaskClasses = []; EpochLosses = []; Warnings = [] }

let private forgetful = summary "sequential" [| [| 90.0 |]; [| 0.0; 95.0 |] |] 3.0
let private keeper = summary "dualprompt" [| [| 90.0 |]; [| 80.0; 70.0 |] |] 5.5
let private other = summary "coda-prompt" [| [| 85.0 |]; [| 60.0; 70.0 |] |] 4.0

[<Tests>]
let comparison =
    testList
        "demo comparison"
        [ test "the table: method, A_N, F_N and train time, from the accuracy matrices" {
              Expect.equal
                  (DemoReport.rows [ keeper; forgetful ])
                  [ [ "dualprompt"; "75.00"; "10.00"; "5.5" ]; [ "sequential"; "47.50"; "90.00"; "3.0" ] ]
                  "(80 + 70) / 2 and 90 - 80; (0 + 95) / 2 and 90 - 0"
          }

          test "the verdict names the best method other than the baseline and the margin" {
              let line = DemoReport.verdict "sequential" [ other; keeper; forgetful ]
              Expect.stringContains line "dualprompt keeps what sequential forgets" "best method"
              Expect.stringContains line "75.00% vs 47.50% (+27.5 points)" "A_N and margin"
              Expect.stringContains line "F_N 10.00 vs 90.00" "forgetting"
              Expect.stringContains (DemoReport.verdict "sequential" [ keeper ]) "no comparison" "no baseline"
          }

          test "the report is one self-contained page with both plots and the table" {
              let settings = DemoSettings.standard
              let backbone = { Path = "/cache/mae-0123.safetensors"; Key = "0123"; Reused = true }
              let html = DemoReport.html settings backbone (Demo.taskClasses settings) [ keeper; other; forgetful ]
              Expect.stringContains html "Plotly.newPlot" "plots are drawn"
              Expect.isFalse (html.Contains "<script src=") "no external scripts"
              Expect.isGreaterThan html.Length 3_000_000 "plotly.js inlined"
              for text in [ "Accuracy after each task"; "Final accuracy per task"; "A_N (%)"; "75.00"; "47.50"; "coda-prompt"; "mae-0123" ] do
                  Expect.stringContains html text text
          }

          test "each task's class names come from the seeded class order, all ten once" {
              let tasks = Demo.taskClasses DemoSettings.standard
              Expect.equal tasks.Length 5 "five tasks"
              Expect.isTrue (tasks |> List.forall (fun t -> t.Length = 2)) "two classes each"
              Expect.equal (tasks |> List.concat |> List.sort) (List.sort (List.ofArray Prompting.Data.Idx.fashionMnistClasses)) "all ten"
          }

          test "the demo's runs: 5 class-incremental tasks, the method's recipe, the demo's sizes" {
              use dir = new TempDir()
              let checkpoint = dir.File "backbone.safetensors"
              torch.manual_seed 0L |> ignore
              use model = new VisionTransformer(VitConfig.custom 28 4 5 16 2 0)
              Checkpoint.export checkpoint model
              let s = DemoSettings.standard
              let c = (Demo.runConfig { s with LearningRates = Map.ofList [ "sequential", 0.5 ] } checkpoint "/data" "dualprompt").Config
              Expect.equal c.Method.Name "dualprompt" "method"
              Expect.equal c.Tasks 5 "tasks"
              Expect.equal c.Scenario Prompting.Engine.ClassIncremental "class-incremental"
              Expect.equal c.ImageSize 28 "the backbone's resolution"
              Expect.equal (c.TrainPerClass, c.TestPerClass) (Some s.TrainPerClass, Some s.TestPerClass) "subsets"
              Expect.equal c.Method.Recipe.Epochs s.Epochs "epochs"
              Expect.equal c.Method.Recipe.LearningRate Prompting.Prompts.Methods.Recipes.dualPrompt.LearningRate "recipe's rate"
              let seq = (Demo.runConfig { s with LearningRates = Map.ofList [ "sequential", 0.5 ] } checkpoint "/data" "sequential").Config
              Expect.equal seq.Method.Recipe.LearningRate 0.5 "the demo's rate where it sets one"
              let vq = (Demo.runConfig s checkpoint "/data" "vq-prompt").Config
              Expect.equal (Some vq.Method.Calibration) (s.Alignment |> Option.map Prompting.Prompts.AlignedHead) "VQ-Prompt's aligned head rescaled"
              Expect.equal c.Method.Calibration Prompting.Prompts.TrainedHead "DualPrompt has none, and gets none"
          } ]

[<Tests>]
let threads =
    testList
        "demo threads"
        [ test "all cores when the CPU is idle or its load unknown, one when it is busy" {
              Expect.equal (CpuThreads.choose 2 (Some 0.97)) 2 "idle"
              Expect.equal (CpuThreads.choose 2 (Some 0.75)) 2 "three quarters idle"
              Expect.equal (CpuThreads.choose 2 (Some 0.4)) 1 "busy"
              Expect.equal (CpuThreads.choose 8 None) 8 "unknown"
              Expect.equal (CpuThreads.choose 0 None) 1 "at least one"
          }

          test "the idle share is a fraction on Linux" {
              match CpuThreads.idleShare (TimeSpan.FromMilliseconds 50.0) with
              | Some share -> Expect.isTrue (share >= 0.0 && share <= 1.0) (sprintf "share %g" share)
              | None -> Expect.isFalse (File.Exists "/proc/stat") "None only without /proc/stat"
          } ]

[<Tests>]
let endToEnd =
    testSequenced
    <| testList
        "demo end to end"
        [ test "a whole demo on tiny IDX files: backbone, runs, report; the second time the backbone is reused" {
              use dir = new TempDir()
              let data = writeIdx (dir.File "fashion") 4
              let settings =
                  { DemoSettings.standard with
                      Backbone =
                        { MaeConfig.demo with
                            Encoder = VitConfig.custom 8 2 5 16 2 0
                            DecoderWidth = 8
                            DecoderDepth = 1
                            DecoderHeads = 2
                            Epochs = 1
                            BatchSize = 16
                            WarmupEpochs = 0.0 }
                      Methods = [ "dualprompt"; "sequential" ]
                      TrainPerClass = 4
                      TestPerClass = 4
                      Epochs = 1
                      BatchSize = 8 }
              let lines = ResizeArray<string>()
              let options =
                  { Output = dir.File "out"; CacheDirectory = dir.File "cache"; Data = Some data; Device = torch.CPU
                    Threads = Some(torch.get_num_threads ()); Log = lines.Add }
              let first = Demo.run settings options
              Expect.isFalse first.Backbone.Reused "pretrained the first time"
              Expect.equal (first.Runs |> List.map _.Method) [ "dualprompt"; "sequential" ] "one run per method, in order"
              for r in first.Runs do
                  Expect.equal r.Metrics.Tasks 5 (r.Method + ": five tasks")
                  Expect.isTrue (File.Exists(Path.Combine(Demo.runsDirectory options.Output, r.Method, "metrics.json"))) (r.Method + ": run directory")
              Expect.isTrue (File.Exists first.Report) "report written"
              Expect.stringContains (File.ReadAllText first.Report) "Plotly.newPlot" "with plots"
              let second = Demo.run settings options
              Expect.isTrue second.Backbone.Reused "reused the second time"
              Expect.equal second.Backbone.Path first.Backbone.Path "the same file"
              Expect.isTrue (lines |> Seq.exists (fun l -> l.Contains "reusing")) "says so"
          } ]
