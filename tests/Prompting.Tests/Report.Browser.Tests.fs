/// The comparison report as a person looks at it: rendered by headless Chromium at a laptop's
/// width (1280 px), measured inside the page, with a screenshot kept under out/report-check/.
/// Skipped, saying why, where no Chromium is installed (`apt-get install -y chromium`).
module Prompting.Tests.ReportBrowser

open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions
open Expecto
open Prompting
open Prompting.Engine
open Prompting.Prompts
open Prompting.Tests.Fixtures

/// The width of a typical laptop's browser window.
let private laptopWidth = 1280

let private chromium () =
    let path = defaultArg (Option.ofObj (Environment.GetEnvironmentVariable "PATH")) ""
    [ "chromium"; "chromium-browser"; "google-chrome" ]
    |> List.tryPick (fun name -> path.Split(':') |> Array.map (fun d -> Path.Combine(d, name)) |> Array.tryFind File.Exists)

let private runChromium (exe: string) (args: string list) =
    let common = [ "--headless"; "--no-sandbox"; "--disable-gpu"; "--hide-scrollbars"; "--virtual-time-budget=10000" ]
    let psi = ProcessStartInfo(exe, common @ args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if not (p.WaitForExit 180_000) then
        p.Kill true
        failwith "chromium did not finish in 3 minutes"
    p.ExitCode, out.Result, err.Result

/// Appended to a copy of the report: after load, writes the page's width, its scroll width and
/// each table's right edge (and its scrolling box's widths) into the DOM that --dump-dom prints.
let private measuring =
    """<script>
window.addEventListener('load', function () {
  var rows = [];
  document.querySelectorAll('table').forEach(function (t, i) {
    var box = t.parentElement.classList.contains('wide') ? t.parentElement : t;
    rows.push(i + ':' + Math.ceil(t.getBoundingClientRect().right) + ':' + box.scrollWidth + ':' + box.clientWidth);
  });
  var pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = 'page=' + document.documentElement.clientWidth + ';scroll=' + document.documentElement.scrollWidth + ';tables=' + rows.join('|');
  document.body.appendChild(pre);
});
</script>"""

/// A realistic comparison: four methods × three seeds, real configurations (as config.json holds
/// them), two checkpoints (so the runs table has its checkpoint columns), long names.
let private runs () =
    let evaluation c t = { ClassIncremental = c; TaskIncremental = t; PromptChoice = None }
    let methods = [ Methods.codaPrompt; Methods.dualPromptCoda; Methods.vptDeepPool; Methods.l2pPlusPlus ]
    [ for i, m in List.indexed methods do
          for seed in 0 .. 2 ->
              let checkpoint = if i % 2 = 0 then "vit_base_patch16_224.augreg_in21k_ft_in1k.safetensors" else "ViT-B_16-imagenet21k-pretrained.npz"
              let config =
                  { Method = m; Benchmark = "imagenet-r"; Data = Some "/data/imagenet-r"; Checkpoint = checkpoint; Heads = None; ImageSize = 224
                    Tasks = 10; Scenario = ClassIncremental; Split = Some "coda"; ClassOrder = PythonShuffle seed; TrainPerClass = None
                    TestPerClass = None; Normalisation = Data.UnitRange; Seed = seed; SkipCorrupt = false; Validation = Some 0.1 }
              let recorded: Run.Recorded =
                  { FormatVersion = Run.FormatVersion; Config = config; CheckpointFile = checkpoint; CheckpointSha256 = String('a', 64) }
              let a = 70.0 + float i + float seed
              { Method = m.Name; Seed = seed
                Metrics = Metrics.ofEvaluations [| [| evaluation 90.0 95.0 |]; [| evaluation (a - 5.0) 90.0; evaluation (a + 5.0) 93.0 |] |]
                TrainSeconds = 3600.0 * float (i + 1) + 17.0; PeakMemoryBytes = 12L * 1024L * 1024L * 1024L
                TrainableParameters = 3_840_000L + int64 i; Checkpoint = checkpoint; CheckpointSha256 = String(char (int 'a' + i), 64)
                ConfigJson = Json.serialize recorded; Settings = Experiment.settings recorded; TaskClasses = []; EpochLosses = []; Warnings = [] } ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "report.browser"
        [ test "the comparison report fits a 1280 px window in headless Chromium; screenshot in out/report-check" {
              match chromium () with
              | None -> skiptest "no chromium on PATH (apt-get install -y chromium): the report's width was not checked in a browser"
              | Some exe ->
                  let dir = Path.Combine(root, "out", "report-check")
                  Directory.CreateDirectory dir |> ignore
                  let report = Path.Combine(dir, "comparison.html")
                  Report.writeComparison report (runs ())
                  let html = File.ReadAllText report
                  let measured = Path.Combine(dir, "comparison-measured.html")
                  File.WriteAllText(measured, html.Replace("</body>", measuring + "\n</body>"))
                  let code, dom, err = runChromium exe [ sprintf "--window-size=%d,900" laptopWidth; "--dump-dom"; Uri(measured).AbsoluteUri ]
                  Expect.equal code 0 err
                  let m = Regex.Match(dom, @"page=(\d+);scroll=(\d+);tables=([^<]*)")
                  Expect.isTrue m.Success (sprintf "the page measured itself: %s" (err.Split('\n') |> Array.truncate 5 |> String.concat " "))
                  let page, scroll = int m.Groups[1].Value, int m.Groups[2].Value
                  Expect.equal page laptopWidth "the window's width"
                  Expect.isLessThanOrEqual scroll page "no horizontal scrolling of the page"
                  let tables = m.Groups[3].Value.Split('|') |> Array.map (fun t -> t.Split(':') |> Array.map int)
                  Expect.isGreaterThanOrEqual tables.Length 3 "summary, configuration differences and runs tables"
                  for t in tables do
                      Expect.isLessThanOrEqual t[1] page (sprintf "table %d ends inside the window" t[0])
                      Expect.isLessThanOrEqual t[2] t[3] (sprintf "table %d needs no scrollbar of its own (%d px in %d)" t[0] t[2] t[3])
                  // The screenshot of the report itself, for people to look at.
                  let png = Path.Combine(dir, "comparison.png")
                  if File.Exists png then File.Delete png
                  let code2, _, err2 = runChromium exe [ sprintf "--window-size=%d,2400" laptopWidth; "--screenshot=" + png; Uri(report).AbsoluteUri ]
                  Expect.equal code2 0 err2
                  Expect.isTrue (File.Exists png && FileInfo(png).Length > 10_000L) "a screenshot was written"
          } ]
