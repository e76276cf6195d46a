namespace Prompting.Demo

open System
open System.Globalization
open System.IO
open System.Text
open Plotly.NET
open Prompting
open Prompting.Pretrain

/// The demo's comparison: a terminal table and one self-contained HTML page (plotly.js inlined).
module DemoReport =
    let private invariant = CultureInfo.InvariantCulture
    let private f1 (x: float) = x.ToString("F1", invariant)
    let private f2 (x: float) = x.ToString("F2", invariant)

    let header = [ "method"; "A_N (%)"; "F_N"; "train time (s)" ]

    let rows (runs: RunSummary list) =
        [ for r in runs ->
              let m = r.Metrics.ClassIncremental
              [ r.Method; f2 m.FinalAverageAccuracy; f2 m.Forgetting; f1 r.TrainSeconds ] ]

    /// The method with the highest A_N other than the baseline, with the baseline's summary.
    let best (baseline: string) (runs: RunSummary list) =
        let others = runs |> List.filter (fun r -> r.Method <> baseline)
        match others, runs |> List.tryFind (fun r -> r.Method = baseline) with
        | [], _
        | _, None -> None
        | _, Some b -> Some(others |> List.maxBy _.Metrics.ClassIncremental.FinalAverageAccuracy, b)

    /// One line comparing the best prompt method with the baseline.
    let verdict (baseline: string) (runs: RunSummary list) =
        match best baseline runs with
        | None -> sprintf "no comparison: the runs need %s and at least one other method" baseline
        | Some(top, b) ->
            let a, ab = top.Metrics.ClassIncremental.FinalAverageAccuracy, b.Metrics.ClassIncremental.FinalAverageAccuracy
            let f, fb = top.Metrics.ClassIncremental.Forgetting, b.Metrics.ClassIncremental.Forgetting
            sprintf "%s keeps what %s forgets: A_N %s%% vs %s%% (%+.1f points), F_N %s vs %s"
                top.Method baseline (f2 a) (f2 ab) (a - ab) (f2 f) (f2 fb)

    /// A_i after each task, one line per method.
    let accuracyCurves (runs: RunSummary list) =
        let tasks = runs |> List.map _.Metrics.Tasks |> List.max
        [ for r in runs ->
              let m = r.Metrics.ClassIncremental
              Chart.Line(x = [ 1 .. m.AverageAfterTask.Length ], y = m.AverageAfterTask, Name = r.Method, ShowMarkers = true)
              |> Chart.withLineStyle (Width = 3.0) ]
        |> Chart.combine
        |> Chart.withXAxis (LayoutObjects.LinearAxis.init (DTick = 1, Range = StyleParam.Range.MinMax(0.8, float tasks + 0.2)))
        |> Chart.withYAxis (LayoutObjects.LinearAxis.init (Range = StyleParam.Range.MinMax(0.0, 100.0)))
        |> Report.styled "Accuracy on every class seen so far, after each task (A_i)" "after training task" "accuracy (%)"

    /// Each task's accuracy after the last task, one bar per method.
    let finalPerTask (taskClasses: string list list) (runs: RunSummary list) =
        let label j =
            match List.tryItem j taskClasses with
            | Some names -> sprintf "task %d: %s" (j + 1) (String.Join(" / ", names))
            | None -> sprintf "task %d" (j + 1)
        [ for r in runs ->
              let m = r.Metrics.ClassIncremental
              let last = m.Matrix[m.Matrix.Length - 1]
              Chart.Column(values = last, Keys = [ for j in 0 .. last.Length - 1 -> label j ], Name = r.Method) ]
        |> Chart.combine
        |> Chart.withLayoutStyle (BarMode = StyleParam.BarMode.Group)
        |> Chart.withYAxis (LayoutObjects.LinearAxis.init (Range = StyleParam.Range.MinMax(0.0, 100.0)))
        |> Report.styled "Accuracy on each task after the last one" "task (its classes)" "accuracy (%)"

    let private backboneRows (s: DemoSettings) (backbone: CachedBackbone) =
        let c = s.Backbone
        let e = c.Encoder
        [ "objective", "MAE: hide a random share of patches, reconstruct them from the rest (labels never read)"
          "encoder", sprintf "ViT, %d px, patch %d, width %d, %d blocks, %d heads" e.ImageSize e.PatchSize e.Width e.Depth e.Heads
          "decoder", sprintf "width %d, %d blocks (discarded after pretraining)" c.DecoderWidth c.DecoderDepth
          "mask ratio", f2 c.MaskRatio
          "pretraining",
          sprintf "%d epochs over %s Fashion-MNIST training images (no labels), batch %d, AdamW peak lr %g"
              c.Epochs (match c.Images with Some n -> string n | None -> "all") c.BatchSize c.LearningRate
          "checkpoint", backbone.Path
          "cache", (if backbone.Reused then "reused from an earlier demo" else "pretrained by this demo") ]

    let html (s: DemoSettings) (backbone: CachedBackbone) (taskClasses: string list list) (runs: RunSummary list) =
        let body = StringBuilder()
        let add (text: string) = body.Append(text).Append('\n') |> ignore
        add "<h1>Prompting demo: continual learning without rehearsal</h1>"
        add (
            sprintf "<p>Class-incremental Fashion-MNIST: %d tasks of %d classes, learned one after another; %d training and %d test images per class. After each task the model is tested on every class seen so far, and no earlier image is ever replayed. The backbone is a small ViT pretrained here without labels. Generated %s UTC.</p>"
                s.Tasks (10 / s.Tasks) s.TrainPerClass s.TestPerClass (DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", invariant))
        )
        add (sprintf "<p><b>%s</b></p>" (Report.escape (verdict s.Baseline runs)))
        add "<h2>Results</h2>"
        let extra (r: RunSummary) = [ f2 r.Metrics.ClassIncremental.AverageIncrementalAccuracy; Report.formatCount r.TrainableParameters ]
        add (Report.gridTable (header @ [ "CAA (%)"; "trainable parameters" ]) (List.map2 (fun r row -> row @ extra r) runs (rows runs)))
        add "<p class=\"muted\">A_N: mean accuracy over all tasks after the last one. F_N: mean drop of each earlier task from its best accuracy. CAA: mean of the accuracies after each task.</p>"
        add "<h2>Accuracy after each task</h2>"
        add (Report.chartHtml (accuracyCurves runs))
        add "<h2>Final accuracy per task</h2>"
        add (Report.chartHtml (finalPerTask taskClasses runs))
        add "<h2>Accuracy matrices</h2>"
        for r in runs do
            add (Report.chartHtml (Report.accuracyMatrixChart (sprintf "%s: accuracy on task j after task i (%%)" r.Method) r.Metrics.ClassIncremental))
        add "<h2>Backbone</h2>"
        add (Report.keyValueTable (backboneRows s backbone))
        Report.page "Prompting demo" (body.ToString())

    let write (path: string) (s: DemoSettings) (backbone: CachedBackbone) (taskClasses: string list list) (runs: RunSummary list) =
        let text = html s backbone taskClasses runs
        Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text, UTF8Encoding false))
