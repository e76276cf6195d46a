// Shared include of the protocol scripts (scripts/*-cifar100.fsx, *-imagenet-r.fsx, vpt-transfer.fsx):
// the papers' reference training settings as F# values, the common command line, the ImageNet-R
// 80/20 split helper, and the wrapper that builds the RunConfig, runs Experiment.run and prints the
// summary and the report path. A protocol script is a few lines: `Protocol.main [extras] (fun o -> ...)`.
//
// Common command line (every protocol script):
//   --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device cpu|cuda[:N]]
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
      /// imagefolder or cifar100 (see `prompting benchmarks`).
      Benchmark: string
      Tasks: int
      Scenario: ScenarioKind
      Training: Training
      Normalisation: PixelScale
      /// Turns --data into what the benchmark reads, given the run directory (ImageNet-R: the split).
      PrepareData: string -> string -> string }

/// An extra option of a script: its name (without --), whether it takes a value, its help line.
type Extra = { Name: string; TakesValue: bool; Help: string }

/// The reference training settings of /work/shared/METHODS.md, written out in full.
module Reference =
    /// L2P: Adam, constant lr 0.03 scaled by batch/256, batch 128, 5 epochs per task, grad clip 1.0.
    let l2p =
        { Epochs = 5
          BatchSize = 128
          LearningRate = 0.03
          ScaleByBatch = true
          HeadLearningRate = None
          Optimizer = Adam
          WeightDecay = 0.0
          Schedule = Constant
          ScheduleUnit = PerEpoch
          GradientClip = Some 1.0
          Bf16 = false }

    /// DualPrompt: Adam, constant lr 0.005 scaled by batch/256, batch 128, 5 epochs (CIFAR-100).
    let dualPrompt =
        { l2p with LearningRate = 0.005; GradientClip = None }

    /// CODA-Prompt: Adam lr 1e-3 (not scaled), batch 128, cosine decay over each task's epochs, 20 epochs.
    let codaPrompt =
        { l2p with
            Epochs = 20
            LearningRate = 0.001
            ScaleByBatch = false
            Schedule = Cosine 0.0
            GradientClip = None }

    /// VQ-Prompt: AdamW, prompts 0.0125 / head 0.0025, weight decay 0, per-iteration cosine to 1e-6
    /// (the final rate is a fraction of the base), 20 epochs, batch 128. The official short constant
    /// warm-up at 1e-6 is not modelled (the schedule's warm-up is linear over whole epochs).
    let vqPrompt =
        { l2p with
            Epochs = 20
            LearningRate = 0.0125
            ScaleByBatch = false
            HeadLearningRate = Some 0.0025
            Optimizer = AdamW
            Schedule = Cosine(1e-6 / 0.0125)
            ScheduleUnit = PerIteration
            GradientClip = None }

    /// VPT: SGD momentum 0.9, 10 warm-up epochs then cosine over 100, batch 128, lr = base·batch/256.
    let vpt (baseRate: float) (weightDecay: float) =
        { l2p with
            Epochs = 100
            LearningRate = baseRate
            ScaleByBatch = true
            Optimizer = Sgd 0.9
            WeightDecay = weightDecay
            Schedule = WarmupCosine(10, 0.0)
            GradientClip = None }

