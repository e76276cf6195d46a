namespace Prompting.Sweep

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Prompting

/// Mean, sample standard deviation (n − 1) and the half-width of the 95% confidence interval of
/// the mean (Student's t with n − 1 degrees of freedom); NaN half-width for one value.
type Statistic = { Mean: float; Std: float; Ci95: float; Count: int }

/// What one finished point measured.
type PointResult =
    { Point: SweepPoint
      Summary: RunSummary
      /// A_N, CAA, F_N (class-incremental), task-IL A_N, train seconds, peak memory (MiB).
      Values: float list }

/// One method (and grid point) over its seeds.
type GroupResult =
    { Group: string
      Method: string
      Overrides: (string * string) list
      Seeds: int list
      /// Points of the group that have not finished (left out of the statistics).
      Missing: string list
      Statistics: Statistic list }

/// results.md, results.csv, results.json and report.html of a sweep directory.
module Results =
    let private invariant = CultureInfo.InvariantCulture

    /// (column key, heading) of each aggregated quantity, in PointResult.Values order.
    let quantities =
        [ "final_average_accuracy", "A_N (%)"
          "average_incremental_accuracy", "CAA (%)"
          "forgetting", "F_N"
          "task_il_final_average_accuracy", "task-IL A_N (%)"
          "train_seconds", "train time (s)"
          "peak_memory_mib", "peak memory (MiB)" ]

    /// Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; 1.96 beyond.
    let private t975 =
        [| 12.706; 4.303; 3.182; 2.776; 2.571; 2.447; 2.365; 2.306; 2.262; 2.228; 2.201; 2.179; 2.160; 2.145; 2.131
           2.120; 2.110; 2.101; 2.093; 2.086; 2.080; 2.074; 2.069; 2.064; 2.060; 2.056; 2.052; 2.048; 2.045; 2.042 |]

    let tQuantile (df: int) = if df < 1 then nan elif df <= t975.Length then t975[df - 1] else 1.96

    let statistic (values: float list) =
        let n = values.Length
        if n = 0 then { Mean = nan; Std = nan; Ci95 = nan; Count = 0 }
        else
            let mean = List.average values
            let std = if n = 1 then 0.0 else sqrt ((values |> List.sumBy (fun x -> (x - mean) ** 2.0)) / float (n - 1))
            { Mean = mean; Std = std; Ci95 = (if n = 1 then nan else tQuantile (n - 1) * std / sqrt (float n)); Count = n }

    /// The group a point belongs to: its name without the seed.
    let groupName (p: SweepPoint) =
        let suffix = sprintf "-s%d" p.Seed
        if p.Name.EndsWith suffix then p.Name.Substring(0, p.Name.Length - suffix.Length) else p.Name

    let private json (path: string) =
        try
            use doc = JsonDocument.Parse(File.ReadAllText path)
            Some(doc.RootElement.Clone())
        with _ -> None

    /// A finished point's results from its run directory (metrics file `metricsName`, progress.json,
    /// config.json).
    let readFrom (metricsName: string) (dir: string) (p: SweepPoint) : PointResult option =
        let run = Layout.runDir dir p.Name
        let metricsPath = Path.Combine(run, metricsName)
        match json (Path.Combine(run, "progress.json")), json (Path.Combine(run, "config.json")) with
        | Some progress, Some config when File.Exists metricsPath ->
            let metrics = Metrics.readJson metricsPath
            let number (e: JsonElement) (name: string) =
                match e.TryGetProperty name with
                | true, v when v.ValueKind = JsonValueKind.Number -> v.GetDouble()
                | _ -> nan
            let text (e: JsonElement) (name: string) =
                match e.TryGetProperty name with
                | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
                | _ -> ""
            let summary =
                { Method = groupName p
                  Seed = p.Seed
                  Metrics = metrics
                  TrainSeconds = number progress "TrainSeconds"
                  PeakMemoryBytes = int64 (number progress "PeakMemoryBytes")
                  TrainableParameters = int64 (number progress "TrainableParameters")
                  Checkpoint = text config "CheckpointFile"
                  CheckpointSha256 = text config "CheckpointSha256"
                  ConfigJson = File.ReadAllText(Path.Combine(run, "config.json"))
                  Settings = ""
                  TaskClasses = []
                  EpochLosses = []
                  Warnings =
                    match progress.TryGetProperty "Warnings" with
                    | true, v when v.ValueKind = JsonValueKind.Array -> [ for w in v.EnumerateArray() -> w.ToString() ]
                    | _ -> [] }
            Some
                { Point = p
                  Summary = summary
                  Values =
                    [ metrics.ClassIncremental.FinalAverageAccuracy
                      metrics.ClassIncremental.AverageIncrementalAccuracy
                      metrics.ClassIncremental.Forgetting
                      metrics.TaskIncremental.FinalAverageAccuracy
                      summary.TrainSeconds
                      float summary.PeakMemoryBytes / (1024.0 * 1024.0) ] }
        | _ -> None

    /// A finished point's test results.
    let read (dir: string) (p: SweepPoint) = readFrom "metrics.json" dir p

    /// A finished `--validation` point's results on its held-out validation data.
    let readValidation (dir: string) (p: SweepPoint) = readFrom "validation-metrics.json" dir p

    /// Groups the points (in sweep order) and summarises each group over its finished seeds.
    let aggregate (points: SweepPoint list) (results: PointResult list) : GroupResult list =
        let byName = results |> List.map (fun r -> r.Point.Name, r) |> Map.ofList
        points
        |> List.groupBy groupName
        |> List.map (fun (group, members) ->
            let finished = members |> List.choose (fun p -> byName.TryFind p.Name)
            { Group = group
              Method = members.Head.Method
              Overrides = members.Head.Overrides
              Seeds = finished |> List.map _.Point.Seed
              Missing = members |> List.filter (fun p -> not (byName.ContainsKey p.Name)) |> List.map _.Name
              Statistics = List.init quantities.Length (fun i -> finished |> List.map (fun r -> r.Values[i]) |> statistic) })

    let private number (digits: int) (x: float) =
        if Double.IsNaN x then "" else x.ToString("F" + string digits, invariant)

    let private exact (x: float) = if Double.IsNaN x then "" else x.ToString("R", invariant)

    /// "85.50 ± 1.23 (95% CI ± 3.41)", or the value alone for one seed.
    let formatStatistic (digits: int) (s: Statistic) =
        if s.Count = 0 then "–"
        elif s.Count = 1 then number digits s.Mean
        else sprintf "%s ± %s (± %s)" (number digits s.Mean) (number digits s.Std) (number digits s.Ci95)

    let private digitsOf (i: int) = if i >= 4 then 1 else 2

    let markdown (groups: GroupResult list) (results: PointResult list) (states: (string * string * string) list) =
        let sb = StringBuilder()
        let add (s: string) = sb.Append(s).Append('\n') |> ignore
        add "# Sweep results"
        add ""
        add "Per method and grid point over its seeds: mean ± sample standard deviation (± half-width of the 95% confidence interval of the mean, Student's t)."
        add ""
        add (Report.markdownTable
                 ([ "group"; "seeds" ] @ (quantities |> List.map snd))
                 [ for g in groups ->
                       [ g.Group; (if g.Missing.IsEmpty then string g.Seeds.Length else sprintf "%d of %d" g.Seeds.Length (g.Seeds.Length + g.Missing.Length)) ]
                       @ (g.Statistics |> List.mapi (fun i s -> formatStatistic (digitsOf i) s)) ])
        add ""
        add "## Points"
        add ""
        let byName = results |> List.map (fun r -> r.Point.Name, r) |> Map.ofList
        add (Report.markdownTable
                 ([ "point"; "state" ] @ (quantities |> List.map snd))
                 [ for name, state, _ in states ->
                       [ name; state ]
                       @ (match byName.TryFind name with
                          | Some r -> r.Values |> List.mapi (fun i v -> number (digitsOf i) v)
                          | None -> quantities |> List.map (fun _ -> "")) ])
        sb.ToString()

    /// The "Selection" section of results.md from DIR/selection.json (written by the selection
    /// stage of `--select` / `--select-split`): each method's chosen grid point and every grid
    /// point's selection score.
    let selectionMarkdown (selection: JsonElement) =
        let sb = StringBuilder()
        let add (s: string) = sb.Append(s).Append('\n') |> ignore
        let on =
            match selection.TryGetProperty "split", selection.TryGetProperty "validation" with
            | (true, s), _ -> sprintf "the benchmark's split `%s` (its test side)" (s.GetString())
            | _, (true, v) -> sprintf "%s of each class's training data held out" (v.GetRawText())
            | _ -> "selection data"
        add "## Selection"
        add ""
        add (sprintf "Each method's grid point was chosen in `selection/` on %s: the best mean A_N over the seeds, the first in grid order on ties. The table above is the chosen point's final runs." on)
        add ""
        add (Report.markdownTable
                 [ "method"; "grid point"; "selection A_N (%)"; "seeds"; "chosen" ]
                 [ for m in selection.GetProperty("methods").EnumerateObject() do
                       let chosen = m.Value.GetProperty("chosen").GetString()
                       for g in m.Value.GetProperty("scores").EnumerateArray() ->
                           let group = g.GetProperty("group").GetString()
                           let score = g.GetProperty "validation_final_average_accuracy"
                           [ m.Name; group
                             (if score.ValueKind = JsonValueKind.Number then number 2 (score.GetDouble()) else "–")
                             string (g.GetProperty("seeds").GetInt32())
                             (if group = chosen then "yes" else "") ] ])
        sb.ToString()

    let csv (groups: GroupResult list) =
        let fields = groups |> List.collect (fun g -> g.Overrides |> List.map fst) |> List.distinct
        let escape (s: string) = if s.IndexOfAny([| ','; '"'; '\n' |]) >= 0 then "\"" + s.Replace("\"", "\"\"") + "\"" else s
        let sb = StringBuilder()
        let header =
            [ "group"; "method" ] @ fields @ [ "seeds"; "missing" ]
            @ (quantities |> List.collect (fun (k, _) -> [ k + "_mean"; k + "_std"; k + "_ci95" ]))
        sb.Append(String.Join(",", header)).Append('\n') |> ignore
        for g in groups do
            let values = g.Overrides |> Map.ofList
            let cells =
                [ g.Group; g.Method ]
                @ (fields |> List.map (fun f -> values.TryFind f |> Option.map Definition.nameText |> Option.defaultValue ""))
                @ [ String.Join(" ", g.Seeds); string g.Missing.Length ]
                @ (g.Statistics |> List.collect (fun s -> [ exact s.Mean; exact s.Std; exact s.Ci95 ]))
            sb.Append(String.Join(",", cells |> List.map escape)).Append('\n') |> ignore
        sb.ToString()

    let private jsonNumber (x: float) : JsonNode = if Double.IsNaN x then null else JsonValue.Create x

    let json' (groups: GroupResult list) (results: PointResult list) (states: (string * string * string) list) =
        let root = JsonObject()
        let groupsNode = JsonArray()
        for g in groups do
            let o = JsonObject()
            o["group"] <- JsonValue.Create g.Group
            o["method"] <- JsonValue.Create g.Method
            let overrides = JsonObject()
            for f, v in g.Overrides do overrides[f] <- JsonNode.Parse v
            o["overrides"] <- overrides
            o["seeds"] <- JsonArray(g.Seeds |> List.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofList)
            o["missing"] <- JsonArray(g.Missing |> List.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofList)
            for (key, _), s in List.zip quantities g.Statistics do
                let m = JsonObject()
                m["mean"] <- jsonNumber s.Mean
                m["std"] <- jsonNumber s.Std
                m["ci95"] <- jsonNumber s.Ci95
                m["n"] <- JsonValue.Create s.Count
                o[key] <- m
            groupsNode.Add o
        root["groups"] <- groupsNode
        let byName = results |> List.map (fun r -> r.Point.Name, r) |> Map.ofList
        let pointsNode = JsonArray()
        for name, state, detail in states do
            let o = JsonObject()
            o["point"] <- JsonValue.Create name
            o["state"] <- JsonValue.Create state
            if detail <> "" then o["detail"] <- JsonValue.Create detail
            match byName.TryFind name with
            | Some r ->
                o["method"] <- JsonValue.Create r.Point.Method
                o["seed"] <- JsonValue.Create r.Point.Seed
                for (key, _), v in List.zip quantities r.Values do o[key] <- jsonNumber v
            | None -> ()
            pointsNode.Add o
        root["points"] <- pointsNode
        root.ToJsonString(JsonSerializerOptions(WriteIndented = true))

    let private writeText (path: string) (text: string) =
        Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text, UTF8Encoding false))

    /// Reads every finished point and writes DIR/results.{md,csv,json} and, when any point has
    /// finished, DIR/report.html; returns the groups. `states` is (name, state, detail) per point.
    /// After a selection stage (DIR/selection.json), results.md and results.json also say which
    /// grid point was chosen and why.
    let write (dir: string) (points: SweepPoint list) (states: (string * string * string) list) =
        let results = points |> List.choose (read dir)
        let groups = aggregate points results
        let selection = json (Layout.selectionFile dir)
        let md = markdown groups results states
        let md =
            match selection with
            | Some s -> md + "\n" + selectionMarkdown s
            | None -> md
        let jsonText =
            match selection with
            | Some s ->
                let root = JsonNode.Parse(json' groups results states)
                root["selection"] <- JsonNode.Parse(s.GetRawText())
                root.ToJsonString(JsonSerializerOptions(WriteIndented = true))
            | None -> json' groups results states
        writeText (Path.Combine(dir, "results.md")) md
        writeText (Path.Combine(dir, "results.csv")) (csv groups)
        writeText (Path.Combine(dir, "results.json")) (jsonText + "\n")
        if not results.IsEmpty then Report.writeComparison (Path.Combine(dir, "report.html")) (results |> List.map _.Summary)
        groups
