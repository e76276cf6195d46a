/// Continual-learning metrics against hand-computed matrices; JSON and CSV files.
module Prompting.Tests.Metrics

open System
open System.IO
open System.Text.Json
open Expecto
open Prompting
open Prompting.Tests.TestSupport

let private close (actual: float) (expected: float) (what: string) =
    Expect.floatClose Accuracy.veryHigh actual expected what

let private closeAll (actual: float[]) (expected: float[]) (what: string) =
    Expect.equal actual.Length expected.Length (what + ": length")
    Array.iteri2 (fun i a e -> close a e (sprintf "%s[%d]" what i)) actual expected

// Class-incremental, 3 tasks. Task 0 improves after task 1 (92 > 90), so the max-based F_N and
// CODA's step-to-step forgetting differ:
//   A_i  = 90, (92+85)/2 = 88.5, (70+80+88)/3 = 79.333…
//   CAA  = (90 + 88.5 + 79.333…)/3 = 85.944…
//   F_N  = mean(max(90,92) − 70, 85 − 80) = mean(22, 5) = 13.5
//   CODA = ((90 − 92)/1 + ((92 − 70) + (85 − 80))/2) / 2 = (−2 + 13.5)/2 = 5.75
let private classIl = [| [| 90.0 |]; [| 92.0; 85.0 |]; [| 70.0; 80.0; 88.0 |] |]

// Task-incremental, 3 tasks:
//   A_i  = 95, 95, 280/3;  CAA = (95 + 95 + 93.333…)/3 = 94.444…
//   F_N  = mean(95 − 90, 96 − 93) = 4
//   CODA = ((95 − 94) + ((94 − 90) + (96 − 93))/2) / 2 = (1 + 3.5)/2 = 2.25
let private taskIl = [| [| 95.0 |]; [| 94.0; 96.0 |]; [| 90.0; 93.0; 97.0 |] |]

// 4 tasks, for CODA's 1/t weights up to t = 3:
//   F_N  = mean(80 − 65, 90 − 80, 88 − 84) = 29/3
//   CODA = (10/1 + (10 + 5)/2 + (−5 + 5 + 4)/3) / 3 = (10 + 7.5 + 4/3)/3 = 6.2777…
let private fourTasks = [| [| 80.0 |]; [| 70.0; 90.0 |]; [| 60.0; 85.0; 88.0 |]; [| 65.0; 80.0; 84.0; 91.0 |] |]

let private evaluations =
    Array.init 3 (fun i ->
        Array.init (i + 1) (fun j ->
            { ClassIncremental = classIl[i][j]
              TaskIncremental = taskIl[i][j]
              // task-keyed choice scored on tasks 0 and 1 only, to exercise None
              PromptChoice = if j < 2 then Some(100.0 - 10.0 * float (i + j)) else None }))

let private run () = Metrics.ofEvaluations evaluations

