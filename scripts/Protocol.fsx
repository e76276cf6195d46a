// Shared include of the protocol scripts (scripts/*-cifar100.fsx, *-imagenet-r.fsx, vpt-transfer.fsx):
// the papers' reference training settings (the recipes the methods carry), the common command line,
// and the wrapper that resolves the run through Configure.resolve, runs it and prints the summary
// and the report path. A protocol script is a few lines: `Protocol.main [extras] (fun o -> ...)`.
//
// Common command line (every protocol script):
//   --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device cpu|cuda[:N]]
//   data:                [--split NAME] (default: the benchmark's reference split, e.g. CODA-Prompt's
//                        lists for imagenet-r; `prompting benchmarks NAME` lists them)
//                        [--class-order ORDER] (default: the reference's rule with --seed: the
//                        split's, e.g. coda-K for CODA's lists, else the protocol's reference code's,
//                        e.g. natural for the L2P/DualPrompt ports on CIFAR-100; else seed:K)
//   quick-run overrides: [--epochs N] [--batch-size N] [--lr X] [--image-size PX] [--heads N]
//                        [--train-per-class N] [--test-per-class N] [--tasks N]
//   others:              [--normalisation backbone|unit] [--bf16] [--skip-corrupt] [--help]
// Overrides change only what they name; --batch-size keeps the batch/256 scaling of a scaled rate.
#load "Prompting.fsx"

open System
open System.IO
open Prompting
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts

