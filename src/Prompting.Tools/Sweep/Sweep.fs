namespace Prompting.Sweep

open System
open System.IO
open Prompting

type Executor =
    | LocalExecutor
    | SlurmExecutor

/// How a sweep is carried out (not part of its identity: changing these on re-invocation is fine).
type ExecutionOptions =
    { Executor: Executor
      /// Local: workers (default 1). Slurm: the array's concurrency limit (default none).
      Parallel: int option
      /// Slurm: submit and return without waiting.
      NoWait: bool
      /// Slurm: time between two `squeue` polls.
      Poll: TimeSpan
      Resources: Slurm.Resources
      /// GPUs to spread local workers over (0 or 1: none).
      Gpus: int
      /// The directory the sweep was started from: points run there.
      WorkDir: string
      /// How to start `prompting` (see Exec.selfCommand).
      Command: string list
      /// Options every child `prompting run` gets besides --config and --out (e.g. --device).
      ChildOptions: string list }

/// A sweep from its points to its aggregated results: prepare the directory, run what is not
/// finished on the chosen executor, wait, aggregate.
module Sweeps =
    /// Slurm's queue when Slurm's clients are installed (and any point was ever submitted), else empty.
    let private queueIfAny (dir: string) (points: SweepPoint list) (required: bool) =
        let submitted = points |> List.exists (fun p -> File.Exists(Layout.jobFile dir p.Name))
        if not (submitted || required) then Map.empty
        else
            try Slurm.queue ()
            with PromptingError _ when not required -> Map.empty

    let private describeGone (required: bool) (job: string) =
        if required then Slurm.describeGone job
        else
            try Slurm.describeGone job
            with _ -> sprintf "Slurm job %s left the queue without an exit status (cancelled or killed)" job

    /// Every point's state.
    let states (dir: string) (points: SweepPoint list) (slurm: bool) =
        let queue = queueIfAny dir points slurm
        points |> List.map (fun p -> p, State.pointState dir queue (describeGone slurm) p.Name)

    let private table (states: (SweepPoint * PointState) list) =
        [ for p, s in states ->
              let word, detail = State.describe s
              p.Name, word, detail ]

    let private counts (rows: (string * string * string) list) =
        rows |> List.countBy (fun (_, w, _) -> w) |> List.map (fun (w, n) -> sprintf "%d %s" n w) |> fun l -> String.Join(", ", l)

    /// Prints one line per point (name, state, detail) and a count line.
    let printStatus (rows: (string * string * string) list) =
        let width = rows |> List.map (fun (n, _, _) -> n.Length) |> List.fold max 5
        for name, word, detail in rows do
            printfn "%s  %-8s  %s" (name.PadRight width) word detail
        printfn "%d points: %s" rows.Length (counts rows)

    /// `prompting sweep status DIR` (with --select: the validation runs first).
    let status (dir: string) =
        let selection = Layout.selectionDir dir
        let selecting = File.Exists(Layout.recordFile selection)
        if selecting then
            printfn "selection (%s):" selection
            printStatus (table (states selection (State.readRecord selection) false))
        if selecting && not (File.Exists(Layout.recordFile dir)) then printfn "final runs: after the selection"
        else
            if selecting then printfn "final runs (%s):" dir
            printStatus (table (states dir (State.readRecord dir) false))
        0

    /// Aggregates what has finished and prints the table; returns the rows.
    let collect (dir: string) (points: SweepPoint list) (slurm: bool) =
        let rows = table (states dir points slurm)
        let groups = Results.write dir points rows
        let header = [ "group"; "seeds" ] @ (Results.quantities |> List.map snd |> List.truncate 4)
        Report.printTable header
            [ for g in groups ->
                  [ g.Group; string g.Seeds.Length ] @ (g.Statistics |> List.truncate 4 |> List.map (Results.formatStatistic 2)) ]
        printfn "results: %s" (Path.GetFullPath(Path.Combine(dir, "results.md")))
        if File.Exists(Path.Combine(dir, "report.html")) then printfn "report: %s" (Path.GetFullPath(Path.Combine(dir, "report.html")))
        rows

    /// Runs (or continues) the sweep in `dir`: finished points are skipped, interrupted ones resume,
    /// failed or cancelled ones run again, points still in the Slurm queue are waited for.
    let run (dir: string) (points: SweepPoint list) (options: ExecutionOptions) (log: string -> unit) =
        let slurm = options.Executor = SlurmExecutor
        match options.Parallel with
        | Some n when n < 1 -> Errors.fail "sweep: --parallel %d: must be at least 1" n
        | _ -> ()
        if options.NoWait && not slurm then Errors.fail "sweep: --no-wait needs --executor slurm (local points run in this process)"
        if slurm then Slurm.requireClients ()
        State.prepare dir points
        Exec.writePointScript dir options.WorkDir options.Command options.ChildOptions |> ignore
        let before = states dir points slurm
        let active = before |> List.filter (fun (_, s) -> match s with Queued _ | Running _ -> true | _ -> false)
        let toRun = before |> List.filter (fun (_, s) -> match s with Pending | Interrupted | Failed _ -> true | _ -> false) |> List.map fst
        let finished = before |> List.filter (fun (_, s) -> s = Finished) |> List.length
        log (sprintf "sweep: %d points: %d finished, %d running or queued, %d to run" points.Length finished active.Length toRun.Length)
        match options.Executor with
        | LocalExecutor ->
            match active |> List.tryPick (fun (p, s) -> match s with Running where -> Some(p, where) | _ -> None) with
            | Some(p, where) -> Errors.fail "sweep: point %s is running (%s), another sweep works in %s; wait for it or stop it" p.Name where dir
            | None -> ()
            let workers = defaultArg options.Parallel 1
            let threads = Local.threadsPerPoint Environment.ProcessorCount workers
            if not toRun.IsEmpty then
                log (sprintf "local: %d at a time, %d threads each" (min workers toRun.Length) threads)
                Local.run dir (toRun |> List.map _.Name) { Parallel = workers; ThreadsPerPoint = threads; Gpus = options.Gpus } log
        | SlurmExecutor ->
            let submitted =
                if toRun.IsEmpty then []
                else
                    let names = toRun |> List.map _.Name
                    let id = Slurm.submit dir options.WorkDir names (defaultArg options.Parallel 0) options.Resources
                    log (sprintf "slurm: submitted %d points as job array %s" names.Length id)
                    names |> List.mapi (fun i _ -> sprintf "%s_%d" id i)
            let waiting = submitted @ (active |> List.choose (fun (p, _) -> State.job dir p.Name))
            if options.NoWait then
                if not waiting.IsEmpty then log (sprintf "not waiting: `prompting sweep status %s` shows progress; run the same sweep again to collect" dir)
            elif not waiting.IsEmpty then Slurm.wait waiting options.Poll log
        if options.NoWait && slurm then 0
        else
            let rows = collect dir points slurm
            let failed = rows |> List.filter (fun (_, w, _) -> w <> "finished")
            if failed.IsEmpty then 0
            else
                for name, word, detail in failed do
                    printfn "%s: %s%s" name word (if detail = "" then "" else ": " + detail)
                Errors.fail "sweep: %d of %d points did not finish (%s); run the same sweep again to rerun them" failed.Length rows.Length
                    (String.Join(", ", failed |> List.truncate 3 |> List.map (fun (n, _, _) -> n)) + (if failed.Length > 3 then ", ..." else ""))

