/// HTML run and comparison reports, mean ± std over seeds, terminal tables.
module Prompting.Tests.Report

open System.IO
open System.Text.RegularExpressions
open Expecto
open Prompting
open Prompting.Tests.TestSupport

let private evaluation c t = { ClassIncremental = c; TaskIncremental = t; PromptChoice = None }

/// The 3-task run of Metrics.Tests: A_N 79.33, CAA 85.94, F_N 13.50, CODA 5.75.
let private threeTasks =
    Metrics.ofEvaluations
        [| [| evaluation 90.0 95.0 |]
           [| evaluation 92.0 94.0; evaluation 85.0 96.0 |]
           [| evaluation 70.0 90.0; evaluation 80.0 93.0; evaluation 88.0 97.0 |] |]

let private summary =
    { Method = "coda-prompt"
      Seed = 7
      Metrics = threeTasks
      TrainSeconds = 3725.0
      PeakMemoryBytes = 3L * 1024L * 1024L * 1024L / 2L
      TrainableParameters = 3_840_000L
      Checkpoint = "vit_base_patch16_224.augreg_in21k.safetensors"
      CheckpointSha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      ConfigJson = """{"method":{"name":"coda-prompt","components":100},"tasks":3,"seed":7}"""
      Settings = "method coda-prompt; image size 224; seed 7"
      TaskClasses = [ [ "cat"; "dog" ]; [ "ship"; "truck" ]; [ "frog"; "<horse>" ] ]
      EpochLosses = [ [ 2.5; 1.25 ]; [ 0.5 ]; [ nan ] ]
      Warnings = [ "tasks 1-3: 1 optimiser step per task" ] }

/// A 2-task run with the given A_N and F_N: R = [[90], [90 − F, 2·A − (90 − F)]].
let private twoTasks (methodName: string) (seed: int) (finalAverage: float) (forgetting: float) (seconds: float) =
    let first = 90.0 - forgetting
    { summary with
        Method = methodName
        Seed = seed
        TrainSeconds = seconds
        Metrics =
            Metrics.ofEvaluations
                [| [| evaluation 90.0 90.0 |]; [| evaluation first first; evaluation (2.0 * finalAverage - first) 90.0 |] |] }

// l2p:  A_N 80, 82, 84 → 82 ± 2;   F_N 5, 6, 7 → 6 ± 1;   time 100, 110, 120 → 110 ± 10
// coda: A_N 85, 85, 88 → 86 ± √3;  F_N 2, 4, 6 → 4 ± 2;   time 200, 260, 230 → 230 ± 30
let private runs =
    [ twoTasks "l2p" 1 80.0 5.0 100.0
      twoTasks "coda-prompt" 1 85.0 2.0 200.0
      twoTasks "l2p" 2 82.0 6.0 110.0
      twoTasks "coda-prompt" 2 85.0 4.0 260.0
      twoTasks "l2p" 3 84.0 7.0 120.0
      twoTasks "coda-prompt" 3 88.0 6.0 230.0 ]

let private scriptSources (html: string) =
    Regex.Matches(html, "<script\\b[^>]*>", RegexOptions.IgnoreCase)
    |> Seq.map _.Value
    |> Seq.filter (fun tag -> Regex.IsMatch(tag, "\\bsrc\\s*=", RegexOptions.IgnoreCase))
    |> List.ofSeq

/// Like Expect.stringContains, without printing a megabyte page on failure.
let private contains (html: string) (fragment: string) (what: string) =
    Expect.isTrue (html.Contains fragment) (sprintf "%s: the page lacks %A" what fragment)

let private expectSelfContained (html: string) =
    Expect.equal (scriptSources html) [] "no <script src=...>"
    Expect.isFalse (Regex.IsMatch(html, "<script[^>]*src\\s*=\\s*[\"']?https?:", RegexOptions.IgnoreCase)) "no external script URL"
    contains html ("plotly.js v" + Globals.PLOTLYJS_VERSION) "plotly.js header inline"
    contains html (Report.plotlyJs ()) "the whole plotly.js bundle inline"
    Expect.isGreaterThan html.Length 1_000_000 "the bundle is megabytes"

