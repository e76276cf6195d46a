/// Run directories that nothing can corrupt (issue: run-directory safety), through the real CLI:
/// crafted and malformed run files, two processes on one directory, divergence, leftovers of
/// interrupted writes, a changed checkpoint, and kills at many random points.
module Prompting.Tests.CliRunSafety

open System
open System.Diagnostics
open System.IO
open System.Text.Json.Nodes
open Expecto
open Prompting.Engine
open Prompting.Tests.Fixtures
open Prompting.Tests.Cli
open Prompting.Tests.CliRun

/// A copy of the finished two-task run, to tamper with.
let private copyOfFinished () =
    let source = finishedRun.Force()
    let target = Path.Combine(tempDir (), "copy")
    for f in Directory.GetFiles(source, "*", SearchOption.AllDirectories) do
        let path = Path.Combine(target, Path.GetRelativePath(source, f))
        Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
        File.Copy(f, path)
    target

/// The same command as the finished run's, on another directory.
let private rerun (out: string) (extra: string list) =
    let data, checkpoint = inputs.Force()
    runArgs data checkpoint out 2 extra

/// Rewrites progress.json as if the run had stopped after one epoch of task 2.
let private midTask2 (out: string) (edit: JsonObject -> unit) =
    let path = Path.Combine(out, "progress.json")
    let p = JsonNode.Parse(File.ReadAllText path).AsObject()
    p["CompletedTasks"] <- JsonValue.Create 1
    p["EpochsDone"] <- JsonValue.Create 1
    let evaluations = p["Evaluations"].AsArray()
    evaluations.RemoveAt 1
    edit p
    File.WriteAllText(path, p.ToJsonString())