/// What the selection stage of a sweep chooses on.
type SelectionData =
    /// A seeded fraction of each class's training data held out (`run --validation F`); the
    /// selection runs' scores are in validation-metrics.json.
    | HeldOut of fraction: float
    /// A named split of the benchmark (`run --split NAME`: VTAB-1k's and FGVC's `tune` trains on
    /// train800/train and tests on val200/val); the selection runs' scores are their metrics.json.
    | NamedSplit of name: string

/// Hyperparameter selection (the VPT protocol): every point first runs on selection data (a
/// held-out fraction of its training data, or the benchmark's tuning split) in DIR/selection (a
/// sweep directory of its own); each method's grid point with the best mean A_N there is written to
/// DIR/selection.json; then that grid point runs with every seed as the sweep in DIR (on all the
/// training data, or on the final split).
module Selection =
    open System.Text.Json
    open System.Text.Json.Nodes

    /// Each method's best group by mean selection A_N (the first in grid order on ties):
    /// method -> (chosen group, every group's (name, mean, seeds)).
    let choose (groups: GroupResult list) =
        groups
        |> List.groupBy _.Method
        |> List.map (fun (m, gs) ->
            let score (g: GroupResult) = g.Statistics.Head.Mean
            let best = gs |> List.filter (fun g -> not (Double.IsNaN(score g))) |> List.fold (fun (b: GroupResult option) g -> match b with Some x when score x >= score g -> b | _ -> Some g) None
            match best with
            | Some b -> m, b, gs
            | None -> Errors.fail "sweep: selection: method %s has no finished selection run to choose from" m)

    let private describe (data: SelectionData) =
        match data with
        | HeldOut fraction -> sprintf "%g of each class's training data held out" fraction
        | NamedSplit name -> sprintf "the benchmark's split %s" name

    let private writeChoice (dir: string) (data: SelectionData) (choices: (string * GroupResult * GroupResult list) list) =
        let root = JsonObject()
        match data with
        | HeldOut fraction ->
            root["validation"] <- JsonValue.Create fraction
            root["metric"] <- JsonValue.Create "mean validation A_N (final average accuracy, %) over seeds"
        | NamedSplit name ->
            root["split"] <- JsonValue.Create name
            root["metric"] <- JsonValue.Create(sprintf "mean A_N (final average accuracy, %%) over seeds on the test side of split %s" name)
        let methods = JsonObject()
        for m, best, all in choices do
            let o = JsonObject()
            o["chosen"] <- JsonValue.Create best.Group
            let overrides = JsonObject()
            for f, v in best.Overrides do overrides[f] <- JsonNode.Parse v
            o["overrides"] <- overrides
            let scores = JsonArray()
            for g in all do
                let s = JsonObject()
                s["group"] <- JsonValue.Create g.Group
                s["validation_final_average_accuracy"] <- (if Double.IsNaN g.Statistics.Head.Mean then null else JsonValue.Create g.Statistics.Head.Mean)
                s["seeds"] <- JsonValue.Create g.Seeds.Length
                scores.Add s
            o["scores"] <- scores
            methods[m] <- o
        root["methods"] <- methods
        let text = root.ToJsonString(JsonSerializerOptions(WriteIndented = true))
        Files.writeAtomic (Layout.selectionFile dir) (fun tmp -> File.WriteAllText(tmp, text + "\n"))

    /// Runs the selection sweep, chooses, then runs the chosen points. `finalPoints` builds the
    /// final sweep's points from each method's chosen overrides.
    let run (dir: string) (data: SelectionData) (selectionPoints: SweepPoint list)
            (finalPoints: (string * (string * string) list) list -> SweepPoint list) (options: ExecutionOptions) (log: string -> unit) =
        let selection = Layout.selectionDir dir
        log (sprintf "selection: every point on %s, in %s" (describe data) selection)
        let code = Sweeps.run selection selectionPoints options log
        if options.NoWait && options.Executor = SlurmExecutor
           && not (selectionPoints |> List.forall (fun p -> State.finished selection p.Name)) then code
        else
            let read =
                match data with
                | HeldOut _ -> Results.readValidation selection
                | NamedSplit _ -> Results.read selection
            let choices = choose (Results.aggregate selectionPoints (selectionPoints |> List.choose read))
            writeChoice dir data choices
            for m, best, _ in choices do
                log (sprintf "selection: %s -> %s (A_N %.2f on %s over %d seeds)" m best.Group best.Statistics.Head.Mean (describe data) best.Seeds.Length)
            Sweeps.run dir (finalPoints [ for m, best, _ in choices -> m, best.Overrides ]) options log
