/// The pure parts of a sweep: JSON paths and overrides checked against the base configuration,
/// point names, the record's differences, point states from files, statistics, the job script.
module Prompting.Tests.SweepDefinition

open System.IO
open System.Text.Json
open Expecto
open Prompting
open Prompting.Sweep
open Prompting.Tests.TestSupport

let private baseJson =
    """{ "Method": { "Name": "dualprompt", "Groups": [ { "Length": 5, "Layers": [0, 1] } ], "QueryDepth": null,
                     "Recipe": { "Epochs": 5, "LearningRate": 0.005, "Optimizer": "Adam", "Schedule": "Constant", "Bf16": false } },
         "Seed": 0 }"""

let private valueAt (json: string) (path: string list) =
    use doc = JsonDocument.Parse json
    let mutable e = doc.RootElement
    for p in path do
        e <- (match System.Int32.TryParse p with
              | true, i -> e[i]
              | _ -> e.GetProperty p)
    e.GetRawText()

let private spec methods seeds grid =
    { Base = None; RunOptions = []; Methods = methods; MethodOptions = []; Seeds = seeds; Grid = grid; Select = None; SelectSplit = None }

[<Tests>]
let tests =
    testList
        "sweep definition"
        [ test "paths: names, indices, and one-line errors for malformed ones" {
              Expect.equal (Definition.parsePath "Method.Groups[0].Length")
                  [ Definition.Name "Method"; Definition.Name "Groups"; Definition.Index 0; Definition.Name "Length" ] "parsed"
              for bad in [ ""; "Training..Epochs"; "Groups[x]"; "Groups[0"; "a b" ] do
                  let message = promptingError bad (fun () -> Definition.parsePath bad)
                  expectMessage message [ "grid field"; "JSON path" ] bad
          }

          test "grid flags: values are JSON when they parse, strings otherwise; commas inside brackets stay" {
              let axis = Definition.parseGridFlag "Method.Recipe.LearningRate=0.01,1e-3,abc,true"
              Expect.equal axis.Field "Method.Recipe.LearningRate" "field"
              Expect.equal axis.Values [ "0.01"; "1e-3"; "\"abc\""; "true" ] "values"
              let unions = Definition.parseGridFlag """Method.Recipe.Schedule=Constant,{"Cosine":{"final":0}},[1,2]"""
              Expect.equal unions.Values [ "\"Constant\""; """{"Cosine":{"final":0}}"""; "[1,2]" ] "bracket-aware split"
              let message = promptingError "no =" (fun () -> Definition.parseGridFlag "Method.Recipe.LearningRate")
              expectMessage message [ "--grid"; "FIELD=V1,V2" ] "no ="
          }

          test "overrides set values at their paths and leave the rest" {
              let json = Definition.apply "m" baseJson [ "Method.Recipe.LearningRate", "0.1"; "Method.Groups[0].Length", "8"; "Method.QueryDepth", "3" ]
              Expect.equal (valueAt json [ "Method"; "Recipe"; "LearningRate" ]) "0.1" "learning rate"
              Expect.equal (valueAt json [ "Method"; "Groups"; "0"; "Length" ]) "8" "prompt length"
              Expect.equal (valueAt json [ "Method"; "QueryDepth" ]) "3" "an option (null) takes a number"
              Expect.equal (valueAt json [ "Method"; "Recipe"; "Epochs" ]) "5" "untouched"
              let union = Definition.apply "m" baseJson [ "Method.Recipe.Schedule", """{"Cosine":{"final":0}}""" ]
              Expect.equal (valueAt union [ "Method"; "Recipe"; "Schedule"; "Cosine"; "final" ]) "0" "a union case with fields replaces a bare one"
          }

          test "an unknown field or a wrong JSON type is one clear line naming the field" {
              let cases =
                  [ [ "Method.Recipe.LerningRate", "0.1" ], [ "Method.Recipe.LerningRate"; "no field LerningRate"; "LearningRate" ]
                    [ "Method.Recipe.LearningRate", "\"fast\"" ], [ "Method.Recipe.LearningRate"; "a string"; "a number" ]
                    [ "Method.Recipe.Bf16", "1" ], [ "Method.Recipe.Bf16"; "a number"; "true or false" ]
                    [ "Method.Groups[3].Length", "8" ], [ "Method.Groups"; "1 entries"; "[3]" ]
                    [ "Seed.Value", "1" ], [ "Seed"; "not an object" ]
                    [ "Method.QueryDepth.Blocks", "1" ], [ "Method.QueryDepth"; "null" ] ]
              for overrides, fragments in cases do
                  let message = promptingError (sprintf "%A" overrides) (fun () -> Definition.apply "method dualprompt, seed 0" baseJson overrides)
                  expectMessage message ("method dualprompt" :: fragments) (sprintf "%A" overrides)
          }

          test "point names: method, grid labels and values, seed; the full path where last names clash" {
              let grid = [ { Field = "Method.Recipe.LearningRate"; Values = [ "0.01" ] }; { Field = "Method.Groups[0].Length"; Values = [ "5" ] } ]
              Expect.equal (Definition.axisLabels grid) [ "LearningRate"; "Length" ] "last names"
              let clash = [ { Field = "Method.Groups[0].Length"; Values = [] }; { Field = "Method.Groups[1].Length"; Values = [] } ]
              Expect.equal (Definition.axisLabels clash) [ "Method.Groups_0_.Length"; "Method.Groups_1_.Length" ] "full paths"
              Expect.equal (Definition.pointName "l2p++" [ "LearningRate", "0.01"; "Schedule", "\"Constant\"" ] 2) "l2p++-LearningRate=0.01-Schedule=Constant-s2" "name"
              Expect.equal (Definition.pointName "linear" [] 0) "linear-s0" "no grid"
          }

          test "points: methods x grid x seeds in order, each configuration checked" {
              let grid = [ { Field = "Method.Recipe.LearningRate"; Values = [ "0.1"; "0.2" ] } ]
              let checkedConfigs = ResizeArray()
              let points =
                  Definition.points (spec [ "a"; "b" ] [ 0; 1 ] grid) (fun m s -> baseJson.Replace("\"Seed\": 0", sprintf "\"Seed\": %d" s).Replace("dualprompt", m))
                      (fun _ json -> checkedConfigs.Add json)
              Expect.equal (points |> List.map _.Name)
                  [ "a-LearningRate=0.1-s0"; "a-LearningRate=0.1-s1"; "a-LearningRate=0.2-s0"; "a-LearningRate=0.2-s1"
                    "b-LearningRate=0.1-s0"; "b-LearningRate=0.1-s1"; "b-LearningRate=0.2-s0"; "b-LearningRate=0.2-s1" ] "names"
              Expect.equal checkedConfigs.Count 8 "every configuration checked"
              let p = points[6]
              Expect.equal (valueAt p.Config [ "Method"; "Recipe"; "LearningRate" ]) "0.2" "override"
              Expect.equal (valueAt p.Config [ "Seed" ]) "0" "seed from configure"
              Expect.equal (valueAt p.Config [ "Method"; "Name" ]) "\"b\"" "method from configure"
          }

          test "a spec without methods or seeds, or with duplicates, is refused in one line" {
              let configure _ _ = baseJson
              let cases =
                  [ spec [] [ 0 ] [], [ "no methods" ]
                    spec [ "a" ] [] [], [ "no seeds" ]
                    spec [ "a"; "a" ] [ 0 ] [], [ "method a"; "twice" ]
                    spec [ "a" ] [ 0 ] [ { Field = "Seed"; Values = [ "1" ] } ], [ "Seed"; "--seeds" ]
                    spec [ "a" ] [ 0 ] [ { Field = "Method.Recipe.Epochs"; Values = [] } ], [ "Method.Recipe.Epochs"; "no values" ]
                    spec [ "a" ] [ 0 ] [ { Field = "Method.Recipe.Epochs"; Values = [ "1"; "1" ] } ], [ "Method.Recipe.Epochs"; "twice" ] ]
              for s, fragments in cases do
                  let message = promptingError (sprintf "%A" fragments) (fun () -> Definition.points s configure (fun _ _ -> ()))
                  expectMessage message fragments (sprintf "%A" fragments)
          }

          test "sweep file: base, run options, methods, seeds and grid; unknown fields refused" {
              use dir = new TempDir()
              let file = dir.File "sweep.json"
              File.WriteAllText(file, """{ "base": "base.json", "run": ["--epochs", "1"], "methods": ["l2p", "linear"], "seeds": [0, 1, 2],
                                           "grid": { "Method.Recipe.LearningRate": [0.01, 0.001], "Method.Recipe.Schedule": ["Constant"] } }""")
              let s = Definition.readFile file (dir.File "inline.json")
              Expect.equal s.Base (Some(dir.File "base.json")) "base relative to the file"
              Expect.equal s.RunOptions [ "--epochs"; "1" ] "run options"
              Expect.equal s.Methods [ "l2p"; "linear" ] "methods"
              Expect.equal s.Seeds [ 0; 1; 2 ] "seeds"
              Expect.equal s.Grid [ { Field = "Method.Recipe.LearningRate"; Values = [ "0.01"; "0.001" ] }; { Field = "Method.Recipe.Schedule"; Values = [ "\"Constant\"" ] } ] "grid"
              File.WriteAllText(file, """{ "methods": ["l2p", { "name": "joint", "run": ["--scenario", "joint"] }] }""")
              let perMethod = Definition.readFile file (dir.File "inline.json")
              Expect.equal perMethod.Methods [ "l2p"; "joint" ] "methods, names and objects"
              Expect.equal perMethod.MethodOptions [ "joint", [ "--scenario"; "joint" ] ] "a method's own run options"
              File.WriteAllText(file, """{ "base": { "Seed": 0 }, "methods": ["a"] }""")
              let inlined = Definition.readFile file (dir.File "inline.json")
              Expect.equal inlined.Base (Some(dir.File "inline.json")) "an inline base is written out"
              Expect.equal (File.ReadAllText(dir.File "inline.json")) """{ "Seed": 0 }""" "inline base"
              for text, fragments in
                  [ """{ "method": ["a"] }""", [ "unknown field"; "method" ]
                    """{ "methods": [{ "run": [] }] }""", [ "needs \"name\"" ]
                    """{ "methods": [{ "name": "a", "lr": 1 }] }""", [ "method a"; "unknown field \"lr\"" ]
                    """{ "seeds": [0.5] }""", [ "seeds"; "integers" ]
                    """{ "grid": { "Method.Recipe.Epochs": 3 } }""", [ "Method.Recipe.Epochs"; "array" ]
                    """[1, 2]""", [ "JSON object" ] ] do
                  File.WriteAllText(file, text)
                  let message = promptingError text (fun () -> Definition.readFile file (dir.File "inline.json"))
                  expectMessage message (file :: fragments) text
          }

          test "the record: a changed sweep lists points added, removed and configurations changed" {
              let point name config = { Name = name; Method = "m"; Seed = 0; Overrides = []; Config = config }
              let before = [ point "a-s0" """{"Training":{"Epochs":1}}"""; point "b-s0" "{}" ]
              let after = [ point "a-s0" """{"Training":{"Epochs":2}}"""; point "c-s0" "{}" ]
              let diffs = State.differences before after
              Expect.equal diffs [ "points added: c-s0"; "points removed: b-s0"; "a-s0: Training.Epochs: 1 -> 2" ] "differences"
              Expect.isEmpty (State.differences before before) "same sweep"
              use dir = new TempDir()
              let sweep = Path.Combine(dir.Path, "sweep")
              State.prepare sweep before
              let roundTrip = State.readRecord sweep
              Expect.equal (roundTrip |> List.map _.Name) [ "a-s0"; "b-s0" ] "recorded"
              let message = promptingError "changed" (fun () -> State.prepare sweep after)
              expectMessage message [ sweep; "different sweep"; "points added: c-s0"; "a-s0: Training.Epochs: 1 -> 2" ] "changed"
              let other = Path.Combine(dir.Path, "other")
              Directory.CreateDirectory other |> ignore
              File.WriteAllText(Path.Combine(other, "notes.txt"), "mine")
              expectMessage (promptingError "other" (fun () -> State.prepare other before)) [ other; "not a sweep directory" ] "foreign directory"
              Expect.equal (Directory.GetFiles other).Length 1 "nothing written into a foreign directory"
          }

          test "point states from files: pending, interrupted, failed with its log line, queued, running, cancelled" {
              use dir = new TempDir()
              let d = dir.Path
              let p = { Name = "m-s0"; Method = "m"; Seed = 0; Overrides = []; Config = "{}" }
              State.prepare d [ p ]
              let state queue = State.pointState d queue (fun j -> "gone " + j) "m-s0"
              Expect.equal (state Map.empty) Pending "nothing yet"
              Directory.CreateDirectory(Layout.runDir d "m-s0") |> ignore
              File.WriteAllText(Path.Combine(Layout.runDir d "m-s0", "config.json"), """{"Config":{"Tasks":2}}""")
              File.WriteAllText(Path.Combine(Layout.runDir d "m-s0", "progress.json"), """{"CompletedTasks":1}""")
              Expect.equal (state Map.empty) Interrupted "one of two tasks done"
              File.WriteAllText(Layout.logFile d "m-s0", "== start\nerror: --lr -1: must be positive\n\n")
              File.WriteAllText(Layout.exitFile d "m-s0", "1\n")
              Expect.equal (state Map.empty) (Failed "error: --lr -1: must be positive") "failed: the log's last line"
              File.WriteAllText(Layout.jobFile d "m-s0", "7_3\n")
              Expect.equal (state (Map.ofList [ "7_3", "PENDING" ])) (Queued "7_3") "queued"
              Expect.equal (state (Map.ofList [ "7_3", "RUNNING" ])) (Running "Slurm job 7_3") "running"
              File.Delete(Layout.exitFile d "m-s0")
              Expect.equal (state Map.empty) (Failed "gone 7_3") "left the queue without an exit status"
              File.WriteAllText(Path.Combine(Layout.runDir d "m-s0", "progress.json"), """{"CompletedTasks":2}""")
              File.WriteAllText(Path.Combine(Layout.runDir d "m-s0", "metrics.json"), "{}")
              Expect.equal (state (Map.ofList [ "7_3", "RUNNING" ])) Finished "all tasks done"
          }

          test "statistics: mean, sample std and Student's t 95% interval" {
              let s = Results.statistic [ 1.0; 2.0; 3.0 ]
              Expect.floatClose Accuracy.veryHigh s.Mean 2.0 "mean"
              Expect.floatClose Accuracy.veryHigh s.Std 1.0 "std"
              Expect.floatClose Accuracy.high s.Ci95 (4.303 / sqrt 3.0) "t(0.975, 2) · s / √n"
              let one = Results.statistic [ 5.0 ]
              Expect.equal (one.Mean, one.Std, one.Count) (5.0, 0.0, 1) "one seed"
              Expect.isTrue (System.Double.IsNaN one.Ci95) "no interval from one seed"
              Expect.equal (Results.tQuantile 100) 1.96 "large samples"
          }

          test "job script: one array with the concurrency limit, resources, extra lines and the point list" {
              let resources =
                  { Slurm.noResources with
                      Partition = Some "gpu"; Time = Some "04:00:00"; CpusPerTask = Some 4; Mem = Some "16G"; Gres = Some "gpu:1"
                      Extra = [ "--qos=long"; "#SBATCH --account=lab" ] }
              let text = Slurm.script "/s" "/work" [ "a-s0"; "b's-s1" ] 2 resources
              let lines = text.Split('\n')
              for expected in
                  [ "#SBATCH --array=0-1%2"; "#SBATCH --output=/s/slurm/%A_%a.out"; "#SBATCH --chdir=/work"; "#SBATCH --partition=gpu"
                    "#SBATCH --time=04:00:00"; "#SBATCH --cpus-per-task=4"; "#SBATCH --mem=16G"; "#SBATCH --gres=gpu:1"
                    "#SBATCH --qos=long"; "#SBATCH --account=lab"; """points=('a-s0' 'b'\''s-s1')"""
                    "exec bash '/s/point.sh' \"${points[$SLURM_ARRAY_TASK_ID]}\"" ] do
                  Expect.contains lines expected (sprintf "line %s" expected)
              Expect.contains (Slurm.script "/s" "/w" [ "a" ] 0 Slurm.noResources |> fun t -> t.Split('\n')) "#SBATCH --array=0-0" "no limit"
              let lastSbatch = lines |> Array.findIndexBack (fun l -> l.StartsWith "#SBATCH")
              let firstCommand = lines |> Array.findIndex (fun l -> l.StartsWith "points=")
              Expect.isLessThan lastSbatch firstCommand "every #SBATCH line before the first command"
          }

          test "local executor: threads split between workers, one GPU each when there are several" {
              Expect.equal (Local.threadsPerPoint 16 4) 4 "16 cores, 4 workers"
              Expect.equal (Local.threadsPerPoint 2 4) 1 "at least one"
              let options = { Local.Parallel = 3; Local.ThreadsPerPoint = 2; Local.Gpus = 2 }
              Expect.equal (Local.environment options 2) [ "OMP_NUM_THREADS", "2"; "MKL_NUM_THREADS", "2"; "CUDA_VISIBLE_DEVICES", "0" ] "worker 2 on GPU 0"
              Expect.equal (Local.environment { options with Gpus = 1 } 1) [ "OMP_NUM_THREADS", "2"; "MKL_NUM_THREADS", "2" ] "one GPU: left alone"
          } ]