/// Data helpers.
module Datasets =
    let private isImage (path: string) =
        match Path.GetExtension(path).ToLowerInvariant() with
        | ".jpg" | ".jpeg" | ".png" | ".bmp" | ".gif" | ".webp" | ".tif" | ".tiff" -> true
        | _ -> false

    /// ImageNet-R as the papers use it: an 80/20 train/test split of the single-folder release
    /// (imagenet-r/<class>/<image>). DIR/{train,test} is used as it is; a .tar is passed through.
    /// Otherwise each class's images (ordinal order) are shuffled with a fixed seed and the first 80%
    /// become training images; the split is written as symbolic links under RUNDIR/imagenet-r-split
    /// (the same every time for the same files, whatever the run's seed).
    let imagenetRSplit (splitSeed: int) (data: string) (runDir: string) =
        if not (Directory.Exists data) then data
        elif Directory.Exists(Path.Combine(data, "train")) && Directory.Exists(Path.Combine(data, "test")) then data
        else
            let classes = Directory.GetDirectories data |> Array.sortWith (fun a b -> String.CompareOrdinal(a, b))
            if classes.Length = 0 then Errors.fail "%s: neither DIR/{train,test} nor DIR/<class>/<image>" data
            let target = Path.GetFullPath(Path.Combine(runDir, "imagenet-r-split"))
            let done' = target + ".complete"
            if not (File.Exists done') then
                if Directory.Exists target then Directory.Delete(target, true)
                for cls in classes do
                    let name = Path.GetFileName cls
                    let images =
                        Directory.GetFiles(cls, "*", SearchOption.AllDirectories)
                        |> Array.filter isImage
                        |> Array.sortWith (fun a b -> String.CompareOrdinal(a, b))
                    let rng = Random(splitSeed)
                    let shuffled = Array.copy images
                    rng.Shuffle shuffled
                    let trainCount = int (Math.Round(0.8 * float shuffled.Length))
                    shuffled
                    |> Array.iteri (fun i file ->
                        let part = if i < trainCount then "train" else "test"
                        let dir = Path.Combine(target, part, name)
                        Directory.CreateDirectory dir |> ignore
                        let relative = Path.GetRelativePath(cls, file).Replace(Path.DirectorySeparatorChar, '_')
                        File.CreateSymbolicLink(Path.Combine(dir, relative), Path.GetFullPath file) |> ignore)
                    // A class with a single image still needs both directories for the reader.
                    for part in [ "train"; "test" ] do
                        Directory.CreateDirectory(Path.Combine(target, part, name)) |> ignore
                File.WriteAllText(done', sprintf "80/20 split of %s with seed %d\n" (Path.GetFullPath data) splitSeed)
            target

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
      Normalisation =
        m.TryFind "normalisation"
        |> Option.map (function
            | "backbone" | "normalised" -> Normalised
            | "unit" | "unit-range" -> UnitRange
            | other -> Errors.fail "--normalisation %s: expected backbone or unit" other)
      Bf16 = m.ContainsKey "bf16"
      SkipCorrupt = m.ContainsKey "skip-corrupt"
      Extra = m |> Map.filter (fun k _ -> extras |> List.exists (fun e -> e.Name = k)) }

/// The protocol's RunConfig with the user's data, checkpoint, seed and overrides.
let runConfig (p: Protocol) (o: Options) (runDir: string) : RunConfig =
    if not (File.Exists o.Checkpoint) then Errors.fail "%s: checkpoint not found" o.Checkpoint
    let t = p.Training
    { Method = p.Method
      Benchmark = p.Benchmark
      Data = Some(p.PrepareData o.Data runDir)
      Checkpoint = o.Checkpoint
      Heads = o.Heads
      ImageSize = o.ImageSize |> Option.defaultWith (fun () -> (Vit.Checkpoint.read o.Checkpoint o.Heads).Config.ImageSize)
      Tasks = o.Tasks |> Option.defaultValue p.Tasks
      Scenario = p.Scenario
      ClassOrder = Shuffled o.Seed
      TrainPerClass = o.TrainPerClass
      TestPerClass = o.TestPerClass
      Training =
        { t with
            Epochs = o.Epochs |> Option.defaultValue t.Epochs
            BatchSize = o.BatchSize |> Option.defaultValue t.BatchSize
            LearningRate = o.LearningRate |> Option.defaultValue t.LearningRate
            Bf16 = t.Bf16 || o.Bf16 }
      Normalisation = o.Normalisation |> Option.defaultValue p.Normalisation
      Seed = o.Seed
      SkipCorrupt = o.SkipCorrupt
      Validation = None }

let private describe (c: RunConfig) =
    let t = c.Training
    printfn "method %s on %s: %d task(s), %A, class order %A" c.Method.Name c.Benchmark c.Tasks c.Scenario c.ClassOrder
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
                Directory.CreateDirectory dir |> ignore
                let config = runConfig p o dir
                describe config
                let device = Devices.parse o.Device
                let outcome = Runs.run config dir device
                let summary = Experiment.summary config dir outcome.Progress outcome.TrainableParameters
                Report.printSummary summary
                printfn "run directory: %s" (Path.GetFullPath dir)
                printfn "report: %s" (Path.GetFullPath(Experiment.reportFile dir))
                0
        with
        | PromptingError message ->
            eprintfn "error: %s" message
            1
    exit code