/// The parsed command line.
type Options =
    { Data: string
      Checkpoint: string
      Out: string option
      Seed: int
      Device: string
      Epochs: int option
      BatchSize: int option
      LearningRate: float option
      ImageSize: int option
      Heads: int option
      TrainPerClass: int option
      TestPerClass: int option
      Tasks: int option
      /// A named split of the benchmark (None: the benchmark's default, the reference's).
      Split: string option
      /// --class-order (None: the reference's rule for the split with the seed, else seed:K).
      ClassOrder: ClassOrder option
      Normalisation: PixelScale option
      Bf16: bool
      SkipCorrupt: bool
      /// The script's own options (declared in Protocol.main's first argument): name → value ("" for flags).
      Extra: Map<string, string> }

    member o.Flag(name: string) = o.Extra.ContainsKey name

    member o.Float(name: string, fallback: float) =
        match o.Extra.TryFind name with
        | Some v ->
            match Double.TryParse(v, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
            | true, x -> x
            | _ -> Errors.fail "--%s %s: expected a number" name v
        | None -> fallback

    member o.Int(name: string, fallback: int) =
        match o.Extra.TryFind name with
        | Some v ->
            match Int32.TryParse v with
            | true, x -> x
            | _ -> Errors.fail "--%s %s: expected an integer" name v
        | None -> fallback

/// One paper protocol: everything of the RunConfig that is not the user's (data, checkpoint, seed).
type Protocol =
    { /// Names the default run directory runs/<Name>-s<seed>.
      Name: string
      Method: Method
      /// A registered benchmark: cifar100, imagenet-r, imagefolder (see `prompting benchmarks`).
      Benchmark: string
      Tasks: int
      Scenario: ScenarioKind
      /// The method's recipe in this protocol (its own, or with the paper's epochs for the data).
      Training: Training
      Normalisation: PixelScale
      /// The reference code's class order for a seed where the benchmark has no rule of its own
      /// (CIFAR-100: the PyTorch ports of L2P and DualPrompt keep the natural order, CODA-Prompt's
      /// repository and VQ-Prompt's shuffle repeat K > 0 with random.seed(K)); None: the
      /// benchmark's rule for its split (CODA-Prompt's lists for ImageNet-R). --class-order overrides it.
      ClassOrder: (int -> ClassOrder) option }

/// An extra option of a script: its name (without --), whether it takes a value, its help line.
type Extra = { Name: string; TakesValue: bool; Help: string }

/// The reference training settings: the recipes the methods carry (Methods.Recipes), by name.
module Reference =
    let l2p = Methods.Recipes.l2p
    let dualPrompt = Methods.Recipes.dualPrompt
    let codaPrompt = Methods.Recipes.codaRepository
    let vqPrompt = Methods.Recipes.vqPrompt

    /// The PyTorch ports of L2P and DualPrompt (`--shuffle False`): the classes in their natural
    /// order whatever the seed.
    let portsOrder = Some(fun (_: int) -> Natural)

    /// CODA-Prompt's repository (`rand_split: True`, followed by VQ-Prompt): repeat K keeps the
    /// natural order for K = 0 and shuffles with random.seed(K) otherwise.
    let codaOrder = Some Benchmarks.codaOrder

    /// VPT with the transfer protocol's chosen base rate and weight decay.
    let vpt (baseRate: float) (weightDecay: float) = { Methods.Recipes.vpt with LearningRate = baseRate; WeightDecay = weightDecay }

// The protocol runner (this file is module Protocol: scripts call Protocol.main).
let private common =
    [ "data", true, "data directory or archive (required)"
      "checkpoint", true, "pretrained ViT checkpoint, safetensors or npz (required)"
      "out", true, "run directory (default runs/<protocol>-s<seed>); an existing one is resumed"
      "seed", true, "seed for class order, initialisation and shuffling (default 0)"
      "device", true, "cpu or cuda[:N] (default: cuda when available)"
      "epochs", true, "override: epochs per task"
      "batch-size", true, "override: batch size (a scaled rate follows it)"
      "lr", true, "override: base learning rate"
      "image-size", true, "override: input resolution (default: the checkpoint's)"
      "heads", true, "attention heads of the checkpoint (default width / 64)"
      "train-per-class", true, "override: seeded subset of training images per class"
      "test-per-class", true, "override: seeded subset of test images per class"
      "tasks", true, "override: number of tasks"
      "split", true, "a named split of the benchmark (default: the reference's; see `prompting benchmarks NAME`)"
      "class-order", true, "natural, seed:K, pilot-K, coda-K, numpy:K, python:K or a file (default: the reference's rule with --seed)"
      "normalisation", true, "override: backbone (the backbone's mean/std) or unit ([0, 1])"
      "bf16", false, "bf16 autocast on CUDA"
      "skip-corrupt", false, "skip unreadable images instead of stopping"
      "help", false, "this text" ]

let usage (script: string) (extras: Extra list) =
    let rows = common @ [ for e in extras -> e.Name, e.TakesValue, e.Help ]
    printfn "usage: dotnet fsi scripts/%s.fsx -- --data DIR --checkpoint FILE [options]" script
    for name, takes, help in rows do
        printfn "  %-24s %s" ((if takes then sprintf "--%s V" name else sprintf "--%s" name)) help

/// Parses `--name value` pairs and flags; unknown options are errors.
let parse (extras: Extra list) (argv: string[]) : Options =
    let takesValue =
        Map.ofList ([ for n, t, _ in common -> n, t ] @ [ for e in extras -> e.Name, e.TakesValue ])
    let rec go i (acc: Map<string, string>) =
        if i >= argv.Length then acc
        else
            let a = argv[i]
            if not (a.StartsWith "--") then Errors.fail "unexpected argument %s (options are --name [value])" a
            let name = a.Substring 2
            match takesValue.TryFind name with
            | None -> Errors.fail "unknown option %s (see --help)" a
            | Some true ->
                if i + 1 >= argv.Length then Errors.fail "%s needs a value" a
                go (i + 2) (acc.Add(name, argv[i + 1]))
            | Some false -> go (i + 1) (acc.Add(name, ""))
    let m = go 0 Map.empty
    let int' name =
        m.TryFind name
        |> Option.map (fun v ->
            match Int32.TryParse v with
            | true, x when x > 0 || name = "seed" -> x
            | _ -> Errors.fail "--%s %s: expected a positive integer" name v)
    let float' name =
        m.TryFind name
        |> Option.map (fun v ->
            match Double.TryParse(v, Globalization.NumberStyles.Float, Globalization.CultureInfo.InvariantCulture) with
            | true, x -> x
            | _ -> Errors.fail "--%s %s: expected a number" name v)
    let required name = match m.TryFind name with Some v -> v | None -> Errors.fail "--%s is required (see --help)" name
    { Data = required "data"
      Checkpoint = required "checkpoint"
      Out = m.TryFind "out"
      Seed = int' "seed" |> Option.defaultValue 0
      Device = m.TryFind "device" |> Option.defaultValue "auto"
      Epochs = int' "epochs"
      BatchSize = int' "batch-size"
      LearningRate = float' "lr"
      ImageSize = int' "image-size"
      Heads = int' "heads"
      TrainPerClass = int' "train-per-class"
      TestPerClass = int' "test-per-class"
      Tasks = int' "tasks"
      Split = m.TryFind "split"
      ClassOrder = m.TryFind "class-order" |> Option.map ClassOrder.parse
      Normalisation =
        m.TryFind "normalisation"
        |> Option.map (function
            | "backbone" | "normalised" -> Normalised
            | "unit" | "unit-range" -> UnitRange
            | other -> Errors.fail "--normalisation %s: expected backbone or unit" other)
      Bf16 = m.ContainsKey "bf16"
      SkipCorrupt = m.ContainsKey "skip-corrupt"
      Extra = m |> Map.filter (fun k _ -> extras |> List.exists (fun e -> e.Name = k)) }

/// The protocol's run with the user's data, checkpoint, seed and overrides, through the one
/// configuration path every front end uses.
let runConfig (p: Protocol) (o: Options) : PreparedRun =
    Configure.resolve
        { RunRequest.empty with
            Method = Some(MethodValue { p.Method with Recipe = { p.Training with Bf16 = p.Training.Bf16 || o.Bf16 } })
            Benchmark = Some p.Benchmark
            Data = Some o.Data
            Checkpoint = Some o.Checkpoint
            Heads = o.Heads
            Tasks = Some(o.Tasks |> Option.defaultValue p.Tasks)
            Scenario = Some p.Scenario
            Split = o.Split
            ClassOrder = o.ClassOrder |> Option.orElse (p.ClassOrder |> Option.map (fun order -> order o.Seed))
            Epochs = o.Epochs
            BatchSize = o.BatchSize
            LearningRate = o.LearningRate
            ImageSize = o.ImageSize
            TrainPerClass = o.TrainPerClass
            TestPerClass = o.TestPerClass
            Normalisation = Some(o.Normalisation |> Option.defaultValue p.Normalisation)
            Seed = Some o.Seed
            SkipCorrupt = Some o.SkipCorrupt }

let private describe (c: RunConfig) =
    let t = c.Method.Recipe
    printfn "method %s on %s (split %s): %d task(s), %A, class order %s" c.Method.Name c.Benchmark (defaultArg c.Split "-") c.Tasks c.Scenario
        (ClassOrder.name c.ClassOrder)
    printfn "training: %d epoch(s), batch %d, %A, lr %g%s (effective %g)%s, %A %A, weight decay %g%s; inputs %A, %dpx"
        t.Epochs t.BatchSize t.Optimizer t.LearningRate (if t.ScaleByBatch then " x batch/256" else "")
        (Schedules.baseRate t)
        (match t.HeadLearningRate with Some h -> sprintf ", head %g" h | None -> "")
        t.Schedule t.ScheduleUnit t.WeightDecay
        (match t.GradientClip with Some g -> sprintf ", grad clip %g" g | None -> "")
        c.Normalisation c.ImageSize

/// Runs one protocol script: parses fsi's arguments, runs the experiment, prints the summary and
/// the report path, and exits with 0, or 1 after printing the error.
let main (script: string) (extras: Extra list) (build: Options -> Protocol) =
    let argv = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")
    let code =
        try
            if argv |> Array.contains "--help" then
                usage script extras
                0
            else
                let o = parse extras argv
                let p = build o
                let dir = o.Out |> Option.defaultValue (Path.Combine("runs", sprintf "%s-s%d" p.Name o.Seed))
                let prepared = runConfig p o
                describe prepared.Config
                let device = Devices.parse o.Device
                let outcome = Runs.run prepared dir device
                let summary = Experiment.summary (Run.record prepared) outcome.Progress
                Report.printSummary summary
                printfn "run directory: %s" (Path.GetFullPath dir)
                printfn "report: %s" (Path.GetFullPath(Experiment.reportFile dir))
                0
        with
        | PromptingError message ->
            eprintfn "error: %s" message
            1
    exit code
