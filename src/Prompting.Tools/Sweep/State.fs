namespace Prompting.Sweep

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Prompting

/// Where a point stands, read from its files (and, for Slurm, the queue).
type PointState =
    /// Never started.
    | Pending
    /// Started earlier, stopped before the end and not running now: the next invocation resumes it.
    | Interrupted
    /// Waiting in the Slurm queue (the array task's id).
    | Queued of job: string
    /// Running: "Slurm job 12_3" or "local process 4567".
    | Running of where: string
    | Finished
    /// Failed or cancelled: the last line of its log, or what Slurm says.
    | Failed of reason: string

/// A sweep directory: DIR/sweep.json (the points), DIR/points/<name>.json (each point's run
/// configuration), DIR/runs/<name>/ (each run), DIR/logs/<name>.log (each point's output, every
/// attempt appended), DIR/state/<name>.{exit,job,pid} (the last attempt's exit code, Slurm task,
/// local process), DIR/point.sh (what runs one point, for both executors), DIR/slurm/ (job scripts
/// and Slurm's own output) and the aggregated results.
module Layout =
    let recordFile dir = Path.Combine(dir, "sweep.json")
    let pointsDir dir = Path.Combine(dir, "points")
    let pointFile dir name = Path.Combine(pointsDir dir, name + ".json")
    let runDir dir name = Path.Combine(dir, "runs", name)
    let logsDir dir = Path.Combine(dir, "logs")
    let logFile dir name = Path.Combine(logsDir dir, name + ".log")
    let stateDir dir = Path.Combine(dir, "state")
    let exitFile dir name = Path.Combine(stateDir dir, name + ".exit")
    let jobFile dir name = Path.Combine(stateDir dir, name + ".job")
    let pidFile dir name = Path.Combine(stateDir dir, name + ".pid")
    let pointScript dir = Path.Combine(dir, "point.sh")
    let slurmDir dir = Path.Combine(dir, "slurm")
    let baseFile dir = Path.Combine(dir, "base.json")
    /// With --select: the validation sweep that chooses each method's grid point, and its choice.
    let selectionDir dir = Path.Combine(dir, "selection")
    let selectionFile dir = Path.Combine(dir, "selection.json")

