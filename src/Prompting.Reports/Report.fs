namespace Prompting

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open Plotly.NET
open Spectre.Console

/// Mean and sample standard deviation (n − 1; 0 for a single value) over seeds.
type MeanStd = { Mean: float; Std: float; Count: int }

/// One method's results over its seeds.
type MethodComparison =
    { Method: string
      Seeds: int[]
      FinalAverageAccuracy: MeanStd
      AverageIncrementalAccuracy: MeanStd
      Forgetting: MeanStd
      CodaForgetting: MeanStd
      TrainSeconds: MeanStd }

/// Self-contained HTML reports (plotly.js inlined, viewable offline) and terminal tables.
module Report =
    let private invariant = CultureInfo.InvariantCulture
    let private f2 (x: float) = x.ToString("F2", invariant)

    /// hh:mm:ss (with days when needed).
    let formatDuration (seconds: float) =
        if Double.IsNaN seconds || seconds < 0.0 then "–"
        else
            let t = TimeSpan.FromSeconds(Math.Round seconds)
            if t.Days > 0 then sprintf "%dd %02d:%02d:%02d" t.Days t.Hours t.Minutes t.Seconds
            else sprintf "%02d:%02d:%02d" t.Hours t.Minutes t.Seconds

    /// Bytes in binary units: 1536 → "1.50 KiB".
    let formatBytes (bytes: int64) =
        let units = [| "B"; "KiB"; "MiB"; "GiB"; "TiB" |]
        let mutable v = float bytes
        let mutable u = 0
        while abs v >= 1024.0 && u < units.Length - 1 do
            v <- v / 1024.0
            u <- u + 1
        if u = 0 then sprintf "%d B" bytes else sprintf "%s %s" (v.ToString("F2", invariant)) units[u]

    /// 3840000 → "3,840,000 (3.84 M)".
    let formatCount (n: int64) =
        let grouped = n.ToString("N0", invariant)
        if abs n >= 1_000_000L then sprintf "%s (%s M)" grouped ((float n / 1e6).ToString("F2", invariant))
        elif abs n >= 1_000L then sprintf "%s (%s K)" grouped ((float n / 1e3).ToString("F2", invariant))
        else grouped

    /// Whether a cell reads as a number ("85.50 ± 1.23", "3,840,000", "01:02:05"): right-aligned.
    let private numeric (cell: string) =
        cell.Length > 0 && (Char.IsDigit cell[0] || ((cell[0] = '-' || cell[0] = '+') && cell.Length > 1 && Char.IsDigit cell[1]))

    // ---- plotly.js ----

    /// plotly.js as bundled inside Plotly.NET (the same file its PlotlyJSReference.Full inlines).
    let private plotlyBundle =
        lazy
            (let assembly = typeof<GenericChart>.Assembly
             let name = sprintf "Plotly.NET.plotly-%s.min.js" Globals.PLOTLYJS_VERSION
             use stream = assembly.GetManifestResourceStream name
             if isNull stream then Errors.fail "Plotly.NET %O: embedded plotly.js resource '%s' not found" (assembly.GetName().Version) name
             use reader = new StreamReader(stream)
             reader.ReadToEnd())

    /// The plotly.js source to inline into a page.
    let plotlyJs () = plotlyBundle.Force()

    // ---- charts ----

    let private taskLabel (j: int) = sprintf "task %d" (j + 1)

    let styled (title: string) (xTitle: string) (yTitle: string) (chart: GenericChart) =
        chart
        |> Chart.withTitle title
        |> Chart.withXAxisStyle (TitleText = xTitle)
        |> Chart.withYAxisStyle (TitleText = yTitle)
        |> Chart.withSize (900, 520)

    /// Heatmap of R[i][j] with each value written in its cell (white on the dark half of the
    /// colour scale); cells above the diagonal are left empty.
    let accuracyMatrixChart (title: string) (m: AccuracyMetrics) =
        let tasks = m.Matrix.Length
        let columns = Array.init tasks taskLabel
        let rows = Array.init tasks (fun i -> sprintf "after task %d" (i + 1))
        let z = Array.init tasks (fun i -> Array.init tasks (fun j -> if j <= i then m.Matrix[i][j] else nan))
        let present = m.Matrix |> Array.concat |> Array.filter (Double.IsNaN >> not)
        let middle = if present.Length = 0 then 0.0 else (Array.min present + Array.max present) / 2.0
        let annotations =
            [ for i in 0 .. tasks - 1 do
                  for j in 0 .. i do
                      let v = m.Matrix[i][j]
                      let color = if v < middle then Color.fromString "white" else Color.fromString "black"
                      LayoutObjects.Annotation.init (
                          X = columns[j],
                          Y = rows[i],
                          Text = f2 v,
                          ShowArrow = false,
                          Font = Font.init (Color = color, Size = (if tasks > 12 then 8.0 else 11.0))
                      ) ]
        let side = max 420 (min 900 (160 + 60 * tasks))
        Chart.Heatmap(zData = z, colNames = columns, rowNames = rows, ColorScale = StyleParam.Colorscale.Viridis, ReverseYAxis = true)
        |> Chart.withAnnotations annotations
        |> styled title "evaluated task" "after training"
        |> Chart.withSize (side + 120, side)

    /// A_i after each task (bold) and each task's accuracy from the step it was learned on.
    let accuracyCurveChart (title: string) (m: AccuracyMetrics) =
        let tasks = m.Matrix.Length
        let average =
            Chart.Line(x = [ 1..tasks ], y = m.AverageAfterTask, Name = "average A_i", ShowMarkers = true)
            |> Chart.withLineStyle (Width = 4.0)
        let perTask =
            [ for j in 0 .. tasks - 1 ->
                  Chart.Line(x = [ j + 1 .. tasks ], y = [ for i in j .. tasks - 1 -> m.Matrix[i][j] ], Name = taskLabel j, ShowMarkers = true)
                  |> Chart.withLineStyle (Dash = StyleParam.DrawingStyle.Dash, Width = 1.5) ]
        Chart.combine (average :: perTask)
        |> Chart.withXAxis (LayoutObjects.LinearAxis.init (DTick = 1))
        |> styled title "after training task" "accuracy (%)"

    /// max_{i<N} R[i][j] − R[N][j] for each task j < N.
    let forgettingChart (title: string) (m: AccuracyMetrics) =
        let keys = Array.init m.ForgettingPerTask.Length taskLabel
        Chart.Column(values = m.ForgettingPerTask, Keys = keys, Name = "forgetting", MultiText = (m.ForgettingPerTask |> Array.map f2))
        |> styled title "task" "forgetting (points)"

    // ---- HTML ----

    /// Escapes the HTML-special characters only; other characters stay as they are (UTF-8 page).
    let escape (s: string) =
        if isNull s then ""
        else s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;").Replace("'", "&#39;")

    let private css =
        """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;max-width:100%}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f3f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f9;border:1px solid #e1e1e8;padding:12px;overflow:auto;font-size:0.85em}
.muted{color:#777;font-size:0.9em}code{font-size:0.9em}.wide{overflow-x:auto}
.settings{font-family:ui-monospace,monospace;font-size:0.9em;background:#f7f7f9;padding:6px 10px;border:1px solid #e1e1e8}
table.differences td:first-child{overflow-wrap:normal;min-width:12em}
.warnings{background:#fff4e5;border:1px solid #f0b35a;padding:4px 16px;margin:12px 0}.warnings h2{border:none;margin-top:8px}"""

    let page (title: string) (body: string) =
        let sb = StringBuilder()
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n") |> ignore
        sb.Append("<title>").Append(escape title).Append("</title>\n") |> ignore
        sb.Append("<style>\n").Append(css).Append("\n</style>\n") |> ignore
        sb.Append("<script type=\"text/javascript\">\n").Append(plotlyJs ()).Append("\n</script>\n") |> ignore
        sb.Append("</head>\n<body>\n").Append(body).Append("\n</body>\n</html>\n") |> ignore
        sb.ToString()

    let chartHtml (chart: GenericChart) = GenericChart.toChartHTML chart

    let keyValueTable (rows: (string * string) list) =
        let sb = StringBuilder("<table>\n")
        for k, v in rows do
            sb.Append("<tr><th>").Append(escape k).Append("</th><td>").Append(escape v).Append("</td></tr>\n") |> ignore
        sb.Append("</table>\n").ToString()

    let gridTable (header: string list) (rows: string list list) =
        let sb = StringBuilder("<div class=\"wide\"><table>\n<tr>")
        for h in header do sb.Append("<th>").Append(escape h).Append("</th>") |> ignore
        sb.Append("</tr>\n") |> ignore
        for row in rows do
            sb.Append("<tr>") |> ignore
            for c in row do
                sb.Append(if numeric c then "<td class=\"num\">" else "<td>").Append(escape c).Append("</td>") |> ignore
            sb.Append("</tr>\n") |> ignore
        sb.Append("</table></div>\n").ToString()

    /// The configuration JSON indented; the text as given when it does not parse.
    let prettyJson (json: string) =
        if String.IsNullOrWhiteSpace json then ""
        else
            try
                use doc = JsonDocument.Parse json
                JsonSerializer.Serialize(doc.RootElement, JsonSerializerOptions(WriteIndented = true))
            with :? JsonException -> json

    /// The summary numbers of one run, as (label, value) rows.
    let summaryRows (run: RunSummary) =
        let m = run.Metrics
        [ "method", run.Method
          "seed", string run.Seed
          "tasks", string m.Tasks
          "final average accuracy A_N (%)", f2 m.ClassIncremental.FinalAverageAccuracy
          "average incremental accuracy CAA (%)", f2 m.ClassIncremental.AverageIncrementalAccuracy
          "forgetting F_N (L2P/DualPrompt)", f2 m.ClassIncremental.Forgetting
          "forgetting (CODA-Prompt's metric)", f2 m.ClassIncremental.CodaForgetting
          "task-incremental A_N (%)", f2 m.TaskIncremental.FinalAverageAccuracy
          "task-incremental F_N", f2 m.TaskIncremental.Forgetting
          "prompt-choice accuracy (%)", (match m.PromptChoiceAccuracy with Some p -> f2 p | None -> "–")
          "train time", sprintf "%s (%s s)" (formatDuration run.TrainSeconds) (run.TrainSeconds.ToString("F1", invariant))
          "peak memory", formatBytes run.PeakMemoryBytes
          "trainable parameters", formatCount run.TrainableParameters
          "checkpoint", run.Checkpoint
          "checkpoint SHA-256", run.CheckpointSha256 ]
        @ [ for w in run.Warnings -> "warning", w ]

    /// Title of the accuracy-matrix plot.
    [<Literal>]
    let MatrixTitle = "Accuracy matrix (class-incremental, %)"

    /// Title of the accuracy-curve plot.
    [<Literal>]
    let CurveTitle = "Accuracy after each task"

    /// Title of the per-task forgetting plot.
    [<Literal>]
    let ForgettingTitle = "Forgetting per task"

    /// The HTML report of one run.
    let runHtml (run: RunSummary) =
        let m = run.Metrics.ClassIncremental
        let body = StringBuilder()
        let add (s: string) = body.Append(s).Append('\n') |> ignore
        add (sprintf "<h1>%s, seed %d</h1>" (escape run.Method) run.Seed)
        add (sprintf "<p class=\"muted\">%d tasks; generated %s UTC</p>" run.Metrics.Tasks (DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", invariant)))
        if run.Settings <> "" then add (sprintf "<p class=\"settings\">%s</p>" (escape run.Settings))
        if not run.Warnings.IsEmpty then
            add "<div class=\"warnings\"><h2>Warnings</h2><ul>"
            for w in run.Warnings do add (sprintf "<li>%s</li>" (escape w))
            add "</ul></div>"
        add "<h2>Summary</h2>"
        add (keyValueTable (summaryRows run))
        if not run.TaskClasses.IsEmpty then
            add "<h2>Classes of each task</h2>"
            add (gridTable [ "task"; "classes (in the run's order)" ]
                    [ for t, names in List.indexed run.TaskClasses -> [ taskLabel t; String.Join(", ", names) ] ])
        if not run.EpochLosses.IsEmpty then
            add "<h2>Training loss per epoch</h2>"
            let epochs = run.EpochLosses |> List.map List.length |> List.max
            let loss (x: float) = if Double.IsNaN x then "no steps" else x.ToString("F4", invariant)
            add (gridTable ("task" :: [ for e in 1 .. epochs -> sprintf "epoch %d" e ])
                    [ for t, losses in List.indexed run.EpochLosses ->
                          taskLabel t :: [ for e in 0 .. epochs - 1 -> if e < losses.Length then loss losses[e] else "" ] ])
        add (sprintf "<h2>%s</h2>" (escape MatrixTitle))
        add (chartHtml (accuracyMatrixChart MatrixTitle m))
        add (sprintf "<h2>%s</h2>" (escape CurveTitle))
        add (chartHtml (accuracyCurveChart CurveTitle m))
        add (sprintf "<h2>%s</h2>" (escape ForgettingTitle))
        if m.ForgettingPerTask.Length = 0 then add "<p class=\"muted\">A single task: nothing to forget.</p>"
        else add (chartHtml (forgettingChart (sprintf "%s (F_N = %s)" ForgettingTitle (f2 m.Forgetting)) m))
        add "<h2>Task-incremental accuracy matrix (%)</h2>"
        let t = run.Metrics.TaskIncremental
        add (
            gridTable
                ("after training" :: [ for j in 0 .. t.Matrix.Length - 1 -> taskLabel j ] @ [ "A_i" ])
                [ for i in 0 .. t.Matrix.Length - 1 ->
                      sprintf "after task %d" (i + 1)
                      :: [ for j in 0 .. t.Matrix.Length - 1 -> if j <= i then f2 (t.Matrix[i][j]) else "" ]
                      @ [ f2 (t.AverageAfterTask[i]) ] ]
        )
        add "<h2>Configuration</h2>"
        add (sprintf "<pre>%s</pre>" (escape (prettyJson run.ConfigJson)))
        page (sprintf "%s seed %d: run report" run.Method run.Seed) (body.ToString())

    let private writeHtml (path: string) (html: string) =
        Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, html, UTF8Encoding false))

    /// Writes the HTML report of one run.
    let writeRun (path: string) (run: RunSummary) = writeHtml path (runHtml run)

    // ---- comparison ----

    /// Mean and sample standard deviation (n − 1; 0 for one value).
    let meanStd (values: float seq) =
        let xs = Array.ofSeq values
        if xs.Length = 0 then { Mean = nan; Std = nan; Count = 0 }
        else
            let mean = Array.average xs
            let std =
                if xs.Length = 1 then 0.0
                else sqrt ((xs |> Array.sumBy (fun x -> (x - mean) ** 2.0)) / float (xs.Length - 1))
            { Mean = mean; Std = std; Count = xs.Length }

    /// Groups runs by method (in order of first appearance) and summarises each over its seeds.
    let compare (runs: RunSummary seq) : MethodComparison list =
        runs
        |> List.ofSeq
        |> List.groupBy _.Method
        |> List.map (fun (methodName, rs) ->
            let over (f: RunSummary -> float) = rs |> List.map f |> meanStd
            { Method = methodName
              Seeds = rs |> List.map _.Seed |> Array.ofList
              FinalAverageAccuracy = over _.Metrics.ClassIncremental.FinalAverageAccuracy
              AverageIncrementalAccuracy = over _.Metrics.ClassIncremental.AverageIncrementalAccuracy
              Forgetting = over _.Metrics.ClassIncremental.Forgetting
              CodaForgetting = over _.Metrics.ClassIncremental.CodaForgetting
              TrainSeconds = over _.TrainSeconds })

    /// "85.50 ± 1.23"; a single seed has no spread: just "85.50".
    let formatMeanStd (digits: int) (m: MeanStd) =
        let fmt = "F" + string digits
        if m.Count = 1 then m.Mean.ToString(fmt, invariant)
        else sprintf "%s ± %s" (m.Mean.ToString(fmt, invariant)) (m.Std.ToString(fmt, invariant))

    /// The leaves of a configuration JSON as (path, compact value): objects and arrays of objects
    /// are walked, other arrays and values are leaves.
    let configLeaves (json: string) : (string * string) list =
        let rec walk (path: string) (e: JsonElement) =
            let child (name: string) = if path = "" then name else path + "." + name
            match e.ValueKind with
            | JsonValueKind.Object -> [ for p in e.EnumerateObject() do yield! walk (child p.Name) p.Value ]
            | JsonValueKind.Array when e.EnumerateArray() |> Seq.exists (fun x -> x.ValueKind = JsonValueKind.Object) ->
                [ for i, x in Seq.indexed (e.EnumerateArray()) do yield! walk (sprintf "%s[%d]" path i) x ]
            // The text itself, not its JSON escapes (l2p++, not l2p\u002B\u002B).
            | JsonValueKind.String -> [ path, "\"" + e.GetString() + "\"" ]
            | _ -> [ path, e.GetRawText() ]
        if String.IsNullOrWhiteSpace json then []
        else
            try
                use doc = JsonDocument.Parse json
                walk "" doc.RootElement
            with :? JsonException -> []

    /// The configuration fields whose values are not the same in every run: (path, value per run;
    /// "(absent)" where a run lacks the field). Paths in first appearance order.
    let configDifferences (configs: string list) : (string * string list) list =
        let maps = configs |> List.map (configLeaves >> Map.ofList)
        let paths = configs |> List.collect (configLeaves >> List.map fst) |> List.distinct
        [ for path in paths do
              let values = maps |> List.map (fun m -> defaultArg (Map.tryFind path m) "(absent)")
              if List.distinct values |> List.length > 1 then yield path, values ]

    let private comparisonHeader =
        [ "method"; "seeds"; "A_N (%)"; "CAA (%)"; "F_N"; "CODA forgetting"; "train time (s)" ]

    let private comparisonCells (c: MethodComparison) =
        [ c.Method
          string c.Seeds.Length
          formatMeanStd 2 c.FinalAverageAccuracy
          formatMeanStd 2 c.AverageIncrementalAccuracy
          formatMeanStd 2 c.Forgetting
          formatMeanStd 2 c.CodaForgetting
          formatMeanStd 1 c.TrainSeconds ]

    /// Title of the grouped comparison plot.
    [<Literal>]
    let ComparisonTitle = "Methods compared (mean ± std over seeds)"

    /// Grouped bars per method: A_N, CAA, F_N and CODA forgetting, with std error bars.
    let comparisonChart (comparisons: MethodComparison list) =
        let methods = comparisons |> List.map _.Method
        let series (name: string) (pick: MethodComparison -> MeanStd) =
            let values = comparisons |> List.map pick
            Chart.Column(values = (values |> List.map _.Mean), Keys = methods, Name = name)
            |> Chart.withYErrorStyle (Array = (values |> List.map _.Std), Symmetric = true)
        Chart.combine
            [ series "A_N (%)" _.FinalAverageAccuracy
              series "CAA (%)" _.AverageIncrementalAccuracy
              series "F_N" _.Forgetting
              series "CODA forgetting" _.CodaForgetting ]
        |> Chart.withLayoutStyle (BarMode = StyleParam.BarMode.Group)
        |> styled ComparisonTitle "method" "% / points"

    /// The HTML comparison of several runs (methods × seeds).
    let comparisonHtml (runs: RunSummary seq) =
        let runs = List.ofSeq runs
        let comparisons = compare runs
        let body = StringBuilder()
        let add (s: string) = body.Append(s).Append('\n') |> ignore
        add "<h1>Comparison of runs</h1>"
        add (sprintf "<p class=\"muted\">%d runs, %d methods; standard deviations are sample (n − 1) over seeds; a method with n = 1 (one seed) shows its value alone.</p>" runs.Length comparisons.Length)
        add "<h2>Summary</h2>"
        add (gridTable comparisonHeader (comparisons |> List.map comparisonCells))
        add "<h2>Configuration differences</h2>"
        match configDifferences (runs |> List.map _.ConfigJson) with
        | [] -> add "<p class=\"muted\">The runs have the same configuration.</p>"
        | differences ->
            // Values with the runs (numbered as in the table of runs) that have them: two columns
            // whatever the number of runs, so the table keeps to the page.
            let grouped (values: string list) =
                values
                |> List.indexed
                |> List.groupBy snd
                |> List.map (fun (value, runs) -> sprintf "%s (%s)" value (Engine.Warnings.numbered "run" (List.map fst runs)))
                |> String.concat " · "
            add "<p class=\"muted\">Only the fields whose values differ between the runs, as paths of the run configuration (what <code>--config</code> files and sweep grids name); runs numbered as in the table of runs below.</p>"
            let table = StringBuilder("<div class=\"wide\"><table class=\"differences\">\n<tr><th>field</th><th>values (runs)</th></tr>\n")
            for path, values in differences do
                // Config.Method.Recipe.Epochs is RunConfig's Method.Recipe.Epochs; long paths break at their dots.
                let field = if path.StartsWith "Config." then path.Substring 7 else path
                table.Append("<tr><td>").Append((escape field).Replace(".", ".<wbr>")).Append("</td><td>").Append(escape (grouped values)).Append("</td></tr>\n") |> ignore
            add (table.Append("</table></div>").ToString())
        add (sprintf "<h2>%s</h2>" (escape ComparisonTitle))
        add (chartHtml (comparisonChart comparisons))
        add "<h2>Runs</h2>"
        let sha (r: RunSummary) =
            if isNull r.CheckpointSha256 || r.CheckpointSha256.Length <= 12 then r.CheckpointSha256 else r.CheckpointSha256.Substring(0, 12) + "…"
        // One checkpoint for all runs is said once, so the table keeps to the page's width.
        let sharedCheckpoint = runs |> List.map (fun r -> r.Checkpoint, r.CheckpointSha256) |> List.distinct |> List.length = 1
        if sharedCheckpoint && not runs.IsEmpty then
            add (sprintf "<p class=\"muted\">Checkpoint of every run: %s (SHA-256 %s).</p>" (escape runs.Head.Checkpoint) (escape runs.Head.CheckpointSha256))
        add (
            gridTable
                ([ "run"; "method"; "seed"; "A_N (%)"; "CAA (%)"; "F_N"; "CODA forgetting"; "train time"; "peak memory"; "trainable parameters" ]
                 @ (if sharedCheckpoint then [] else [ "checkpoint"; "SHA-256 (start)" ]))
                [ for i, r in List.indexed runs ->
                      let m = r.Metrics.ClassIncremental
                      [ string (i + 1)
                        r.Method
                        string r.Seed
                        f2 m.FinalAverageAccuracy
                        f2 m.AverageIncrementalAccuracy
                        f2 m.Forgetting
                        f2 m.CodaForgetting
                        formatDuration r.TrainSeconds
                        formatBytes r.PeakMemoryBytes
                        formatCount r.TrainableParameters ]
                      @ (if sharedCheckpoint then [] else [ r.Checkpoint; sha r ]) ]
        )
        page "Comparison of runs" (body.ToString())

    /// Writes the HTML comparison of several runs.
    let writeComparison (path: string) (runs: RunSummary seq) = writeHtml path (comparisonHtml runs)

    // ---- terminal ----

    /// Per column: right-aligned when every data cell reads as a number.
    let private rightAligned (columns: int) (rows: string list list) =
        Array.init columns (fun c -> not rows.IsEmpty && rows |> List.forall (fun r -> numeric (List.item c r)))

    /// A Markdown table whose columns are padded to equal width, so it also reads as plain text;
    /// numeric columns are right-aligned.
    let markdownTable (header: string list) (rows: string list list) =
        let columns = header.Length
        rows |> List.iteri (fun i r -> if r.Length <> columns then Errors.fail "table row %d: %d cells for %d columns" i r.Length columns)
        let right = rightAligned columns rows
        let widths =
            Array.init columns (fun c -> header :: rows |> List.map (fun r -> (List.item c r).Length) |> List.max |> max 3)
        let line (cells: string list) =
            let padded = cells |> List.mapi (fun c s -> if right[c] then s.PadLeft widths[c] else s.PadRight widths[c])
            "| " + String.Join(" | ", padded) + " |"
        let rule =
            "|" + String.Join("|", widths |> Array.mapi (fun c w -> if right[c] then String('-', w + 1) + ":" else String('-', w + 2))) + "|"
        String.Join("\n", [ line header; rule ] @ List.map line rows) + "\n"

    /// The comparison as an aligned Markdown table.
    let comparisonText (comparisons: MethodComparison list) =
        markdownTable comparisonHeader (comparisons |> List.map comparisonCells)

    /// One run's summary as an aligned Markdown table.
    let summaryText (run: RunSummary) =
        markdownTable [ "metric"; "value" ] (summaryRows run |> List.map (fun (k, v) -> [ k; v ]))

    let private spectreTable (header: string list) (rows: string list list) =
        let table = Table()
        table.Border <- TableBorder.Rounded
        let right = rightAligned header.Length rows
        header |> List.iteri (fun i h ->
            let column = TableColumn(Markup.Escape h)
            if right[i] then column.RightAligned() |> ignore
            table.AddColumn column |> ignore)
        for row in rows do
            table.AddRow(row |> List.map Markup.Escape |> Array.ofList) |> ignore
        table

    /// Prints a table: a Spectre.Console table on an interactive terminal, the aligned Markdown
    /// text when standard output is redirected.
    let printTable (header: string list) (rows: string list list) =
        if Console.IsOutputRedirected then Console.Out.Write(markdownTable header rows)
        else AnsiConsole.Write(spectreTable header rows)

    /// Prints the comparison of several runs (see printTable).
    let printComparison (comparisons: MethodComparison list) =
        printTable comparisonHeader (comparisons |> List.map comparisonCells)

    /// Prints one run's summary (see printTable).
    let printSummary (run: RunSummary) =
        printTable [ "metric"; "value" ] (summaryRows run |> List.map (fun (k, v) -> [ k; v ]))
