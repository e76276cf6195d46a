/// VPT's transfer protocol through `prompting sweep --select-split tune`, end to end on miniature
/// VTAB-1k and FGVC layouts (the benchmark tests' generators): the selection runs train on
/// train800 (FGVC: train) and test on val200 (val), the chosen grid point is the best by their
/// recorded scores, the final runs train on train800val200 (train+val) and test on test, and the
/// results table gives the chosen point's mean and standard deviation over the seeds.
module Prompting.Tests.SweepTransfer

open System
open System.IO
open System.Text.Json
open Expecto
open Prompting
open Prompting.Tests.Fixtures
open Prompting.Tests.SweepSupport

let private seeds = [ 0; 1 ]

/// VPT base rates (the recipe scales them by batch / 256, as VPT does).
let private rates = [ "0.25"; "25" ]

let private configSplit (run: string) =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "config.json")))
    doc.RootElement.GetProperty("Config").GetProperty("Split").GetString()

/// The "task 1/1: ..." line of a run's log.
let private taskLine (run: string) =
    File.ReadAllLines(Path.Combine(run, "log.txt")) |> Array.tryFind (fun l -> l.Contains "task 1/1:") |> Option.defaultValue ""

let private finalAccuracy (run: string) =
    (Metrics.readJson (Path.Combine(run, "metrics.json"))).ClassIncremental.FinalAverageAccuracy

/// The cells of the Markdown table rows in `md` (trimmed, without the outer bars).
let private rows (md: string) =
    [ for line in md.Split('\n') do
          if line.StartsWith "| " then yield line.Trim().Trim('|').Split('|') |> Array.map _.Trim() |> List.ofArray ]

/// The run options of a transfer task on the sweep tests' tiny checkpoint.
let private transferOptions (benchmark: string) (data: string) =
    let _, checkpoint = inputs.Force()
    [ "--benchmark"; benchmark; "--data"; data; "--checkpoint"; checkpoint; "--epochs"; "1"; "--batch-size"; "4"
      "--image-size"; "32"; "--device"; "cpu" ]

/// Checks a finished `--select-split tune` sweep of vpt-deep over `rates` × `seeds`: the selection
/// runs' split and data sizes, the choice against their recorded scores, the final runs' split
/// and sizes, and the results table's statistics over the seeds.
let private expectProtocol (sweep: string) (tuneImages: string) (finalImages: string) =
    let selection = Path.Combine(sweep, "selection")
    let group (rate: string) = sprintf "vpt-deep-LearningRate=%s" rate
    let selectionRun (rate: string) (seed: int) = Path.Combine(selection, "runs", sprintf "%s-s%d" (group rate) seed)
    Expect.equal (Directory.GetDirectories(Path.Combine(selection, "runs"))).Length 4 "2 grid points x 2 seeds on the tune split"
    for rate in rates do
        for seed in seeds do
            let run = selectionRun rate seed
            Expect.equal (configSplit run) "tune" (run + ": ran with --split tune")
            Expect.stringContains (taskLine run) tuneImages (run + ": trained on train800/train, tested on val200/val")
    // The choice, against the selection runs' own metrics.json (their val accuracy).
    let means = [ for rate in rates -> group rate, seeds |> List.averageBy (fun s -> finalAccuracy (selectionRun rate s)) ]
    let best = means |> List.map snd |> List.max
    let expected = means |> List.find (fun (_, m) -> m = best) |> fst
    use choice = JsonDocument.Parse(File.ReadAllText(Path.Combine(sweep, "selection.json")))
    Expect.equal (choice.RootElement.GetProperty("split").GetString()) "tune" "selection.json names the split"
    let entry = choice.RootElement.GetProperty("methods").GetProperty("vpt-deep")
    let chosen = entry.GetProperty("chosen").GetString()
    Expect.equal chosen expected (sprintf "the best mean val A_N, first in grid order on ties (%A)" means)
    let scores = [ for g in entry.GetProperty("scores").EnumerateArray() -> g.GetProperty("group").GetString(), g.GetProperty("validation_final_average_accuracy").GetDouble() ]
    Expect.equal (scores |> List.map fst) (means |> List.map fst) "every grid point scored, in grid order"
    for (g, score), (_, mean) in List.zip scores means do
        Expect.floatClose Accuracy.veryHigh score mean (g + ": the recorded score is the mean over seeds")
    // The final runs: the chosen point only, every seed, on train800val200 (train+val) against test.
    let finals = [ for s in seeds -> Path.Combine(sweep, "runs", sprintf "%s-s%d" chosen s) ]
    Expect.equal (Directory.GetDirectories(Path.Combine(sweep, "runs")) |> Array.map Path.GetFileName |> Array.sort)
        (finals |> List.map Path.GetFileName |> Array.ofList |> Array.sort) "only the chosen point runs again, with every seed"
    for run in finals do
        Expect.equal (configSplit run) "final" (run + ": the final split")
        Expect.stringContains (taskLine run) finalImages (run + ": trained on train800val200/train+val, tested on test")
    // The table: the chosen point's test A_N over the seeds (mean, sample standard deviation).
    let values = finals |> List.map finalAccuracy
    let mean = List.average values
    let std = abs (values[0] - values[1]) / sqrt 2.0
    use results = JsonDocument.Parse(File.ReadAllText(Path.Combine(sweep, "results.json")))
    let groups = [ for g in results.RootElement.GetProperty("groups").EnumerateArray() -> g ]
    Expect.equal (groups |> List.map (fun g -> g.GetProperty("group").GetString())) [ chosen ] "one group: the chosen point"
    let stat = groups.Head.GetProperty "final_average_accuracy"
    Expect.equal (stat.GetProperty("n").GetInt32()) 2 "over both seeds"
    Expect.floatClose Accuracy.veryHigh (stat.GetProperty("mean").GetDouble()) mean "the test mean over seeds"
    Expect.floatClose Accuracy.veryHigh (stat.GetProperty("std").GetDouble()) std "the sample standard deviation over seeds"
    Expect.equal (results.RootElement.GetProperty("selection").GetProperty("methods").GetProperty("vpt-deep").GetProperty("chosen").GetString()) chosen
        "results.json says which point was chosen"
    let md = File.ReadAllText(Path.Combine(sweep, "results.md"))
    let f2 (x: float) = x.ToString("F2", Globalization.CultureInfo.InvariantCulture)
    let table = rows md
    let groupRow = table |> List.find (fun r -> r.Head = chosen)
    Expect.equal groupRow[1] "2" "results.md: two seeds"
    Expect.stringStarts groupRow[2] (sprintf "%s ± %s (± " (f2 mean) (f2 std)) "results.md: the chosen point's test A_N, mean ± sd"
    Expect.stringContains md "## Selection" "results.md: the selection section"
    Expect.stringContains md "split `tune`" "results.md: chosen on the tune split"
    let chosenRows = table |> List.filter (fun r -> r.Length = 5 && r[0] = "vpt-deep")
    Expect.equal (chosenRows |> List.map (fun r -> r[1])) (means |> List.map fst) "results.md: every grid point's selection score"
    Expect.equal (chosenRows |> List.filter (fun r -> r[4] = "yes") |> List.map (fun r -> r[1], r[2], r[3])) [ chosen, f2 best, "2" ]
        "results.md: the chosen row with its score and seeds"