/// sweep.json: what identifies a sweep (its points and their configurations), so that a changed
/// definition is refused on the same directory; and each point's state.
module State =
    let private writeText (path: string) (text: string) = Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text))

    let private readText (path: string) = try Some(File.ReadAllText path) with _ -> None

    /// The record's JSON: {"Points": {name: {"Method", "Seed", "Overrides": {field: value}, "Config": {...}}}}.
    let recordJson (points: SweepPoint list) =
        let root = JsonObject()
        let all = JsonObject()
        for p in points do
            let entry = JsonObject()
            entry["Method"] <- JsonValue.Create p.Method
            entry["Seed"] <- JsonValue.Create p.Seed
            let overrides = JsonObject()
            for field, value in p.Overrides do overrides[field] <- JsonNode.Parse value
            entry["Overrides"] <- overrides
            entry["Config"] <- JsonNode.Parse p.Config
            all[p.Name] <- entry
        root["Points"] <- all
        root.ToJsonString(JsonSerializerOptions(WriteIndented = true))

    /// The points recorded in a sweep directory (name, method, seed, overrides, configuration).
    let readRecord (dir: string) : SweepPoint list =
        let path = Layout.recordFile dir
        if not (File.Exists path) then Errors.fail "%s: not a sweep directory (no sweep.json)" dir
        try
            use doc = JsonDocument.Parse(File.ReadAllText path)
            [ for p in doc.RootElement.GetProperty("Points").EnumerateObject() ->
                  let e = p.Value
                  { Name = p.Name
                    Method = e.GetProperty("Method").GetString()
                    Seed = e.GetProperty("Seed").GetInt32()
                    Overrides = [ for o in e.GetProperty("Overrides").EnumerateObject() -> o.Name, o.Value.GetRawText() ]
                    Config = e.GetProperty("Config").GetRawText() } ]
        with
        | :? JsonException
        | :? InvalidOperationException
        | :? Collections.Generic.KeyNotFoundException as e -> Errors.fail "%s: unreadable sweep record (%s)" path e.Message

    /// How the recorded sweep differs from `points`: names added and removed, configurations changed.
    let differences (recorded: SweepPoint list) (points: SweepPoint list) =
        let before = recorded |> List.map (fun p -> p.Name, p) |> Map.ofList
        let after = points |> List.map (fun p -> p.Name, p) |> Map.ofList
        let added = points |> List.filter (fun p -> not (before.ContainsKey p.Name)) |> List.map _.Name
        let removed = recorded |> List.filter (fun p -> not (after.ContainsKey p.Name)) |> List.map _.Name
        let changed =
            [ for p in points do
                  match before.TryFind p.Name with
                  | Some r ->
                      for d in Prompting.Engine.Json.differences r.Config p.Config -> sprintf "%s: %s" p.Name d
                  | None -> () ]
        let list (what: string) (names: string list) =
            if names.IsEmpty then []
            else [ sprintf "%s %s" what (String.Join(", ", List.truncate 4 names) + (if names.Length > 4 then sprintf " and %d more" (names.Length - 4) else "")) ]
        list "points added:" added @ list "points removed:" removed @ List.truncate 4 changed

    /// Records the sweep in a new directory, or checks that the directory holds this same sweep.
    /// Nothing is written when it holds another sweep, or is a non-empty directory of something else.
    let prepare (dir: string) (points: SweepPoint list) =
        let record = Layout.recordFile dir
        if File.Exists record then
            match differences (readRecord dir) points with
            | [] -> ()
            | diffs ->
                Errors.fail "%s: this directory holds a different sweep (%s); use another --out or the original definition"
                    dir (String.Join("; ", diffs))
        elif Directory.Exists dir
             && Directory.EnumerateFileSystemEntries dir
                |> Seq.exists (fun e -> let n = Path.GetFileName e in n <> "selection" && n <> "selection.json") then
            Errors.fail "%s: not empty and not a sweep directory (no sweep.json); use a new or empty --out" dir
        Directory.CreateDirectory(Layout.pointsDir dir) |> ignore
        Directory.CreateDirectory(Layout.logsDir dir) |> ignore
        Directory.CreateDirectory(Layout.stateDir dir) |> ignore
        Directory.CreateDirectory(Path.Combine(dir, "runs")) |> ignore
        for p in points do
            let file = Layout.pointFile dir p.Name
            if readText file <> Some p.Config then writeText file p.Config
        if not (File.Exists record) then writeText record (recordJson points)

    /// The last non-empty line of a point's log ("" when there is none).
    let lastLogLine (dir: string) (name: string) =
        match readText (Layout.logFile dir name) with
        | None -> ""
        | Some text ->
            text.Split('\n') |> Array.map _.TrimEnd() |> Array.filter (fun l -> l <> "") |> Array.tryLast |> Option.defaultValue ""

    /// The exit code of the point's last attempt, when it ended.
    let exitCode (dir: string) (name: string) =
        readText (Layout.exitFile dir name) |> Option.bind (fun t -> match Int32.TryParse(t.Trim()) with | true, c -> Some c | _ -> None)

    /// The Slurm array task ("12_3") the point was last submitted as.
    let job (dir: string) (name: string) = readText (Layout.jobFile dir name) |> Option.map _.Trim() |> Option.filter ((<>) "")

    /// Tasks done and tasks in all, from the run's progress.json and config.json.
    let progress (dir: string) (name: string) =
        let run = Layout.runDir dir name
        let read (file: string) (pick: JsonElement -> int) =
            readText (Path.Combine(run, file))
            |> Option.bind (fun text ->
                try
                    use doc = JsonDocument.Parse text
                    Some(pick doc.RootElement)
                with _ -> None)
        let rec find (names: string list) (e: JsonElement) =
            match names with
            | [] -> e.GetInt32()
            | n :: rest -> find rest (e.GetProperty n)
        read "progress.json" (find [ "CompletedTasks" ]), read "config.json" (find [ "Config"; "Tasks" ])

    let finished (dir: string) (name: string) =
        match progress dir name with
        | Some done', Some tasks -> done' >= tasks && File.Exists(Path.Combine(Layout.runDir dir name, "metrics.json"))
        | _ -> exitCode dir name = Some 0 && File.Exists(Path.Combine(Layout.runDir dir name, "metrics.json"))

    /// Whether the local process recorded for the point is alive (and still runs the point script).
    let localProcess (dir: string) (name: string) =
        readText (Layout.pidFile dir name)
        |> Option.bind (fun t -> match Int32.TryParse(t.Trim()) with | true, pid -> Some pid | _ -> None)
        |> Option.filter (fun pid ->
            let cmdline = sprintf "/proc/%d/cmdline" pid
            // bash\0DIR/point.sh\0NAME\0: a recycled process id does not pass for the point.
            match readText cmdline with
            | Some text -> text.Split('\000') |> Array.contains name && text.Contains "point.sh"
            | None -> false)

    /// The point's state. `queue` maps Slurm array task ids ("12_3") in the queue to their state
    /// (PENDING, RUNNING, ...); `describeGone` explains a Slurm task that left the queue without
    /// an exit status (scontrol's JobState, when Slurm still remembers it).
    let pointState (dir: string) (queue: Map<string, string>) (describeGone: string -> string) (name: string) =
        let queued = job dir name |> Option.bind (fun j -> queue.TryFind j |> Option.map (fun s -> j, s))
        if finished dir name then Finished
        else
            match queued with
            | Some(j, "PENDING") -> Queued j
            | Some(j, _) -> Running(sprintf "Slurm job %s" j)
            | None ->
                match localProcess dir name, exitCode dir name, job dir name with
                | Some pid, _, _ -> Running(sprintf "local process %d" pid)
                | None, Some code, _ when code <> 0 ->
                    let line = lastLogLine dir name
                    Failed(if line = "" then sprintf "exit code %d" code else line)
                | None, Some _, _ -> Failed "exited 0 without finishing every task"
                | None, None, Some j -> Failed(describeGone j)
                | None, None, None ->
                    match progress dir name with
                    | Some _, _ -> Interrupted
                    | _ when File.Exists(Layout.logFile dir name) -> Interrupted
                    | _ -> Pending

    /// One word for a state, and its detail.
    let describe (state: PointState) =
        match state with
        | Pending -> "pending", ""
        | Interrupted -> "pending", "interrupted earlier; resumes"
        | Queued j -> "pending", sprintf "Slurm job %s queued" j
        | Running where -> "running", where
        | Finished -> "finished", ""
        | Failed reason -> "failed", reason
