// Split CIFAR-10 (5 tasks x 2 classes, class-incremental) with the real pretrained ViT-Ti/16: every
// continual method and the baselines, several seeds, one table (A_N ± std, F_N, train time, peak
// memory, trainable parameters) plus the HTML comparison report. docs/results.md holds its output.
//
//   dotnet fsi scripts/results-cifar10.fsx                # defaults below, ../shared data and weights
//   dotnet fsi scripts/results-cifar10.fsx -- --help
//
// The grid is a sweep definition (`definition` below; the default one is scripts/results-cifar10.sweep.json)
// run by `prompting sweep`: each (method, seed) is its own `prompting run` process in DIR/runs/<method>-s<seed>,
// so that its peak memory is its own; an interrupted sweep continues where it stopped.
#load "Prompting.fsx"

open System
open System.Diagnostics
open System.IO
open Prompting
open Prompting.Engine

let private root = Path.GetFullPath(Path.Combine(__SOURCE_DIRECTORY__, ".."))
let private shared = Path.GetFullPath(Path.Combine(root, "..", "shared"))

/// The published continual methods, then the baselines (sequential fine-tuning, SimpleCIL, the joint
/// upper bound). The hybrids dual-vq and vpt-deep-pool run with --methods but are left out of the
/// default sweep to keep it near 30 minutes on 2 cores.
let defaultMethods =
    [ "l2p"; "l2p++"; "dualprompt"; "coda-prompt"; "vq-prompt"; "sequential"; "simplecil"; "joint" ]

/// The batch size the reference recipes' batch/256 scaling is anchored to (L2P, DualPrompt: 128).
let referenceBatch = 128

type Options =
    { Data: string
      Checkpoint: string
      Out: string
      Methods: string list
      /// `prompting run --query-depth K` for every method (those without a query pass ignore it).
      QueryDepth: int option
      Seeds: int list
      ImageSize: int
      TrainPerClass: int
      TestPerClass: int
      Epochs: int
      BatchSize: int
      Markdown: string option }

let defaults =
    { Data = Path.Combine(shared, "data", "cifar10-jpeg.tar")
      Checkpoint = Path.Combine(shared, "weights", "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors")
      Out = Path.Combine(root, "runs", "results-cifar10")
      Methods = defaultMethods
      QueryDepth = None
      Seeds = [ 0; 1; 2 ]
      ImageSize = 96
      TrainPerClass = 60
      TestPerClass = 50
      Epochs = 3
      BatchSize = 8
      Markdown = None }

let usage () =
    printfn "usage: dotnet fsi scripts/results-cifar10.fsx -- [options]"
    printfn "  --data PATH             CIFAR-10 (default %s)" defaults.Data
    printfn "  --checkpoint FILE       ViT-Ti/16 weights (default %s)" defaults.Checkpoint
    printfn "  --out DIR               sweep directory, one run per method and seed (default runs/results-cifar10,"
    printfn "                          runs/results-cifar10-qdK with --query-depth K)"
    printfn "  --methods A,B,...       (default %s)" (String.Join(",", defaults.Methods))
    printfn "  --seeds 0,1,2           (default 0,1,2)"
    printfn "  --image-size PX         (default %d)" defaults.ImageSize
    printfn "  --train-per-class N     (default %d)" defaults.TrainPerClass
    printfn "  --test-per-class N      (default %d)" defaults.TestPerClass
    printfn "  --epochs N              epochs per task for every method (default %d)" defaults.Epochs
    printfn "  --batch-size N          (default %d)" defaults.BatchSize
    printfn "  --query-depth K         query after K blocks of the un-prompted backbone (default: all);"
    printfn "                          passed to every run, methods without a query pass ignore it"
    printfn "  --markdown FILE         also write the table as Markdown (default OUT/table.md; the sweep writes OUT/results.md)"