[<Tests>]
let tests =
    testList
        "metrics"
        [ testCase "A_i, A_N and CAA of a 3-task matrix"
          <| fun () ->
              closeAll (Metrics.averageAfterTask classIl) [| 90.0; 88.5; 238.0 / 3.0 |] "A_i"
              close (Metrics.finalAverageAccuracy classIl) (238.0 / 3.0) "A_N"
              close (Metrics.averageIncrementalAccuracy classIl) ((90.0 + 88.5 + 238.0 / 3.0) / 3.0) "CAA"
              close (Metrics.averageIncrementalAccuracy classIl) 85.94444444444444 "CAA value"

          testCase "F_N (L2P/DualPrompt) uses the best earlier accuracy"
          <| fun () ->
              closeAll (Metrics.forgettingPerTask classIl) [| 22.0; 5.0 |] "per task"
              close (Metrics.forgetting classIl) 13.5 "F_N"
              closeAll (Metrics.forgettingPerTask fourTasks) [| 15.0; 10.0; 4.0 |] "per task, 4 tasks"
              close (Metrics.forgetting fourTasks) (29.0 / 3.0) "F_N, 4 tasks"

          testCase "CODA-Prompt's forgetting averages step-to-step drops weighted 1/t"
          <| fun () ->
              close (Metrics.codaForgetting classIl) 5.75 "3 tasks"
              close (Metrics.codaForgetting taskIl) 2.25 "3 tasks, task-IL"
              close (Metrics.codaForgetting fourTasks) ((10.0 + 7.5 + 4.0 / 3.0) / 3.0) "4 tasks"

          testCase "one task: nothing to forget"
          <| fun () ->
              let one = [| [| 75.0 |] |]
              let m = Metrics.ofMatrix one
              close m.FinalAverageAccuracy 75.0 "A_N"
              close m.AverageIncrementalAccuracy 75.0 "CAA"
              Expect.equal m.ForgettingPerTask [||] "per task"
              Expect.equal m.Forgetting 0.0 "F_N"
              Expect.equal m.CodaForgetting 0.0 "CODA"

          testCase "task-incremental matrix gets the same metrics"
          <| fun () ->
              let m = (run ()).TaskIncremental
              Expect.equal m.Matrix taskIl "matrix"
              closeAll m.AverageAfterTask [| 95.0; 95.0; 280.0 / 3.0 |] "A_i"
              close m.FinalAverageAccuracy (280.0 / 3.0) "A_N"
              close m.AverageIncrementalAccuracy ((190.0 + 280.0 / 3.0) / 3.0) "CAA"
              closeAll m.ForgettingPerTask [| 5.0; 3.0 |] "per task"
              close m.Forgetting 4.0 "F_N"
              close m.CodaForgetting 2.25 "CODA"

          testCase "run metrics from evaluations"
          <| fun () ->
              let r = run ()
              Expect.equal r.Tasks 3 "tasks"
              Expect.equal r.ClassIncremental.Matrix classIl "class-IL matrix"
              close r.ClassIncremental.FinalAverageAccuracy (238.0 / 3.0) "A_N"
              close r.ClassIncremental.Forgetting 13.5 "F_N"
              close r.ClassIncremental.CodaForgetting 5.75 "CODA"
              Expect.equal (r.Steps |> Array.map _.AfterTask) [| 0; 1; 2 |] "steps"
              closeAll (r.Steps |> Array.map _.AverageAccuracy) [| 90.0; 88.5; 238.0 / 3.0 |] "A_i per step"
              closeAll (r.Steps |> Array.map _.TaskIncrementalAverageAccuracy) [| 95.0; 95.0; 280.0 / 3.0 |] "task-IL A_i per step"
              // choices: step 0: [100]; step 1: [90; 80]; step 2: [80; 70; None]
              Expect.equal r.Steps[2].PromptChoice [| Some 80.0; Some 70.0; None |] "choices after task 2"
              Expect.equal (r.Steps |> Array.map _.PromptChoiceAccuracy) [| Some 100.0; Some 85.0; Some 75.0 |] "choice per step"
              Expect.equal r.PromptChoiceAccuracy (Some 75.0) "final choice"

          testCase "no prompt choice when the method has none"
          <| fun () ->
              let r =
                  Metrics.ofEvaluations [| [| { ClassIncremental = 50.0; TaskIncremental = 50.0; PromptChoice = None } |] |]
              Expect.equal r.PromptChoiceAccuracy None "none"

          testCase "prompt-choice accuracy of one evaluation"
          <| fun () ->
              close (Metrics.promptChoiceAccuracy [| 0; 0; 1; 2 |] [| 0; 0; 0; 2 |]) 75.0 "3 of 4"
              Expect.isTrue (Double.IsNaN(Metrics.promptChoiceAccuracy [||] [||])) "no samples"
              let msg = promptingError "lengths" (fun () -> Metrics.promptChoiceAccuracy [| 0 |] [| 0; 1 |])
              expectMessage msg [ "1 chosen"; "2 samples" ] "lengths"

          testCase "malformed matrices are refused"
          <| fun () ->
              let msg = promptingError "square" (fun () -> Metrics.ofMatrix [| [| 1.0 |]; [| 1.0; 2.0; 3.0 |] |])
              expectMessage msg [ "row 1"; "3 entries"; "expected 2" ] "square"
              let msg = promptingError "empty" (fun () -> Metrics.ofMatrix [||])
              expectMessage msg [ "no rows" ] "empty"
              let msg = promptingError "evaluations" (fun () -> Metrics.ofEvaluations [| [||] |])
              expectMessage msg [ "after task 0"; "0 tasks evaluated" ] "evaluations"

          testCase "JSON: lowercase_snake names and a lossless round trip"
          <| fun () ->
              let r = run ()
              let json = Metrics.toJson r
              for key in
                  [ "\"tasks\""; "\"steps\""; "\"after_task\""; "\"class_incremental\""; "\"task_incremental\""
                    "\"average_after_task\""; "\"final_average_accuracy\""; "\"average_incremental_accuracy\""
                    "\"forgetting_per_task\""; "\"forgetting\""; "\"coda_forgetting\""; "\"prompt_choice\""
                    "\"prompt_choice_accuracy\""; "\"task_incremental_average_accuracy\""; "\"matrix\"" ] do
                  Expect.stringContains json key (sprintf "JSON has %s" key)
              Expect.isFalse (json.Contains "FinalAverageAccuracy") "no PascalCase names"
              use doc = JsonDocument.Parse json
              let steps = doc.RootElement.GetProperty "steps"
              let choices = steps[2].GetProperty "prompt_choice"
              let third = choices[2]
              Expect.equal third.ValueKind JsonValueKind.Null "None is null"
              Expect.equal (Metrics.ofJson "test" json) r "round trip"

          testCase "JSON: NaN survives and files round-trip"
          <| fun () ->
              use dir = new TempDir()
              let r =
                  Metrics.ofEvaluations [| [| { ClassIncremental = nan; TaskIncremental = 10.0; PromptChoice = None } |] |]
              let path = dir.File "out/metrics.json"
              Metrics.writeJson path r
              let back = Metrics.readJson path
              Expect.isTrue (Double.IsNaN back.ClassIncremental.FinalAverageAccuracy) "NaN kept"
              Expect.equal back.TaskIncremental r.TaskIncremental "task-IL kept"
              let msg = promptingError "bad json" (fun () -> Metrics.ofJson "broken.json" "{ not json")
              expectMessage msg [ "broken.json"; "invalid metrics JSON" ] "bad json"

          testCase "CSV: one row per (after_task, task) and a summary"
          <| fun () ->
              let r = run ()
              let expected =
                  String.concat
                      ""
                      [ "after_task,task,class_incremental,task_incremental,prompt_choice\n"
                        "0,0,90,95,100\n"
                        "1,0,92,94,90\n"
                        "1,1,85,96,80\n"
                        "2,0,70,90,80\n"
                        "2,1,80,93,70\n"
                        "2,2,88,97,\n" ]
              Expect.equal (Metrics.accuracyCsv r) expected "accuracy CSV"
              let summary = Metrics.summaryCsv r
              let lines = summary.TrimEnd('\n').Split('\n')
              Expect.equal lines[0] "metric,value" "header"
              Expect.equal lines[1] "tasks,3" "tasks"
              Expect.stringStarts lines[2] "final_average_accuracy,79.333333" "A_N"
              Expect.stringStarts lines[3] "average_incremental_accuracy,85.94444" "CAA"
              Expect.equal lines[4] "forgetting,13.5" "F_N"
              Expect.equal lines[5] "coda_forgetting,5.75" "CODA"
              Expect.stringStarts lines[6] "task_il_final_average_accuracy,93.33333" "task-IL A_N"
              Expect.equal lines[8] "task_il_forgetting,4" "task-IL F_N"
              Expect.equal lines[9] "task_il_coda_forgetting,2.25" "task-IL CODA"
              Expect.equal lines[10] "prompt_choice_accuracy,75" "choice"
              Expect.equal lines.Length 11 "rows"
              use dir = new TempDir()
              Metrics.writeCsv (dir.File "accuracy.csv") (dir.File "summary.csv") r
              Expect.equal (File.ReadAllText(dir.File "accuracy.csv")) expected "accuracy file"
              Expect.equal (File.ReadAllText(dir.File "summary.csv")) summary "summary file" ]