[<Tests>]
let tests =
    testList
        "metrics.report"
        [ testCase "run report: one self-contained file with plots, summary and configuration"
          <| fun () ->
              use dir = new TempDir()
              let path = dir.File "reports/run.html"
              Report.writeRun path summary
              Expect.isTrue (File.Exists path) "report written"
              let html = File.ReadAllText path
              expectSelfContained html
              for title in [ Report.MatrixTitle; Report.CurveTitle; Report.ForgettingTitle ] do
                  contains html title (sprintf "plot '%s'" title)
                  contains html (sprintf "\"title\":{\"text\":\"%s" title) (sprintf "plot '%s' is a Plotly title" title)
              Expect.equal (Regex.Matches(html, "Plotly\\.newPlot\\('").Count) 3 "three plots"
              for number in [ "79.33"; "85.94"; "13.50"; "5.75"; "93.33"; "4.00" ] do
                  contains html number (sprintf "summary number %s" number)
              contains html "coda-prompt" "method"
              contains html "01:02:05" "train time"
              contains html "1.50 GiB" "peak memory"
              contains html "3,840,000" "trainable parameters"
              contains html summary.Checkpoint "checkpoint"
              contains html summary.CheckpointSha256 "checkpoint hash"
              contains html "  &quot;method&quot;: {" "configuration pretty-printed"
              contains html "&quot;components&quot;: 100" "configuration content"

          testCase "heatmap cells above the diagonal are empty"
          <| fun () ->
              let chart = Report.accuracyMatrixChart "m" threeTasks.ClassIncremental
              let json = Plotly.NET.GenericChart.toJson chart
              Expect.stringContains json "[90.0,\"NaN\",\"NaN\"]" "first row"
              Expect.stringContains json "\"text\":\"88.00\"" "annotation"

          testCase "single-task run report has no forgetting plot"
          <| fun () ->
              let one = { summary with Metrics = Metrics.ofEvaluations [| [| evaluation 70.0 70.0 |] |] }
              let html = Report.runHtml one
              expectSelfContained html
              contains html "nothing to forget" "note"
              Expect.equal (Regex.Matches(html, "Plotly\\.newPlot\\('").Count) 2 "two plots"

          testCase "mean ± sample std over seeds per method"
          <| fun () ->
              let c = Report.compare runs
              Expect.equal (c |> List.map _.Method) [ "l2p"; "coda-prompt" ] "methods in order of appearance"
              Expect.equal (c |> List.map _.Seeds) [ [| 1; 2; 3 |]; [| 1; 2; 3 |] ] "seeds"
              let l2p, coda = c[0], c[1]
              let close (m: MeanStd) mean std what =
                  Expect.floatClose Accuracy.veryHigh m.Mean mean (what + " mean")
                  Expect.floatClose Accuracy.veryHigh m.Std std (what + " std")
                  Expect.equal m.Count 3 (what + " count")
              close l2p.FinalAverageAccuracy 82.0 2.0 "l2p A_N"
              close l2p.Forgetting 6.0 1.0 "l2p F_N"
              close l2p.TrainSeconds 110.0 10.0 "l2p time"
              close coda.FinalAverageAccuracy 86.0 (sqrt 3.0) "coda A_N"
              close coda.Forgetting 4.0 2.0 "coda F_N"
              close coda.TrainSeconds 230.0 30.0 "coda time"
              Expect.equal (Report.meanStd [ 5.0 ]) { Mean = 5.0; Std = 0.0; Count = 1 } "one seed"

          testCase "comparison table as aligned Markdown"
          <| fun () ->
              let text = Report.comparisonText (Report.compare runs)
              let lines = text.TrimEnd('\n').Split('\n')
              Expect.equal lines.Length 4 "header, rule, two methods"
              Expect.stringStarts lines[0] "| method      | seeds |" "header"
              Expect.stringStarts lines[1] "|-------------|------:|" "rule"
              Expect.stringContains lines[2] "| l2p         |     3 | 82.00 ± 2.00 |" "l2p A_N"
              Expect.stringContains lines[2] "6.00 ± 1.00" "l2p F_N"
              Expect.stringContains lines[2] "110.0 ± 10.0" "l2p time"
              Expect.stringContains lines[3] "86.00 ± 1.73" "coda A_N"
              Expect.stringContains lines[3] "4.00 ± 2.00" "coda F_N"
              Expect.stringContains lines[3] "230.0 ± 30.0" "coda time"
              Expect.equal (lines |> Array.map _.Length |> Array.distinct).Length 1 "all lines equally wide"

          testCase "text columns stay left-aligned, numeric ones go right"
          <| fun () ->
              let text = Report.markdownTable [ "name"; "n"; "note" ] [ [ "a"; "1"; "x" ]; [ "bb"; "22"; "7 words" ] ]
              let expected = "| name |   n | note    |\n|------|----:|---------|\n| a    |   1 | x       |\n| bb   |  22 | 7 words |\n"
              Expect.equal text expected "table"
              let summaryLines = (Report.summaryText summary).TrimEnd('\n').Split('\n')
              Expect.stringStarts summaryLines[2] "| method " "first row"
              Expect.stringContains summaryLines[2] "| coda-prompt " "text value left-aligned"
              let msg = promptingError "ragged" (fun () -> Report.markdownTable [ "a"; "b" ] [ [ "1" ] ])
              expectMessage msg [ "row 0"; "1 cells"; "2 columns" ] "ragged"

          testCase "comparison report: self-contained with table and grouped plot"
          <| fun () ->
              use dir = new TempDir()
              let path = dir.File "compare.html"
              Report.writeComparison path runs
              let html = File.ReadAllText path
              expectSelfContained html
              contains html Report.ComparisonTitle "plot title"
              contains html "\"barmode\":\"group\"" "grouped bars"
              contains html "\"error_y\"" "error bars"
              for cell in [ "82.00 ± 2.00"; "6.00 ± 1.00"; "110.0 ± 10.0"; "86.00 ± 1.73"; "4.00 ± 2.00"; "230.0 ± 30.0" ] do
                  contains html cell (sprintf "table cell %s" cell)

          testCase "run report: the settings line, the warnings, each task's classes and each epoch's loss"
          <| fun () ->
              let html = Report.runHtml summary
              contains html "<p class=\"settings\">method coda-prompt; image size 224; seed 7</p>" "settings line"
              contains html "<li>tasks 1-3: 1 optimiser step per task</li>" "warning"
              contains html "<td>task 3</td><td>frog, &lt;horse&gt;</td>" "classes of task 3, escaped"
              contains html "<td>task 1</td><td>cat, dog</td>" "classes of task 1"
              // Task 1 trained two epochs, task 2 one; task 3 took no gradient steps.
              contains html "<td>task 1</td><td class=\"num\">2.5000</td><td class=\"num\">1.2500</td>" "losses of task 1"
              contains html "<td>task 2</td><td class=\"num\">0.5000</td><td></td>" "task 2: one epoch"
              contains html "<td>task 3</td><td>no steps</td>" "no steps"
              let printed = Report.summaryText summary
              Expect.stringContains printed "| warning " "the printed summary lists the warnings"
              let quiet = Report.runHtml { summary with Warnings = [] }
              Expect.isFalse (quiet.Contains "class=\"warnings\"") "no warnings box without warnings"

          testCase "comparison: one seed shows its value alone; several show mean ± std"
          <| fun () ->
              Expect.equal (Report.formatMeanStd 2 (Report.meanStd [ 80.0 ])) "80.00" "n = 1"
              Expect.equal (Report.formatMeanStd 2 (Report.meanStd [ 80.0; 84.0 ])) "82.00 ± 2.83" "n = 2: std √8"
              let single = [ twoTasks "l2p" 1 80.0 5.0 100.0; twoTasks "coda-prompt" 1 85.0 2.0 200.0 ]
              let html = Report.comparisonHtml single
              Expect.isFalse (html.Contains "± 0.00") "no ± 0.00 for single seeds"
              contains html "n = 1" "says what one seed means"
              let text = Report.comparisonText (Report.compare single)
              Expect.stringContains text "|   80.00 |" "terminal table too"
              Expect.isFalse (text.Contains "±") "no ± in it"

          testCase "comparison: only the configuration fields that differ, per run"
          <| fun () ->
              let configs =
                  [ """{"Config":{"Method":{"Name":"l2p\u002B\u002B","Recipe":{"Epochs":5,"LearningRate":0.001}},"Seed":0,"ImageSize":64,"Groups":[{"Length":5}]}}"""
                    """{"Config":{"Method":{"Name":"l2p","Recipe":{"Epochs":5,"LearningRate":0.01}},"Seed":1,"ImageSize":64,"Groups":[{"Length":8}]}}"""
                    """{"Config":{"Method":{"Name":"l2p","Recipe":{"Epochs":5,"LearningRate":0.001}},"Seed":2,"ImageSize":64,"Groups":[{"Length":5}],"Extra":true}}""" ]
              Expect.equal
                  (Report.configDifferences configs)
                  [ "Config.Method.Name", [ "\"l2p++\""; "\"l2p\""; "\"l2p\"" ]
                    "Config.Method.Recipe.LearningRate", [ "0.001"; "0.01"; "0.001" ]
                    "Config.Seed", [ "0"; "1"; "2" ]
                    "Config.Groups[0].Length", [ "5"; "8"; "5" ]
                    "Config.Extra", [ "(absent)"; "(absent)"; "true" ] ]
                  "the differing leaves, nothing shared"
              Expect.isEmpty (Report.configDifferences [ configs[0]; configs[0] ]) "identical runs"
              let a = { twoTasks "l2p" 1 80.0 5.0 100.0 with ConfigJson = configs[0] }
              let b = { twoTasks "l2p" 2 82.0 5.0 100.0 with ConfigJson = configs[1] }
              let html = Report.comparisonHtml [ a; b ]
              contains html "<th>field</th><th>values (runs)</th>" "two columns"
              contains html "<td>Method.<wbr>Recipe.<wbr>LearningRate</td><td>0.001 (run 1) · 0.01 (run 2)</td>" "the rate row, as RunConfig's path"
              let three = Report.comparisonHtml [ a; b; { a with Seed = 3 } ]
              contains three "<td>Seed</td><td>0 (runs 1, 3) · 1 (run 2)</td>" "runs sharing a value named together"
              contains three "<tr><td class=\"num\">3</td><td>l2p</td><td class=\"num\">3</td>" "the runs table numbers the runs"
              Expect.isFalse (html.Contains "<td>ImageSize</td>") "a shared field is not listed"
              contains (Report.comparisonHtml [ a; a ]) "The runs have the same configuration." "identical runs said"

          testCase "formatting helpers"
          <| fun () ->
              Expect.equal (Report.formatDuration 3725.0) "01:02:05" "duration"
              Expect.equal (Report.formatDuration 90061.0) "1d 01:01:01" "days"
              Expect.equal (Report.formatBytes 512L) "512 B" "bytes"
              Expect.equal (Report.formatBytes 1536L) "1.50 KiB" "KiB"
              Expect.equal (Report.formatCount 345_600L) "345,600 (345.60 K)" "K"
              Expect.equal (Report.prettyJson "not json") "not json" "unparsable config kept" ]