[<Tests>]
let tests =
    testSequenced
    <| testList
        "cli run safety"
        [ test "progress.json naming files outside the run directory is refused; nothing outside is touched" {
              for crafted in [ "../victim.txt"; "/tmp/prompting-victim.txt"; "state/../../victim.txt" ] do
                  let out = copyOfFinished ()
                  let victim = if crafted.StartsWith "/" then crafted else Path.GetFullPath(Path.Combine(out, "..", "victim.txt"))
                  File.WriteAllText(victim, "precious")
                  midTask2 out (fun p -> p["EpochState"] <- JsonValue.Create crafted)
                  let before = snapshot out
                  expectOneLineError (rerun out []) [ "progress.json"; "EpochState"; crafted ] |> ignore
                  Expect.equal (File.ReadAllText victim) "precious" (sprintf "%s: the victim is untouched" crafted)
                  expectSameFiles before (snapshot out) "the run directory"
                  File.Delete victim
              let out = copyOfFinished ()
              midTask2 out (fun p -> p["EpochOptimizers"] <- JsonArray(JsonValue.Create "../x.optimizer0"))
              expectOneLineError (rerun out []) [ "EpochOptimizers"; "../x.optimizer0" ] |> ignore
          }

          test "malformed run files: one line naming the file, for run and eval" {
              let cases: (string * string * string) list =
                  [ "config.json", "{\"FormatVersion\": 2, \"Config\": {", "config.json"
                    "config.json", "null", "config.json"
                    "config.json", "[1, 2]", "config.json"
                    "progress.json", "null", "progress.json"
                    "progress.json", "{\"CompletedTasks\": 1", "progress.json" ]
              for file, text, named in cases do
                  let out = copyOfFinished ()
                  File.WriteAllText(Path.Combine(out, file), text)
                  expectOneLineError (rerun out []) [ named ] |> ignore
                  if file = "config.json" then expectOneLineError [ "eval"; "--run"; out; "--device"; "cpu" ] [ named ] |> ignore
              let negative = copyOfFinished ()
              midTask2 negative (fun p -> p["CompletedTasks"] <- JsonValue.Create -3)
              expectOneLineError (rerun negative []) [ "progress.json"; "CompletedTasks -3" ] |> ignore
              let nulls = copyOfFinished ()
              midTask2 nulls (fun p -> p["Evaluations"] <- null)
              expectOneLineError (rerun nulls []) [ "progress.json" ] |> ignore
              // A state file whose stored task index is out of range.
              let state = copyOfFinished ()
              let file = Run.taskStateFile state 1
              let tensors, metadata = Prompting.Tensors.Safetensors.readWithMetadata file
              Prompting.Tensors.Safetensors.writeWithMetadata file (metadata.Add("task", "7")) tensors
              expectOneLineError [ "eval"; "--run"; state; "--device"; "cpu" ] [ "task-01.safetensors"; "stored task 7" ] |> ignore
          }

          test "a second process on the same run directory is refused at once, naming the holder; a stale lock is not" {
              let out = copyOfFinished ()
              do
                  use held = RunLock.Acquire out
                  let line = expectOneLineError (rerun out []) [ "in use by process"; string Environment.ProcessId ]
                  Expect.stringContains line out "names the directory"
              // The holder died without cleaning up: its pid file remains, its lock went with it.
              File.WriteAllText(RunLock.PidFile out, "999999")
              let code, _, err = runCli (rerun out [])
              Expect.equal code 0 err
          }

          test "a run diverging before anything was saved leaves nothing; one diverging later keeps its last good state and resumes only by choice" {
              let fresh = Path.Combine(tempDir (), "diverging")
              let line = expectOneLineError (rerun fresh [ "--lr"; "1e30" ]) [ "diverged"; "task 1"; "epoch 1" ]
              Expect.stringContains line "nothing trained" "says nothing was kept"
              Expect.isFalse (Directory.Exists fresh) "nothing left that could block the corrected command"
              let code0, _, err0 = runCli (rerun fresh [ "--lr"; "0.001" ])
              Expect.equal code0 0 err0
              // Diverging in task 2 after a finished task 1.
              let out = copyOfFinished ()
              midTask2 out ignore
              File.Delete(Run.taskStateFile out 1)
              let kept = File.ReadAllBytes(Run.taskStateFile out 0)
              let line = expectOneLineError (rerun out [ "--lr"; "1e30"; "--accept-recipe-change" ]) [ "diverged"; "task 2"; "epoch 1" ]
              Expect.stringContains line "--accept-recipe-change" "says how to go on"
              Expect.stringContains line "the state after task 1" "says what it keeps"
              Expect.equal (File.ReadAllBytes(Run.taskStateFile out 0)) kept "task 1's state kept"
              Expect.isFalse (File.Exists(Run.taskStateFile out 1)) "no state saved from the diverged task"
              expectOneLineError (rerun out [ "--lr"; "0.001" ]) [ "different configuration"; "LearningRate"; "--accept-recipe-change" ] |> ignore
              let code, _, err = runCli (rerun out [ "--lr"; "0.001"; "--accept-recipe-change" ])
              Expect.equal code 0 err
              Expect.stringContains (File.ReadAllText(Run.logFile out)) "configuration changed on resume: Config.Method.Recipe.LearningRate" "the change is logged"
              Expect.stringContains (File.ReadAllText(Run.configFile out)) "\"LearningRate\": 0.001" "and recorded"
          }

          test "a start that fails or is killed before its first saved epoch never blocks the corrected command" {
              let data, checkpoint = inputs.Force()
              // The checkpoint's patch is 8: 33 fails before anything is written.
              let out = Path.Combine(tempDir (), "image-size")
              expectOneLineError (runArgs data checkpoint out 2 [] |> List.map (fun a -> if a = "32" then "33" else a))
                  [ "--image-size 33"; "patch size 8" ] |> ignore
              Expect.isFalse (Directory.Exists out) "nothing written"
              // A start killed before its first epoch was saved: config.json and a lock, no progress.
              let killed = Path.Combine(tempDir (), "killed-early")
              let code, _, err = runCli (runArgs data checkpoint killed 1 [])
              Expect.equal code 0 err
              for f in [ "progress.json"; "metrics.json"; "log.txt" ] do File.Delete(Path.Combine(killed, f))
              for f in Directory.GetFiles(Run.stateDir killed) do File.Delete f
              let code2, _, err2 = runCli (runArgs data checkpoint killed 1 [ "--seed"; "5" ])
              Expect.equal code2 0 err2
              Expect.stringContains (File.ReadAllText(Run.logFile killed)) "an earlier start here trained nothing; its configuration is replaced (" "the replacement is logged"
              Expect.stringContains (File.ReadAllText(Run.logFile killed)) "Config.Seed: 0 -> 5" "naming the change"
              Expect.stringContains (File.ReadAllText(Run.configFile killed)) "\"Seed\": 5" "the new configuration is recorded"
              // Argu's own "ERROR:" is not doubled behind ours.
              let line = expectOneLineError [ "run"; "--bogus" ] [ "error: unrecognized argument" ]
              Expect.isFalse (line.Contains "ERROR") line
          }

          test "Ctrl-C prints the one command that resumes, and that command does" {
              let data, checkpoint = inputs.Force()
              let out = Path.Combine(tempDir (), "interrupted")
              // Enough epochs that the run is still going when `kill` gets to run on a loaded machine.
              let args = runArgs data checkpoint out 200 []
              // A process started from a background job inherits an ignored SIGINT (POSIX), and the CLI
              // rightly keeps it so; perl (Debian's essential perl-base) restores the disposition a
              // terminal gives, then becomes the run (same pid).
              let asFromTerminal = [ "-e"; "$SIG{INT} = 'DEFAULT'; exec @ARGV or die \"exec: $!\""; "dotnet" ]
              let psi = ProcessStartInfo("perl", asFromTerminal @ CliRun.cliDll :: args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
              use p = Process.Start psi
              let _ = p.StandardOutput.ReadToEndAsync()
              let err = p.StandardError.ReadToEndAsync()
              let clock = Stopwatch.StartNew()
              while not (File.Exists(Run.progressFile out)) && clock.Elapsed.TotalSeconds < 120.0 && not p.HasExited do
                  Threading.Thread.Sleep 50
              Expect.isFalse p.HasExited "still running after its first epoch"
              use kill = Process.Start("kill", [ "-INT"; string p.Id ])
              kill.WaitForExit()
              p.WaitForExit()
              Expect.notEqual p.ExitCode 0 "an interrupted run does not report success"
              let line = err.Result.Trim()
              Expect.stringStarts line "interrupted: the same command resumes this run from its last saved epoch: prompting run " "one line saying so"
              let command = line.Substring(line.IndexOf "prompting run " + "prompting ".Length)
              Expect.equal command (String.Join(" ", args)) "the command as given (no argument here needs quoting)"
              let code, _, err2 = runCli args
              Expect.equal code 0 err2
              Expect.stringContains (File.ReadAllText(Run.logFile out)) "resuming after epoch" "it resumed"
              Expect.equal (matrix out).Length 2 "and finished"
          }

          test "leftover temporary files of an interrupted write are removed on the next start" {
              let out = copyOfFinished ()
              let leftovers = [ Path.Combine(out, "progress.json.0123abcd.tmp"); Path.Combine(Run.stateDir out, "task-01.safetensors.89abcdef.tmp") ]
              for f in leftovers do File.WriteAllText(f, "partial")
              let keep = Path.Combine(out, "notes.tmp")
              File.WriteAllText(keep, "mine")
              let code, _, err = runCli (rerun out [])
              Expect.equal code 0 err
              for f in leftovers do Expect.isFalse (File.Exists f) (sprintf "%s removed" f)
              Expect.isTrue (File.Exists keep) "a file that is not a temporary of ours stays"
              Expect.stringContains (File.ReadAllText(Run.logFile out)) "progress.json.0123abcd.tmp" "the removal is logged"
          }

          test "eval refuses a checkpoint whose SHA-256 differs from the recorded one" {
              let data, checkpoint = inputs.Force()
              let dir = tempDir ()
              let copy = Path.Combine(dir, "ck.safetensors")
              File.Copy(checkpoint, copy)
              let out = Path.Combine(dir, "run")
              let code, _, err = runCli (runArgs data copy out 1 [])
              Expect.equal code 0 err
              let bytes = File.ReadAllBytes copy
              bytes[bytes.Length - 1] <- bytes[bytes.Length - 1] ^^^ 1uy
              File.WriteAllBytes(copy, bytes)
              expectOneLineError [ "eval"; "--run"; out; "--device"; "cpu" ] [ "SHA-256"; "ck.safetensors" ] |> ignore
          }

          test "killed with SIGKILL at many random points, task boundaries included, the run ends as an uninterrupted one" {
              let data, checkpoint = inputs.Force()
              let epochs = 4
              let straight = Path.Combine(tempDir (), "straight")
              let code, _, err = runCli (runArgs data checkpoint straight epochs [])
              Expect.equal code 0 err
              let killed = Path.Combine(tempDir (), "killed")
              let rng = Random 17
              // Where the run stands; a kill follows each advance after a random delay, so kills land
              // anywhere: mid-epoch, right after an epoch's save, in a task's end-of-task work.
              let position () =
                  try
                      let p = JsonNode.Parse(File.ReadAllText(Path.Combine(killed, "progress.json")))
                      p["CompletedTasks"].GetValue<int>(), p["EpochsDone"].GetValue<int>()
                  with _ -> -1, -1
              let mutable kills = 0
              let mutable finished = false
              while not finished do
                  let start = position ()
                  let psi = ProcessStartInfo("dotnet", cliDll :: runArgs data checkpoint killed epochs [], RedirectStandardOutput = true,
                                             RedirectStandardError = true, UseShellExecute = false)
                  use p = Process.Start psi
                  let _ = p.StandardOutput.ReadToEndAsync()
                  let _ = p.StandardError.ReadToEndAsync()
                  let clock = Stopwatch.StartNew()
                  while not p.HasExited && position () = start && clock.Elapsed < TimeSpan.FromMinutes 2.0 do
                      Threading.Thread.Sleep 10
                  if kills < 12 && not (p.WaitForExit(rng.Next(0, 25))) then
                      p.Kill true
                      p.WaitForExit()
                      kills <- kills + 1
                  else
                      p.WaitForExit()
                      Expect.equal p.ExitCode 0 "a run that was not killed succeeds"
                      finished <- true
              Expect.isGreaterThan kills 2 "killed several times"
              Expect.equal (matrix killed) (matrix straight) "same accuracy matrix"
              Expect.equal (epochLosses killed) (epochLosses straight) "same per-epoch losses"
          } ]
