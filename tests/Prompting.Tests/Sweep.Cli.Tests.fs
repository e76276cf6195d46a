/// `prompting sweep` with the local executor, end to end through the CLI on a tiny model.
module Prompting.Tests.SweepCli

open System
open System.IO
open System.Text.Json
open Expecto
open Prompting.Tests.Fixtures
open Prompting.Tests.SweepSupport

let methods = [ "linear"; "bias" ]
let seeds = [ 0; 1 ]
let pointNames = [ for m in methods do for s in seeds -> sprintf "%s-s%d" m s ]

/// Each (method, seed) as a single `prompting run`, one thread: point name -> run directory.
let singleRuns =
    lazy
        (let dir = tempDir ()
         [ for m in methods do
               for s in seeds ->
                   let out = Path.Combine(dir, sprintf "%s-s%d" m s)
                   let code, stdout, err = runCliEnv oneThread ([ "run"; "--method"; m; "--seed"; string s; "--out"; out ] @ runOptions ())
                   if code <> 0 then failwithf "single run %s-s%d failed: %s %s" m s err stdout
                   sprintf "%s-s%d" m s, out ]
         |> Map.ofList)

/// The sweep's own arguments for methods × seeds.
let sweepArgs (out: string) (extra: string list) =
    [ "sweep"; "--methods" ] @ methods @ [ "--seeds" ] @ (seeds |> List.map string) @ [ "--out"; out ] @ extra @ [ "--" ] @ runOptions ()

/// The 2 × 2 sweep run locally, two points at a time (one thread each on two cores, and at
/// least as many workers as cores elsewhere, so every point computes with one thread).
let localSweep =
    lazy
        (let out = Path.Combine(tempDir (), "sweep")
         let workers = max 2 Environment.ProcessorCount
         let code, stdout, err = runCliEnv [] (sweepArgs out [ "--parallel"; string workers ])
         if code <> 0 then failwithf "local sweep failed (%d): %s %s" code err stdout
         out, stdout)

let expectSameResults (sweep: string) (what: string) =
    for name in pointNames do
        let run = Path.Combine(sweep, "runs", name)
        Expect.isTrue (Directory.Exists run) (sprintf "%s: %s/runs/%s exists" what sweep name)
        let a, b, c = results run
        let x, y, z = results (singleRuns.Force()[name])
        Expect.equal a x (sprintf "%s: %s class-incremental matrix as the single run" what name)
        Expect.equal b y (sprintf "%s: %s task-incremental matrix as the single run" what name)
        Expect.equal c z (sprintf "%s: %s epoch losses as the single run" what name)

/// A point's state word and detail in `sweep status`.
let statusOf (sweep: string) (name: string) =
    let code, stdout, err = runCliEnv [] [ "sweep"; "status"; sweep ]
    if code <> 0 then failwithf "sweep status failed: %s" err
    stdout.Split('\n') |> Array.tryFind (fun l -> l.StartsWith(name + " ")) |> Option.defaultValue "" |> _.Trim()