let parse (argv: string list) =
    let positive name (v: string) =
        match Int32.TryParse v with
        | true, n when n > 0 -> n
        | _ -> Errors.fail "--%s %s: expected a positive integer" name v
    let list (v: string) = v.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) |> List.ofArray
    let rec go (o: Options) args =
        match args with
        | [] -> o
        | "--data" :: v :: rest -> go { o with Data = v } rest
        | "--checkpoint" :: v :: rest -> go { o with Checkpoint = v } rest
        | "--out" :: v :: rest -> go { o with Out = v } rest
        | "--methods" :: v :: rest -> go { o with Methods = list v } rest
        | "--seeds" :: v :: rest ->
            let seeds =
                list v |> List.map (fun s -> match Int32.TryParse s with | true, n when n >= 0 -> n | _ -> Errors.fail "--seeds %s: expected integers >= 0" v)
            go { o with Seeds = seeds } rest
        | "--image-size" :: v :: rest -> go { o with ImageSize = positive "image-size" v } rest
        | "--train-per-class" :: v :: rest -> go { o with TrainPerClass = positive "train-per-class" v } rest
        | "--test-per-class" :: v :: rest -> go { o with TestPerClass = positive "test-per-class" v } rest
        | "--epochs" :: v :: rest -> go { o with Epochs = positive "epochs" v } rest
        | "--batch-size" :: v :: rest -> go { o with BatchSize = positive "batch-size" v } rest
        | "--query-depth" :: v :: rest -> go { o with QueryDepth = Some(positive "query-depth" v) } rest
        | "--markdown" :: v :: rest -> go { o with Markdown = Some v } rest
        | [ flag ] when flag.StartsWith "--" -> Errors.fail "%s needs a value (see --help)" flag
        | other :: _ -> Errors.fail "unknown option %s (see --help)" other
    let o = go defaults argv
    if not (File.Exists o.Data || Directory.Exists o.Data) then
        Errors.fail "%s: CIFAR-10 not found (expected ../shared/data/cifar10-jpeg.tar or --data)" o.Data
    if not (File.Exists o.Checkpoint) then Errors.fail "%s: checkpoint not found (--checkpoint)" o.Checkpoint
    match o.QueryDepth with
    | Some k ->
        let depth = (Vit.Checkpoint.read o.Checkpoint None).Config.Depth
        if k > depth then Errors.fail "--query-depth %d: must be between 1 and the checkpoint's %d blocks" k depth
    | None -> ()
    if o.Methods.IsEmpty then Errors.fail "--methods: no method given"
    if o.Seeds.IsEmpty then Errors.fail "--seeds: no seed given"
    for m in o.Methods do Prompts.Methods.find m 5 |> ignore
    // Runs with another query depth are other runs: they do not resume the default sweep's.
    match o.QueryDepth with
    | Some k when o.Out = defaults.Out -> { o with Out = sprintf "%s-qd%d" defaults.Out k }
    | _ -> o

let private cli = Path.Combine(root, "src", "Prompting.Cli", "bin", "Release", "net10.0", "prompting.dll")

/// The learning rate given to `prompting run`: each method's own recipe, except that a rate scaled by
/// batch/256 keeps the per-step value it has at the reference batch of 128. A scaled-down run takes
/// few steps per task, so shrinking the rate with the batch as well would leave it barely trained.
let learningRate (methodName: string) (batchSize: int) =
    let recipe = (Prompts.Methods.find methodName 5).Recipe
    if recipe.ScaleByBatch then recipe.LearningRate * float referenceBatch / float batchSize
    else recipe.LearningRate

/// The options of `prompting run` every point shares.
let sharedRunOptions (o: Options) =
    [ "--benchmark"; "cifar10"; "--data"; o.Data; "--checkpoint"; o.Checkpoint
      "--image-size"; string o.ImageSize; "--train-per-class"; string o.TrainPerClass
      "--test-per-class"; string o.TestPerClass; "--epochs"; string o.Epochs; "--batch-size"; string o.BatchSize
      "--device"; "cpu" ]
    @ (match o.QueryDepth with Some k -> [ "--query-depth"; string k ] | None -> [])

/// The sweep definition of these options (the format of `prompting sweep --file`, see docs/sweeps.md):
/// the shared run options, each method's own learning rate (and --scenario joint for the joint
/// bound), the seeds. `scripts/results-cifar10.sweep.json` is the default one written out.
let definition (o: Options) =
    let strings (xs: string list) = Text.Json.Nodes.JsonArray([| for x in xs -> Text.Json.Nodes.JsonValue.Create x :> Text.Json.Nodes.JsonNode |])
    let methodNode (m: string) =
        let options =
            [ "--lr"; (learningRate m o.BatchSize).ToString("R", Globalization.CultureInfo.InvariantCulture) ]
            @ (if m = "joint" then [ "--scenario"; "joint" ] else [])
        let node = Text.Json.Nodes.JsonObject()
        node["name"] <- Text.Json.Nodes.JsonValue.Create m
        node["run"] <- strings options
        node :> Text.Json.Nodes.JsonNode
    let root = Text.Json.Nodes.JsonObject()
    root["run"] <- strings (sharedRunOptions o)
    root["methods"] <- Text.Json.Nodes.JsonArray([| for m in o.Methods -> methodNode m |])
    root["seeds"] <- Text.Json.Nodes.JsonArray([| for s in o.Seeds -> Text.Json.Nodes.JsonValue.Create s :> Text.Json.Nodes.JsonNode |])
    root.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true))

