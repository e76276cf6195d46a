namespace Prompting

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Serialization

/// What one evaluation measures on one task's test data (all in %).
type Evaluation =
    { /// Class-incremental: argmax over every class seen so far.
      ClassIncremental: float
      /// Task-incremental: argmax within the task's own classes.
      TaskIncremental: float
      /// For methods whose prompt choice can be scored against tasks: the share of test samples whose
      /// chosen prompt (pool entry) belongs to the sample's own task. None for the others.
      PromptChoice: float option }

/// The continual-learning metrics of one accuracy matrix (class- or task-incremental).
/// Tasks are numbered from 0; `Matrix[i][j]` is the accuracy (%) on task j's test data after
/// training task i, for j ≤ i (row i has i + 1 entries; entries above the diagonal do not exist).
type AccuracyMetrics =
    { Matrix: float[][]
      /// A_i = mean_{j≤i} R[i][j], one per training step.
      AverageAfterTask: float[]
      /// A_N = mean_j R[N][j] (FAA), N the last task.
      FinalAverageAccuracy: float
      /// CAA = mean_i A_i.
      AverageIncrementalAccuracy: float
      /// For each task j < N: max_{i<N} R[i][j] − R[N][j].
      ForgettingPerTask: float[]
      /// F_N = mean of ForgettingPerTask (L2P/DualPrompt); 0 with one task.
      Forgetting: float
      /// CODA-Prompt's own forgetting (see Metrics.codaForgetting); 0 with one task.
      CodaForgetting: float }

/// Everything measured after training one task (row `AfterTask` of the matrices).
type TaskMetrics =
    { AfterTask: int
      /// Class-incremental accuracy on each task j ≤ AfterTask (%).
      ClassIncremental: float[]
      /// Task-incremental accuracy on each task j ≤ AfterTask (%).
      TaskIncremental: float[]
      /// Prompt-choice accuracy on each task j ≤ AfterTask (%), where the method has one.
      PromptChoice: float option[]
      /// A_i, class-incremental.
      AverageAccuracy: float
      /// A_i, task-incremental.
      TaskIncrementalAverageAccuracy: float
      /// Mean prompt-choice accuracy over the tasks that have one; None when none has.
      PromptChoiceAccuracy: float option }

/// The metrics of a whole run.
type RunMetrics =
    { Tasks: int
      Steps: TaskMetrics[]
      ClassIncremental: AccuracyMetrics
      TaskIncremental: AccuracyMetrics
      /// Prompt-choice accuracy after the last task (mean over tasks), where the method has one.
      PromptChoiceAccuracy: float option }