[<Tests>]
let tests =
    testSequencedGroup "sweep cli"
    <| testList
        "sweep local"
        [ test "a local 2-method x 2-seed sweep gives the single runs' metrics and aggregates them" {
              let sweep, stdout = localSweep.Force()
              expectSameResults sweep "local"
              Expect.stringContains stdout "4 to run" "every point ran"
              for f in [ "results.md"; "results.csv"; "results.json"; "report.html"; "sweep.json"; "point.sh" ] do
                  Expect.isTrue (File.Exists(Path.Combine(sweep, f))) (sprintf "%s written" f)
              use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(sweep, "results.json")))
              let groups = doc.RootElement.GetProperty("groups")
              Expect.equal (groups.GetArrayLength()) 2 "one group per method"
              for g in groups.EnumerateArray() do
                  let m = g.GetProperty("method").GetString()
                  let finals =
                      [ for s in seeds -> (Prompting.Metrics.readJson (Path.Combine(singleRuns.Force()[sprintf "%s-s%d" m s], "metrics.json"))).ClassIncremental.FinalAverageAccuracy ]
                  let stat = g.GetProperty("final_average_accuracy")
                  Expect.floatClose Accuracy.veryHigh (stat.GetProperty("mean").GetDouble()) (List.average finals) (m + ": mean A_N over seeds")
                  Expect.equal (stat.GetProperty("n").GetInt32()) 2 (m + ": two seeds")
                  for key in [ "average_incremental_accuracy"; "forgetting"; "task_il_final_average_accuracy"; "train_seconds"; "peak_memory_mib" ] do
                      Expect.equal (g.GetProperty(key).GetProperty("n").GetInt32()) 2 (sprintf "%s: %s over two seeds" m key)
              let csv = File.ReadAllLines(Path.Combine(sweep, "results.csv"))
              Expect.equal csv.Length 3 "header and two groups"
              Expect.stringContains csv[0] "final_average_accuracy_ci95" "CI column"
              let md = File.ReadAllText(Path.Combine(sweep, "results.md"))
              for name in pointNames do Expect.stringContains md name (name + " in results.md")
              let html = File.ReadAllText(Path.Combine(sweep, "report.html"))
              Expect.stringContains html "Comparison of runs" "the comparison report"
          }

          test "re-invoking a finished sweep runs nothing and leaves every run as it was" {
              let sweep, _ = localSweep.Force()
              let before = snapshot (Path.Combine(sweep, "runs"))
              let code, stdout, err = runCliEnv [] (sweepArgs sweep [])
              Expect.equal code 0 err
              Expect.stringContains stdout "4 finished, 0 running or queued, 0 to run" "nothing to run"
              let after = snapshot (Path.Combine(sweep, "runs"))
              Expect.sequenceEqual (Map.keys after) (Map.keys before) "same files"
              for KeyValue(name, bytes) in before do Expect.isTrue (after[name] = bytes) (name + " unchanged")
              let code, stdout, _ = runCliEnv [] [ "sweep"; "status"; sweep ]
              Expect.equal code 0 "status"
              Expect.stringContains stdout "4 points: 4 finished" "status counts"
          }

          test "a sweep file gives the same sweep as the flags (re-invoking the flags' sweep with it runs nothing)" {
              let sweep, _ = localSweep.Force()
              let file = Path.Combine(tempDir (), "sweep.json")
              let strings (xs: string list) = "[" + String.Join(", ", xs |> List.map JsonSerializer.Serialize) + "]"
              File.WriteAllText(
                  file,
                  sprintf """{ "run": %s, "methods": %s, "seeds": [0, 1] }""" (strings (runOptions ())) (strings methods)
              )
              let code, stdout, err = runCliEnv [] [ "sweep"; "--file"; file; "--out"; sweep ]
              Expect.equal code 0 (err + stdout)
              Expect.stringContains stdout "4 finished, 0 running or queued, 0 to run" "the same points"
              let withGrid = Path.Combine(tempDir (), "grid.json")
              File.WriteAllText(
                  withGrid,
                  sprintf """{ "run": %s, "methods": %s, "seeds": [0, 1], "grid": { "Method.Recipe.Epochs": [2] } }""" (strings (runOptions ())) (strings methods)
              )
              Cli.expectOneLineError [ "sweep"; "--file"; withGrid; "--out"; sweep ] [ "different sweep"; "linear-Epochs=2-s0" ] |> ignore
          }

          test "a changed sweep on the same directory is refused with its differences, nothing touched" {
              let sweep, _ = localSweep.Force()
              let before = snapshot sweep
              let line =
                  Cli.expectOneLineError
                      ([ "sweep"; "--methods" ] @ methods @ [ "--seeds"; "0"; "1"; "2"; "--grid"; "Method.Recipe.Epochs=1"; "--out"; sweep; "--" ] @ runOptions ())
                      [ sweep; "different sweep"; "points added: linear-Epochs=1-s0"; "points removed: linear-s0" ]
              Expect.stringContains line "use another --out" "what to do"
              let after = snapshot sweep
              Expect.sequenceEqual (Map.keys after) (Map.keys before) "same files"
          }

          test "a failing point is reported failed with its log line while the others finish; only it runs again" {
              let sweep = Path.Combine(tempDir (), "sweep")
              let args = [ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--grid"; "Method.Recipe.LearningRate=0.001,-1"; "--parallel"; "2"; "--out"; sweep; "--" ] @ runOptions ()
              let code, stdout, err = runCliEnv [] args
              Expect.notEqual code 0 "a point failed"
              let lines = errorLines err
              Expect.equal lines.Length 1 (sprintf "one line on stderr: %s" err)
              Expect.stringContains lines[0] "1 of 2 points did not finish" "the count"
              Expect.stringContains lines[0] "linear-LearningRate=-1-s0" "the point"
              Expect.stringContains stdout "must be positive" "the failed point's log line in the output"
              Expect.isTrue (File.Exists(Path.Combine(sweep, "runs", "linear-LearningRate=0.001-s0", "metrics.json"))) "the other point finished"
              let failed = statusOf sweep "linear-LearningRate=-1-s0"
              Expect.stringContains failed "failed" "status: failed"
              Expect.stringContains failed "--lr -1: must be positive" "status: the log's last line"
              Expect.stringContains (statusOf sweep "linear-LearningRate=0.001-s0") "finished" "status: finished"
              let finishedLog = File.ReadAllText(Path.Combine(sweep, "logs", "linear-LearningRate=0.001-s0.log"))
              let code, stdout, _ = runCliEnv [] args
              Expect.notEqual code 0 "still failing"
              Expect.stringContains stdout "1 finished, 0 running or queued, 1 to run" "only the failed point runs again"
              Expect.equal (File.ReadAllText(Path.Combine(sweep, "logs", "linear-LearningRate=0.001-s0.log"))) finishedLog "the finished point did not run again"
              let failedLog = File.ReadAllLines(Path.Combine(sweep, "logs", "linear-LearningRate=-1-s0.log"))
              Expect.equal (failedLog |> Array.filter (fun l -> l.StartsWith "== ") |> Array.length) 2 "the failed point ran twice, its log appended"
          }

          test "bad input: one clear line each" {
              let out = Path.Combine(tempDir (), "sweep")
              let run = runOptions ()
              let sweep extra = [ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--out"; out ] @ extra @ [ "--" ] @ run
              Cli.expectOneLineError (sweep [ "--grid"; "Method.Recipe.LerningRate=0.1" ]) [ "Method.Recipe.LerningRate"; "no field LerningRate" ] |> ignore
              Cli.expectOneLineError (sweep [ "--grid"; "Method.Recipe.LearningRate=fast" ]) [ "Method.Recipe.LearningRate"; "a string"; "a number" ] |> ignore
              Cli.expectOneLineError (sweep [ "--grid"; "Method.Recipe.Optimizer=Rmsprop" ]) [ "grid value"; "Rmsprop" ] |> ignore
              Cli.expectOneLineError (sweep [ "--no-wait" ]) [ "--no-wait"; "slurm" ] |> ignore
              Cli.expectOneLineError (sweep [ "--executor"; "cloud" ]) [ "--executor cloud" ] |> ignore
              Cli.expectOneLineError ([ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--" ] @ run) [ "--out" ] |> ignore
              Cli.expectOneLineError ([ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--out"; out; "--"; "--method"; "l2p" ] @ run) [ "--methods" ] |> ignore
              Cli.expectOneLineError ([ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--out"; out; "--"; "--bogus" ] @ run) [ "run options"; "--bogus" ] |> ignore
              Expect.isFalse (Directory.Exists out) "nothing written for refused sweeps"
              let foreign = tempDir ()
              File.WriteAllText(Path.Combine(foreign, "notes.txt"), "mine")
              Cli.expectOneLineError ([ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--out"; foreign; "--" ] @ run) [ foreign; "not a sweep directory" ] |> ignore
              Cli.expectOneLineError [ "sweep"; "status"; foreign ] [ foreign; "no sweep.json" ] |> ignore
              // Slurm's clients missing: an empty PATH.
              let code, _, err = runCliEnv [ "PATH", "/nonexistent" ] (sweep [ "--executor"; "slurm" ])
              Expect.notEqual code 0 "sbatch missing"
              let lines = errorLines err
              Expect.equal lines.Length 1 (sprintf "one line: %s" err)
              Expect.stringContains lines[0] "sbatch not found" "names sbatch"
              Expect.isFalse (Directory.Exists out) "nothing written"
          } ]
