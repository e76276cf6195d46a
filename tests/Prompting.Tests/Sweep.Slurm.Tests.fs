/// `prompting sweep --executor slurm` on a real single-node Slurm started by the tests (see
/// SweepSupport.SlurmCluster). Where Slurm cannot start, these tests fail with the reason.
module Prompting.Tests.SweepSlurm

open System
open System.IO
open System.Text.Json
open Expecto
open Prompting.Tests.Fixtures
open Prompting.Tests.SweepSupport
open Prompting.Tests.SweepCli

/// The sweep CLI with the cluster's environment; polls every half second.
let private sweepOn (cluster: SlurmCluster) (args: string list) = runCliEnv cluster.Env args

let private slurmArgs = [ "--executor"; "slurm"; "--poll"; "0.5"; "--cpus-per-task"; "1" ]

let private points (sweep: string) =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(sweep, "results.json")))
    [ for p in doc.RootElement.GetProperty("points").EnumerateArray() -> p.GetProperty("point").GetString(), p.GetProperty("state").GetString() ]

[<Tests>]
let tests =
    testSequencedGroup "sweep cli"
    <| testList
        "sweep slurm"
        [ test "a 2-method x 2-seed sweep through Slurm gives the same metrics as the local executor and the single runs" {
              let cluster = slurm ()
              let sweep = Path.Combine(tempDir (), "sweep")
              let code, stdout, err = sweepOn cluster (sweepArgs sweep (slurmArgs @ [ "--parallel"; "2" ]))
              Expect.equal code 0 (err + stdout)
              Expect.stringContains stdout "submitted 4 points as job array" "one job array"
              expectSameResults sweep "slurm"
              let local, _ = localSweep.Force()
              for name in pointNames do
                  Expect.equal (results (Path.Combine(sweep, "runs", name))) (results (Path.Combine(local, "runs", name))) (name + ": as the local executor")
              let script = File.ReadAllLines(Path.Combine(sweep, "slurm", "array-1.sh"))
              Expect.contains script "#SBATCH --array=0-3%2" "array with the concurrency limit"
              Expect.equal (points sweep |> List.map snd) [ "finished"; "finished"; "finished"; "finished" ] "every point finished"
              let log = File.ReadAllText(Path.Combine(sweep, "logs", "linear-s0.log"))
              Expect.stringContains log "Slurm job" "the log names the array task"
              Expect.stringContains log "1 threads" "threads from --cpus-per-task"
          }

          test "scancel of one array task, then re-invocation, resubmits only that point" {
              let cluster = slurm ()
              let sweep = Path.Combine(tempDir (), "sweep")
              let code, stdout, err = sweepOn cluster (sweepArgs sweep (slurmArgs @ [ "--parallel"; "1"; "--no-wait" ]))
              Expect.equal code 0 (err + stdout)
              let submitted = jobs sweep
              Expect.equal submitted.Count 4 "four array tasks"
              let cancelled = "bias-s1"
              let code, _, err = runIn Environment.CurrentDirectory cluster.Env "scancel" [ submitted[cancelled] ]
              Expect.equal code 0 ("scancel: " + err)
              let code, stdout, err = sweepOn cluster (sweepArgs sweep slurmArgs)
              Expect.equal code 0 (err + stdout)
              Expect.stringContains stdout "submitted 1 points" "one point resubmitted"
              let second = File.ReadAllLines(Path.Combine(sweep, "slurm", "array-2.sh"))
              Expect.contains second (sprintf "points=('%s')" cancelled) "the second array holds only the cancelled point"
              let after = jobs sweep
              for name in pointNames do
                  if name <> cancelled then Expect.equal after[name] submitted[name] (name + ": not resubmitted")
              Expect.notEqual after[cancelled] submitted[cancelled] "the cancelled point has a new task"
              Expect.equal (points sweep |> List.map snd) [ "finished"; "finished"; "finished"; "finished" ] "every point finished"
              expectSameResults sweep "after resubmission"
          }

          test "a point cancelled mid-run resumes from its last epoch and ends as the uninterrupted run" {
              let cluster = slurm ()
              let sweep = Path.Combine(tempDir (), "sweep")
              let data, checkpoint = inputs.Force()
              let options =
                  [ "--benchmark"; "imagefolder"; "--data"; data; "--checkpoint"; checkpoint; "--tasks"; "2"; "--epochs"; "20"
                    "--batch-size"; "4"; "--image-size"; "32"; "--device"; "cpu" ]
              let args extra = [ "sweep"; "--methods"; "linear"; "--seeds"; "1"; "--out"; sweep ] @ slurmArgs @ extra @ [ "--" ] @ options
              let code, stdout, err = sweepOn cluster (args [ "--no-wait" ])
              Expect.equal code 0 (err + stdout)
              let name = "linear-s1"
              // Wait until the run has finished an epoch or two, then cancel it.
              let progress = Path.Combine(sweep, "runs", name, "progress.json")
              let started () =
                  try
                      use doc = JsonDocument.Parse(File.ReadAllText progress)
                      let r = doc.RootElement
                      r.GetProperty("CompletedTasks").GetInt32() >= 1 || r.GetProperty("EpochsDone").GetInt32() >= 2
                  with _ -> false
              let deadline = DateTime.UtcNow.AddMinutes 3.0
              while not (started ()) && DateTime.UtcNow < deadline do Threading.Thread.Sleep 200
              Expect.isTrue (started ()) "the run got going"
              let code, _, err = runIn Environment.CurrentDirectory cluster.Env "scancel" [ (jobs sweep)[name] ]
              Expect.equal code 0 ("scancel: " + err)
              let rec gone n =
                  let _, status, _ = sweepOn cluster [ "sweep"; "status"; sweep ]
                  if status.Contains "running" && n > 0 then
                      Threading.Thread.Sleep 500
                      gone (n - 1)
                  else status
              let status = gone 60
              Expect.stringContains status "failed" (sprintf "cancelled mid-run: %s" status)
              Expect.isFalse (File.Exists(Path.Combine(sweep, "runs", name, "metrics.json")) && status.Contains "finished") "not finished"
              let code, stdout, err = sweepOn cluster (args [])
              Expect.equal code 0 (err + stdout)
              Expect.stringContains stdout "submitted 1 points" "resubmitted"
              Expect.stringContains (File.ReadAllText(Path.Combine(sweep, "runs", name, "log.txt"))) "resuming after epoch" "resumed, not restarted"
              let single = Path.Combine(tempDir (), name)
              let code, _, err = runCliEnv oneThread ([ "run"; "--method"; "linear"; "--seed"; "1"; "--out"; single ] @ options)
              Expect.equal code 0 err
              Expect.equal (results (Path.Combine(sweep, "runs", name))) (results single) "as the uninterrupted run"
          }

          test "a failing point is reported failed with its log line while the others finish; a refusing sbatch loses nothing" {
              let cluster = slurm ()
              let sweep = Path.Combine(tempDir (), "sweep")
              let args extra =
                  [ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "--grid"; "Method.Recipe.LearningRate=0.001,-1"; "--out"; sweep ] @ slurmArgs @ extra
                  @ [ "--" ] @ runOptions ()
              let code, stdout, err = sweepOn cluster (args [])
              Expect.notEqual code 0 "a point failed"
              Expect.equal (errorLines err).Length 1 (sprintf "one line on stderr: %s" err)
              Expect.stringContains stdout "must be positive" "the failed point's log line"
              let code, status, _ = sweepOn cluster [ "sweep"; "status"; sweep ]
              Expect.equal code 0 "status"
              let line name = status.Split('\n') |> Array.find (fun l -> l.StartsWith(name + " "))
              Expect.stringContains (line "linear-LearningRate=-1-s0") "failed" "failed"
              Expect.stringContains (line "linear-LearningRate=-1-s0") "--lr -1: must be positive" "with its log line"
              Expect.stringContains (line "linear-LearningRate=0.001-s0") "finished" "the other finished"
              // sbatch refuses the script (no such partition): one line, the finished run untouched.
              let finished = snapshot (Path.Combine(sweep, "runs", "linear-LearningRate=0.001-s0"))
              let code, _, err = sweepOn cluster (args [ "--partition"; "nosuchpartition" ])
              Expect.notEqual code 0 "refused"
              let lines = errorLines err
              Expect.equal lines.Length 1 (sprintf "one line: %s" err)
              Expect.stringContains lines[0] "sbatch refused" "names sbatch"
              Expect.stringContains (lines[0].ToLowerInvariant()) "partition" "sbatch's reason"
              let _, status, _ = sweepOn cluster [ "sweep"; "status"; sweep ]
              let line name = status.Split('\n') |> Array.find (fun l -> l.StartsWith(name + " "))
              Expect.stringContains (line "linear-LearningRate=-1-s0") "--lr -1: must be positive" "the failed point keeps its reason"
              let after = snapshot (Path.Combine(sweep, "runs", "linear-LearningRate=0.001-s0"))
              Expect.sequenceEqual (Map.keys after) (Map.keys finished) "finished run: same files"
              for KeyValue(name, bytes) in finished do Expect.isTrue (after[name] = bytes) (name + " unchanged")
          }

          test "--no-wait returns at once; status shows the queue; a second invocation collects the results" {
              let cluster = slurm ()
              let sweep = Path.Combine(tempDir (), "sweep")
              let args extra =
                  [ "sweep"; "--methods"; "linear"; "--seeds"; "0"; "1"; "--out"; sweep ] @ slurmArgs @ [ "--parallel"; "1" ] @ extra @ [ "--" ] @ runOptions ()
              let code, stdout, err = sweepOn cluster (args [ "--no-wait" ])
              Expect.equal code 0 (err + stdout)
              Expect.stringContains stdout "not waiting" "returned at once"
              Expect.isFalse (File.Exists(Path.Combine(sweep, "results.json"))) "no results yet"
              let code, status, err = sweepOn cluster [ "sweep"; "status"; sweep ]
              Expect.equal code 0 err
              Expect.stringContains status "Slurm job" "the queue's task ids"
              Expect.isFalse (status.Contains "failed") (sprintf "nothing failed: %s" status)
              let code, stdout, err = sweepOn cluster (args [])
              Expect.equal code 0 (err + stdout)
              Expect.stringContains stdout "0 to run" "nothing resubmitted"
              Expect.equal (points sweep) [ "linear-s0", "finished"; "linear-s1", "finished" ] "collected"
              for name in [ "linear-s0"; "linear-s1" ] do
                  Expect.equal (results (Path.Combine(sweep, "runs", name))) (results (singleRuns.Force()[name])) (name + " as the single run")
          } ]