/// Runs the definition with `prompting sweep` (one point at a time, so each run's time and peak
/// memory are its own); its output goes to this script's output. The sweep resumes an interrupted
/// run and skips finished ones.
let private runSweep (o: Options) =
    // Written beside the sweep first (the sweep takes only a new, empty or earlier sweep directory),
    // then kept in it.
    let file = Path.Combine(Path.GetTempPath(), sprintf "results-cifar10-%s.sweep.json" (Guid.NewGuid().ToString "N"))
    File.WriteAllText(file, definition o)
    try
        let start = ProcessStartInfo("dotnet", [ cli; "sweep"; "--file"; file; "--out"; o.Out; "--parallel"; "1" ])
        start.UseShellExecute <- false
        use p = Process.Start start
        p.WaitForExit()
        if p.ExitCode <> 0 then
            Errors.fail "the sweep in %s failed (exit code %d); `prompting sweep status %s` lists its points" o.Out p.ExitCode o.Out
        File.Copy(file, Path.Combine(o.Out, "sweep-definition.json"), true)
    finally
        try File.Delete file with _ -> ()
    [ for m in o.Methods do
          for seed in o.Seeds -> Path.Combine(o.Out, "runs", sprintf "%s-s%d" m seed) ]

/// A finished run directory as the report sees it (the run's own recorded peak memory and time).
let private summaryOf (dir: string) = Experiment.summaryOf dir

let header = [ "method"; "seeds"; "A_N (%)"; "F_N"; "task-IL A_N (%)"; "train time (s)"; "peak RSS"; "trainable params" ]

/// One row per method: mean ± sample std over seeds; peak memory is the largest over seeds.
let tableRows (summaries: RunSummary list) =
    summaries
    |> List.groupBy _.Method
    |> List.map (fun (methodName, runs) ->
        let over f = runs |> List.map f |> Report.meanStd
        [ methodName
          string runs.Length
          Report.formatMeanStd 2 (over _.Metrics.ClassIncremental.FinalAverageAccuracy)
          Report.formatMeanStd 2 (over _.Metrics.ClassIncremental.Forgetting)
          Report.formatMeanStd 2 (over _.Metrics.TaskIncremental.FinalAverageAccuracy)
          (over _.TrainSeconds).Mean.ToString("F0", Globalization.CultureInfo.InvariantCulture)
          Report.formatBytes (runs |> List.map _.PeakMemoryBytes |> List.max)
          Report.formatCount runs.Head.TrainableParameters ])

let sweep (argv: string list) =
    let o = parse argv
    if not (File.Exists cli) then Errors.fail "%s not found: run `dotnet fsi build.fsx build` first" cli
    Directory.CreateDirectory o.Out |> ignore
    let clock = Stopwatch.StartNew()
    let dirs = runSweep o
    let summaries = dirs |> List.map summaryOf
    let table = Report.markdownTable header (tableRows summaries)
    let command = "dotnet fsi scripts/results-cifar10.fsx -- " + String.Join(" ", argv)
    let queryDepth =
        match o.QueryDepth with
        | Some k -> sprintf ", query after %d blocks (methods with a query pass)" k
        | None -> ""
    let text =
        sprintf "Split CIFAR-10, 5 tasks x 2 classes, class-incremental; ViT-Ti/16 %s at %d px; %d train / %d test images per class; %d epoch(s) per task, batch %d, each method's recipe (batch-scaled rates kept at their batch-%d value)%s; seeds %s; CPU, %d threads.\n\n%s\nsweep wall time %s\n"
            (Path.GetFileName o.Checkpoint) o.ImageSize o.TrainPerClass o.TestPerClass o.Epochs o.BatchSize referenceBatch queryDepth
            (String.Join(",", o.Seeds)) Environment.ProcessorCount table (Report.formatDuration clock.Elapsed.TotalSeconds)
    printfn "\n%s" text
    // The sweep writes its own results.md (mean, std and 95 % CI per method); this is the table of docs/results.md.
    let markdown = o.Markdown |> Option.defaultValue (Path.Combine(o.Out, "table.md"))
    Files.writeAtomic markdown (fun tmp -> File.WriteAllText(tmp, sprintf "command: `%s`\n\n%s" command text))
    let report = Path.Combine(o.Out, "comparison.html")
    Report.writeComparison report summaries
    printfn "table: %s\nreport: %s" (Path.GetFullPath markdown) (Path.GetFullPath report)
    0

let code =
    let argv = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--") |> List.ofArray
    try
        if List.contains "--help" argv then
            usage ()
            0
        else sweep argv
    with PromptingError message ->
        eprintfn "error: %s" message
        1
exit code