/// Pure continual-learning metrics (no tensors) and their JSON and CSV files.
module Metrics =
    let private mean (xs: float[]) = Array.average xs

    /// Checks that the matrix is lower-triangular: at least one row, row i with i + 1 entries.
    let validate (r: float[][]) =
        if isNull r || r.Length = 0 then Errors.fail "accuracy matrix: no rows (at least one task is needed)"
        r
        |> Array.iteri (fun i row ->
            let n = if isNull row then 0 else row.Length
            if n <> i + 1 then
                Errors.fail "accuracy matrix: row %d (after task %d) has %d entries, expected %d (tasks 0..%d)" i i n (i + 1) i)

    /// A_i = mean_{j≤i} R[i][j] for every step i.
    let averageAfterTask (r: float[][]) =
        validate r
        r |> Array.map mean

    /// A_N = mean_j R[N][j], N the last task.
    let finalAverageAccuracy (r: float[][]) =
        validate r
        mean r[r.Length - 1]

    /// CAA = mean_i A_i (average incremental accuracy).
    let averageIncrementalAccuracy (r: float[][]) = averageAfterTask r |> mean

    /// For each task j < N: max_{i<N} R[i][j] − R[N][j], the drop from its best earlier accuracy.
    let forgettingPerTask (r: float[][]) =
        validate r
        let last = r.Length - 1
        Array.init last (fun j -> (Array.init (last - j) (fun k -> r[j + k][j]) |> Array.max) - r[last][j])

    /// F_N = mean over j < N of (max_{i<N} R[i][j] − R[N][j]) (L2P/DualPrompt definition); 0 with one task.
    let forgetting (r: float[][]) =
        let perTask = forgettingPerTask r
        if perTask.Length = 0 then 0.0 else mean perTask

    /// CODA-Prompt's forgetting, as computed by `calc_forgetting` in the CODA-Prompt repository
    /// (GT-RIPL/CODA-Prompt, utils/calc_forgetting.py), tasks numbered from 0, T tasks:
    ///
    ///   F_CODA = 1/(T−1) · Σ_{t=1}^{T−1} (1/t) · Σ_{i=0}^{t−1} (R[t−1][i] − R[t][i])
    ///
    /// that is, for each step t the mean drop of the t earlier tasks since the previous step
    /// (step-to-step, not from the best earlier value, so gains offset losses), averaged over the
    /// T − 1 steps. 0 with one task (the reference divides by zero there).
    let codaForgetting (r: float[][]) =
        validate r
        let tasks = r.Length
        if tasks = 1 then
            0.0
        else
            let step t = (Array.init t (fun i -> r[t - 1][i] - r[t][i]) |> Array.sum) / float t
            (Array.init (tasks - 1) (fun k -> step (k + 1)) |> Array.sum) / float (tasks - 1)

    /// All metrics of one accuracy matrix.
    let ofMatrix (r: float[][]) : AccuracyMetrics =
        validate r
        { Matrix = r |> Array.map Array.copy
          AverageAfterTask = averageAfterTask r
          FinalAverageAccuracy = finalAverageAccuracy r
          AverageIncrementalAccuracy = averageIncrementalAccuracy r
          ForgettingPerTask = forgettingPerTask r
          Forgetting = forgetting r
          CodaForgetting = codaForgetting r }

    /// Prompt-choice accuracy (%) of one evaluation: the share of samples whose chosen prompt's
    /// task (`chosen[k]`) is the sample's own task (`own[k]`). NaN for no samples.
    let promptChoiceAccuracy (chosen: int[]) (own: int[]) =
        if chosen.Length <> own.Length then
            Errors.fail "prompt choice: %d chosen tasks for %d samples" chosen.Length own.Length
        if chosen.Length = 0 then nan
        else 100.0 * float (Array.fold2 (fun n c o -> if c = o then n + 1 else n) 0 chosen own) / float chosen.Length

    /// Mean of the prompt-choice accuracies that exist; None when none does.
    let private meanChoice (choices: float option[]) =
        match Array.choose id choices with
        | [||] -> None
        | xs -> Some(mean xs)

    /// The metrics after training task `afterTask`, from its evaluations of tasks 0..afterTask.
    let step (afterTask: int) (evaluations: Evaluation[]) : TaskMetrics =
        if evaluations.Length <> afterTask + 1 then
            Errors.fail "evaluations after task %d: %d tasks evaluated, expected %d" afterTask evaluations.Length (afterTask + 1)
        let classIl = evaluations |> Array.map _.ClassIncremental
        let taskIl = evaluations |> Array.map _.TaskIncremental
        let choices = evaluations |> Array.map _.PromptChoice
        { AfterTask = afterTask
          ClassIncremental = classIl
          TaskIncremental = taskIl
          PromptChoice = choices
          AverageAccuracy = mean classIl
          TaskIncrementalAverageAccuracy = mean taskIl
          PromptChoiceAccuracy = meanChoice choices }

    /// The metrics of a run from `evaluations[i][j]`: task j's test data after training task i (j ≤ i).
    let ofEvaluations (evaluations: Evaluation[][]) : RunMetrics =
        if isNull evaluations || evaluations.Length = 0 then Errors.fail "run metrics: no evaluations (at least one task is needed)"
        let steps = evaluations |> Array.mapi step
        { Tasks = steps.Length
          Steps = steps
          ClassIncremental = steps |> Array.map _.ClassIncremental |> ofMatrix
          TaskIncremental = steps |> Array.map _.TaskIncremental |> ofMatrix
          PromptChoiceAccuracy = steps[steps.Length - 1].PromptChoiceAccuracy }

    // ---- JSON ----

    /// Serializer options: FSharp.SystemTextJson for records and options (None is null),
    /// lowercase_snake field names, NaN/Infinity written as strings.
    let jsonOptions =
        let o = JsonSerializerOptions()
        o.PropertyNamingPolicy <- JsonNamingPolicy.SnakeCaseLower
        o.NumberHandling <- JsonNumberHandling.AllowNamedFloatingPointLiterals
        o.WriteIndented <- true
        o.Converters.Add(JsonFSharpConverter())
        o

    let toJson (metrics: RunMetrics) = JsonSerializer.Serialize(metrics, jsonOptions)

    /// Parses metrics JSON; `source` names it in error messages.
    let ofJson (source: string) (json: string) : RunMetrics =
        let parsed =
            try JsonSerializer.Deserialize<RunMetrics>(json, jsonOptions)
            with :? JsonException as e -> Errors.fail "%s: invalid metrics JSON (%s)" source e.Message
        if isNull (box parsed) then Errors.fail "%s: invalid metrics JSON (null)" source
        validate parsed.ClassIncremental.Matrix
        parsed

    let writeJson (path: string) (metrics: RunMetrics) =
        let json = toJson metrics
        Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, json + "\n", UTF8Encoding false))

    let readJson (path: string) =
        let text =
            try File.ReadAllText path
            with
            | :? IOException
            | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message
        ofJson path text

    // ---- CSV ----

    /// Invariant culture, shortest round-trip form; NaN as "NaN".
    let private number (x: float) = x.ToString("R", CultureInfo.InvariantCulture)

    let private optional = function
        | Some x -> number x
        | None -> ""

    /// One row per (after_task, task), tasks numbered from 0:
    /// after_task,task,class_incremental,task_incremental,prompt_choice (empty when none).
    let accuracyCsv (metrics: RunMetrics) =
        let sb = StringBuilder()
        sb.Append("after_task,task,class_incremental,task_incremental,prompt_choice\n") |> ignore
        for s in metrics.Steps do
            for j in 0 .. s.AfterTask do
                sb.Append(sprintf "%d,%d,%s,%s,%s\n" s.AfterTask j (number s.ClassIncremental[j]) (number s.TaskIncremental[j]) (optional s.PromptChoice[j]))
                |> ignore
        sb.ToString()

    /// The summary numbers as metric,value rows.
    let summaryRows (metrics: RunMetrics) =
        let matrix (prefix: string) (m: AccuracyMetrics) =
            [ prefix + "final_average_accuracy", Some m.FinalAverageAccuracy
              prefix + "average_incremental_accuracy", Some m.AverageIncrementalAccuracy
              prefix + "forgetting", Some m.Forgetting
              prefix + "coda_forgetting", Some m.CodaForgetting ]
        [ yield "tasks", Some(float metrics.Tasks)
          yield! matrix "" metrics.ClassIncremental
          yield! matrix "task_il_" metrics.TaskIncremental
          yield "prompt_choice_accuracy", metrics.PromptChoiceAccuracy ]

    /// metric,value: tasks, class-incremental A_N, CAA, F_N, CODA forgetting, the same prefixed
    /// task_il_, and prompt_choice_accuracy (empty when none).
    let summaryCsv (metrics: RunMetrics) =
        let sb = StringBuilder()
        sb.Append("metric,value\n") |> ignore
        for name, value in summaryRows metrics do
            sb.Append(sprintf "%s,%s\n" name (optional value)) |> ignore
        sb.ToString()

    let private writeText (path: string) (text: string) =
        Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text, UTF8Encoding false))

    /// Writes the per-(after_task, task) accuracies and the summary as two CSV files.
    let writeCsv (accuracyPath: string) (summaryPath: string) (metrics: RunMetrics) =
        writeText accuracyPath (accuracyCsv metrics)
        writeText summaryPath (summaryCsv metrics)
