/// Validation splits (`run --validation F`) and hyperparameter selection in a sweep (`--select F`).
module Prompting.Tests.ValidationSplits

open System.IO
open System.Text.Json
open Expecto
open Prompting
open Prompting.Data
open Prompting.Tests.Fixtures
open Prompting.Tests.TestSupport
open Prompting.Tests.SweepSupport

let private sample (label: int) (i: int) =
    { Source = sprintf "c%d-%02d" label i; Label = label; Load = fun () -> failwith "not loaded" }

let private dataset () =
    { Name = "toy"
      ClassNames = [| "a"; "b"; "c" |]
      Train = Array.append [| for i in 0..9 -> sample 0 i |] (Array.append [| for i in 0..2 -> sample 1 i |] [| sample 2 0 |])
      Test = [| sample 0 100; sample 1 100 |] }

let private sources (xs: Sample[]) = xs |> Array.map _.Source

let private json (path: string) (names: string list) =
    use doc = JsonDocument.Parse(File.ReadAllText path)
    let mutable e = doc.RootElement
    for n in names do e <- e.GetProperty n
    e.GetRawText()

[<Tests>]
let tests =
    testList
        "validation"
        [ test "a seeded fraction of each class is held out: disjoint, complete, in order, never a whole class" {
              let d = dataset ()
              let kept, held = Validation.split 0.25 7 d.Train
              Expect.equal (held |> Array.countBy _.Label) [| 0, 2; 1, 1 |] "round(0.25 x 10) = 2 of class 0, 1 of class 1's 3, none of a lone sample"
              Expect.equal (Array.sort (Array.append (sources kept) (sources held))) (Array.sort (sources d.Train)) "every training sample once"
              Expect.isEmpty (Set.intersect (set (sources kept)) (set (sources held))) "disjoint"
              let position s = Array.findIndex (fun (x: Sample) -> x.Source = s) d.Train
              Expect.equal (sources kept |> Array.map position) (sources kept |> Array.map position |> Array.sort) "kept in order"
              Expect.equal (sources (snd (Validation.split 0.25 7 d.Train))) (sources held) "the same seed, the same split"
              let others = [ for s in 0..20 -> sources (snd (Validation.split 0.25 s d.Train)) ] |> List.distinct
              Expect.isGreaterThan others.Length 1 "other seeds, other splits"
              let _, most = Validation.split 0.99 7 d.Train
              Expect.equal (most |> Array.filter (fun s -> s.Label = 0)).Length 9 "never every sample of a class"
          }

          test "holdOut evaluates on the held-out samples and never on the test split" {
              let d = dataset ()
              Expect.equal (sources (Validation.holdOut None 1 d).Test) (sources d.Test) "None: as it is"
              let v = Validation.holdOut (Some 0.25) 1 d
              let kept, held = Validation.split 0.25 1 d.Train
              Expect.equal (sources v.Train) (sources kept) "train on the rest"
              Expect.equal (sources v.Test) (sources held) "evaluate on the held-out part"
              Expect.isEmpty (Set.intersect (set (sources v.Test)) (set (sources d.Test))) "no test sample"
              for bad in [ 0.0; 1.0; -0.5; nan ] do
                  let message = promptingError (string bad) (fun () -> Validation.split bad 0 d.Train)
                  expectMessage message [ "--validation"; "between 0 and 1" ] (string bad)
          }

          test "run --validation trains on the rest of the training data, reports the held-out part beside the test split, records it" {
              let out = Path.Combine(tempDir (), "run")
              let code, stdout, err = runCliEnv oneThread ([ "run"; "--method"; "linear"; "--validation"; "0.25"; "--out"; out ] @ runOptions ())
              Expect.equal code 0 (err + stdout)
              // 8 training images per class: 2 held out; 2 classes per task.
              Expect.stringContains (File.ReadAllText(Path.Combine(out, "log.txt"))) "2 classes, 12 train, 4 validation and 8 test images" "held out of training, beside the test split"
              let validation = Metrics.readJson (Path.Combine(out, "validation-metrics.json"))
              let test = Metrics.readJson (Path.Combine(out, "metrics.json"))
              Expect.equal validation.ClassIncremental.Matrix.Length 2 "validation accuracy after each task"
              Expect.equal test.ClassIncremental.Matrix.Length 2 "test accuracy after each task"
              use progress = JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "progress.json")))
              let rows = progress.RootElement.GetProperty "ValidationEvaluations"
              Expect.equal (rows.GetArrayLength()) 2 "a validation row per task in progress.json"
              let recorded = ((rows.Item 1).Item 1).GetProperty("ClassIncremental").GetDouble()
              let expected = validation.ClassIncremental.Matrix.[1].[1]
              Expect.floatClose Accuracy.veryHigh recorded expected "the same values"
              Expect.equal (json (Path.Combine(out, "config.json")) [ "Config"; "Validation" ]) "0.25" "recorded"
              Cli.expectOneLineError ([ "run"; "--method"; "linear"; "--validation"; "1.5"; "--out"; Path.Combine(tempDir (), "bad") ] @ runOptions ())
                  [ "--validation 1.5"; "between 0 and 1" ] |> ignore
          }

          test "sweep --select: each method's best grid point on validation data, then that point with every seed on all data" {
              let sweep = Path.Combine(tempDir (), "sweep")
              let args =
                  [ "sweep"; "--methods"; "linear"; "bias"; "--seeds"; "0"; "1"; "--grid"; "Method.Recipe.LearningRate=0.05,0.0005"; "--select"; "0.25"
                    "--parallel"; "2"; "--out"; sweep; "--" ] @ runOptions ()
              let code, stdout, err = runCliEnv [] args
              Expect.equal code 0 (err + stdout)
              let selection = Path.Combine(sweep, "selection")
              let validationRuns = Directory.GetDirectories(Path.Combine(selection, "runs")) |> Array.map Path.GetFileName |> Array.sort
              Expect.equal validationRuns.Length 8 "2 methods x 2 values x 2 seeds on validation data"
              for run in validationRuns do
                  Expect.equal (json (Path.Combine(selection, "runs", run, "config.json")) [ "Config"; "Validation" ]) "0.25" (run + ": held out")
                  Expect.stringContains (File.ReadAllText(Path.Combine(selection, "runs", run, "log.txt"))) "12 train, 4 validation and 8 test images" (run + ": validation data held out")
              use choice = JsonDocument.Parse(File.ReadAllText(Path.Combine(sweep, "selection.json")))
              for m in [ "linear"; "bias" ] do
                  let entry = choice.RootElement.GetProperty("methods").GetProperty(m)
                  let chosen = entry.GetProperty("chosen").GetString()
                  let mean (group: string) =
                      [ for s in [ 0; 1 ] ->
                            (Metrics.readJson (Path.Combine(selection, "runs", sprintf "%s-s%d" group s, "validation-metrics.json"))).ClassIncremental.FinalAverageAccuracy ]
                      |> List.average
                  let scores = [ for g in entry.GetProperty("scores").EnumerateArray() -> g.GetProperty("group").GetString(), g.GetProperty("validation_final_average_accuracy").GetDouble() ]
                  for g, score in scores do Expect.floatClose Accuracy.veryHigh score (mean g) (g + ": the validation runs' mean A_N")
                  let best = scores |> List.maxBy snd |> snd
                  Expect.equal (snd (scores |> List.find (fun (g, _) -> g = chosen))) best (m + ": the best validation score is chosen")
                  Expect.equal (fst scores.Head = chosen || snd scores.Head < best) true (m + ": the first of equals")
                  for s in [ 0; 1 ] do
                      let final = Path.Combine(sweep, "runs", sprintf "%s-s%d" chosen s)
                      Expect.isTrue (File.Exists(Path.Combine(final, "metrics.json"))) (sprintf "%s-s%d ran on all data" chosen s)
                      Expect.equal (json (Path.Combine(final, "config.json")) [ "Config"; "Validation" ]) "null" "no validation split"
                      Expect.stringContains (File.ReadAllText(Path.Combine(final, "log.txt"))) "16 train and 8 test images" "all training data, the test split"
              Expect.equal (Directory.GetDirectories(Path.Combine(sweep, "runs"))).Length 4 "one grid point per method, every seed"
              let code, stdout, err = runCliEnv [] args
              Expect.equal code 0 err
              Expect.equal (stdout.Split("0 to run").Length - 1) 2 "again: nothing to run in either stage"
              let code, status, _ = runCliEnv [] [ "sweep"; "status"; sweep ]
              Expect.equal code 0 "status"
              Expect.stringContains status "selection (" "the validation runs"
              Expect.stringContains status "final runs (" "the final runs"
          } ]