[<Tests>]
let tests =
    testSequencedGroup "sweep transfer"
    <| testList
        "sweep transfer"
        [ test "VTAB-1k: --select-split tune chooses on train800/val200, then train800val200/test with every seed" {
              let dir = tempDir ()
              let data = Path.Combine(dir, "vtab-1k", "kitti")
              Prompting.Tests.Benchmarks.vtabTask data 4
              let sweep = Path.Combine(dir, "sweep")
              let args =
                  [ "sweep"; "--methods"; "vpt-deep"; "--seeds" ] @ (seeds |> List.map string)
                  @ [ "--grid"; "Method.Recipe.LearningRate=" + String.Join(",", rates); "--select-split"; "tune"; "--parallel"; "2"; "--out"; sweep; "--" ]
                  @ transferOptions "vtab1k-kitti" data
              let code, stdout, err = runCliEnv [] args
              Expect.equal code 0 (err + stdout)
              // kitti here: 4 classes, 2 train800 + 1 val200 + 1 test image each
              expectProtocol sweep "4 classes, 8 train and 4 test images" "4 classes, 12 train and 4 test images"
              let code, stdout, err = runCliEnv [] args
              Expect.equal code 0 err
              Expect.equal (stdout.Split("0 to run").Length - 1) 2 "again: nothing to run in either stage"
          }

          test "FGVC from a sweep file: \"selectSplit\": \"tune\" chooses on train/val, then train+val/test" {
              let dir = tempDir ()
              let data = Path.Combine(dir, "CUB_200_2011")
              Prompting.Tests.Benchmarks.fgvcCub data
              let file = Path.Combine(dir, "transfer.sweep.json")
              let strings (xs: string list) = "[" + String.Join(", ", xs |> List.map JsonSerializer.Serialize) + "]"
              File.WriteAllText(
                  file,
                  sprintf """{ "run": %s, "methods": ["vpt-deep"], "seeds": [0, 1], "grid": { "Method.Recipe.LearningRate": [%s] }, "selectSplit": "tune" }"""
                      (strings (transferOptions "fgvc-cub" data)) (String.Join(", ", rates))
              )
              let sweep = Path.Combine(dir, "sweep")
              let code, stdout, err = runCliEnv [] [ "sweep"; "--file"; file; "--parallel"; "2"; "--out"; sweep ]
              Expect.equal code 0 (err + stdout)
              // CUB here: 200 classes, one train, one val and one test image each
              expectProtocol sweep "200 classes, 200 train and 200 test images" "200 classes, 400 train and 200 test images"
          }

          test "scripts/vpt-transfer.sweep.json is VPT's search: base rates and weight decays on tune, three seeds" {
              let file = Path.Combine(root, "scripts", "vpt-transfer.sweep.json")
              let spec = Prompting.Sweep.Definition.readFile file (Path.Combine(tempDir (), "inline.json"))
              let numbers (field: string) =
                  (spec.Grid |> List.find (fun a -> a.Field = field)).Values
                  |> List.map (fun v -> Double.Parse(v, Globalization.CultureInfo.InvariantCulture))
              // VPT (Jia et al. 2022, appendix): base lr in {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05},
              // weight decay in {0.01, 0.001, 0.0001, 0}; lr = base x batch / 256.
              Expect.equal (numbers "Method.Recipe.LearningRate") [ 50.0; 25.0; 10.0; 5.0; 2.5; 1.0; 0.5; 0.25; 0.1; 0.05 ] "VPT's base rates"
              Expect.equal (numbers "Method.Recipe.WeightDecay") [ 0.01; 0.001; 0.0001; 0.0 ] "VPT's weight decays"
              Expect.equal spec.Grid.Length 2 "no other axis"
              Expect.equal (spec.Methods, spec.Seeds, spec.SelectSplit, spec.Select) ([ "vpt-deep" ], [ 0; 1; 2 ], Some "tune", None) "vpt-deep, three seeds, chosen on tune"
              Expect.isEmpty spec.RunOptions "benchmark, data and checkpoint come after --"
              // The grid value is VPT's base rate only because the recipe scales it as VPT does.
              let recipe = Prompting.Prompts.Methods.vptDeep.Recipe
              Expect.isTrue recipe.ScaleByBatch "the recipe's LearningRate is scaled by batch / 256"
              Expect.equal (recipe.BatchSize, recipe.Epochs) (128, 100) "VPT's batch 128 and 100 epochs"
              Expect.floatClose Accuracy.veryHigh (Prompting.Prompts.Training.baseRate { recipe with LearningRate = 25.0 }) 12.5 "base 25 trains at 25 x 128 / 256"
              // With a benchmark after --: 10 x 4 grid points x 3 seeds, each recipe field set, on tune first.
              let data = Path.Combine(tempDir (), "vtab-1k", "kitti")
              Prompting.Tests.Benchmarks.vtabTask data 4
              let withData = { spec with RunOptions = transferOptions "vtab1k-kitti" data }
              let all = Prompting.Cli.Commands.Sweep.points withData
              Expect.equal (all |> List.map _.Name |> List.distinct).Length 120 "120 distinct points"
              let point = all |> List.find (fun p -> p.Name = "vpt-deep-LearningRate=2.5-WeightDecay=0.0001-s1")
              let config = Prompting.Engine.Json.deserialize<Prompting.Engine.RunConfig> "point" point.Config
              Expect.equal (config.Method.Recipe.LearningRate, config.Method.Recipe.WeightDecay, config.Seed) (2.5, 0.0001, 1) "the grid sets the method's recipe"
              Expect.equal config.Split (Some "final") "final runs: the benchmark's default split"
              let selection = Prompting.Cli.Commands.Sweep.splitPoints withData all "tune"
              Expect.equal (selection |> List.map _.Name) (all |> List.map _.Name) "the same points on the selection split"
              for p in selection do
                  Expect.equal (Prompting.Engine.Json.deserialize<Prompting.Engine.RunConfig> "point" p.Config).Split (Some "tune") (p.Name + ": tune")
          }

          test "vpt-transfer.fsx runs one point of the protocol on a registered transfer benchmark (tune, then final)" {
              let dir = tempDir ()
              let data = Path.Combine(dir, "vtab-1k", "kitti")
              Prompting.Tests.Benchmarks.vtabTask data 4
              let _, checkpoint = inputs.Force()
              for split, images in [ "tune", "4 classes, 8 train and 4 test images"; "final", "4 classes, 12 train and 4 test images" ] do
                  let out = Path.Combine(dir, split)
                  let code, stdout, err =
                      runIn dir [] dotnet
                          [ "fsi"; Path.Combine(root, "scripts", "vpt-transfer.fsx"); "--"; "--benchmark"; "vtab1k-kitti"; "--data"; data
                            "--checkpoint"; checkpoint; "--heads"; "1"; "--split"; split; "--base-lr"; "2.5"; "--weight-decay"; "0.0001"
                            "--epochs"; "1"; "--batch-size"; "4"; "--device"; "cpu"; "--out"; out ]
                  Expect.equal code 0 (stdout + err)
                  Expect.equal (configSplit out) split (split + ": recorded")
                  Expect.stringContains (taskLine out) images (split + ": the split's lists")
                  use config = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "config.json")))
                  let recipe = config.RootElement.GetProperty("Config").GetProperty("Method").GetProperty("Recipe")
                  Expect.equal (recipe.GetProperty("LearningRate").GetDouble(), recipe.GetProperty("WeightDecay").GetDouble()) (2.5, 0.0001) (split + ": the point")
          }

          test "Selection.choose: per method the best mean A_N, the first of equals, groups without results skipped" {
              let group (m: string) (name: string) (values: float list) =
                  ({ Group = name; Method = m; Overrides = []; Seeds = List.mapi (fun i _ -> i) values; Missing = []
                     Statistics = [ Prompting.Sweep.Results.statistic values ] }: Prompting.Sweep.GroupResult)
              let groups =
                  [ group "a" "a-lr=1" [ 40.0; 60.0 ]; group "a" "a-lr=2" [ 55.0; 55.0 ]; group "a" "a-lr=3" [ 70.0; 30.0 ]
                    group "b" "b-lr=1" []; group "b" "b-lr=2" [ 10.0 ]; group "b" "b-lr=3" [ 20.0 ] ]
              let chosen = Prompting.Sweep.Selection.choose groups |> List.map (fun (m, best, all) -> m, best.Group, all.Length)
              Expect.equal chosen [ "a", "a-lr=2", 3; "b", "b-lr=3", 3 ] "55 beats 50 and the later 50; b's unfinished group is skipped"
              let tied = Prompting.Sweep.Selection.choose [ group "a" "a-lr=1" [ 50.0 ]; group "a" "a-lr=2" [ 50.0 ] ]
              Expect.equal (tied |> List.map (fun (_, best, _) -> best.Group)) [ "a-lr=1" ] "ties: the first in grid order"
              let message = TestSupport.promptingError "none" (fun () -> Prompting.Sweep.Selection.choose [ group "a" "a-lr=1" [] ])
              TestSupport.expectMessage message [ "method a"; "no finished selection run" ] "nothing to choose from"
          }

          test "--select-split refusals: one line each, nothing written" {
              let dir = tempDir ()
              let data = Path.Combine(dir, "vtab-1k", "kitti")
              Prompting.Tests.Benchmarks.vtabTask data 4
              let out = Path.Combine(dir, "sweep")
              let sweep (extra: string list) (run: string list) = [ "sweep"; "--methods"; "vpt-deep"; "--seeds"; "0"; "--out"; out ] @ extra @ [ "--" ] @ run
              let grid = [ "--grid"; "Method.Recipe.LearningRate=0.25,25" ]
              let vtab = transferOptions "vtab1k-kitti" data
              Cli.expectOneLineError (sweep (grid @ [ "--select-split"; "tune" ]) (runOptions ()))
                  [ "--select-split tune"; "benchmark imagefolder has no split tune"; "folders" ] |> ignore
              Cli.expectOneLineError (sweep (grid @ [ "--select"; "0.25"; "--select-split"; "tune" ]) vtab) [ "--select 0.25"; "--select-split tune"; "not both" ] |> ignore
              Cli.expectOneLineError (sweep (grid @ [ "--grid"; "Split=tune,final"; "--select-split"; "tune" ]) vtab)
                  [ "grid field Split"; "--select-split tune sets it" ] |> ignore
              Cli.expectOneLineError (sweep [ "--select-split"; "tune" ] vtab) [ "--select-split tune"; "no --grid" ] |> ignore
              Cli.expectOneLineError (sweep (grid @ [ "--select-split"; "tune" ]) (vtab @ [ "--split"; "tune" ]))
                  [ "--select-split tune"; "final runs"; "split tune too" ] |> ignore
              Cli.expectOneLineError (sweep (grid @ [ "--select-split"; "final" ]) vtab) [ "--select-split final"; "final runs"; "split final too" ] |> ignore
              let file = Path.Combine(dir, "bad.sweep.json")
              File.WriteAllText(file, """{ "methods": ["vpt-deep"], "seeds": [0], "grid": { "Method.Recipe.LearningRate": [1] }, "selectSplit": 3 }""")
              Cli.expectOneLineError [ "sweep"; "--file"; file; "--out"; out ] [ "selectSplit"; "split name" ] |> ignore
              Expect.isFalse (Directory.Exists out) "nothing written for refused sweeps"
          } ]
