module Prompting.Cli.Commands.Run

open System
open System.IO
open Argu
open TorchSharp
open Prompting
open Prompting.Vit
open Prompting.Prompts
open Prompting.Engine
open Prompting.Cli

/// A configuration file: a RunConfig, or a run directory's config.json (which wraps one).
let private readConfigFile (path: string) =
    if not (File.Exists path) then Errors.fail "%s: configuration file not found" path
    let text = File.ReadAllText path
    use doc = Text.Json.JsonDocument.Parse(text)
    match doc.RootElement.TryGetProperty "Config" with
    | true, inner -> Json.deserialize<RunConfig> path (inner.GetRawText())
    | _ -> Json.deserialize<RunConfig> path text

let private classOrder (seed: int) (text: string option) =
    match text with
    | None -> Shuffled seed
    | Some "natural" -> Natural
    | Some s when s.StartsWith "seed:" ->
        match Int32.TryParse(s.Substring 5) with
        | true, k -> Shuffled k
        | _ -> Errors.fail "--class-order %s: expected seed:K" s
    | Some file ->
        if not (File.Exists file) then Errors.fail "--class-order %s: not natural, seed:K or an existing file" file
        let numbers =
            File.ReadAllLines file
            |> Array.filter (fun l -> l.Trim() <> "")
            |> Array.map (fun l ->
                match Int32.TryParse(l.Trim()) with
                | true, v -> v
                | _ -> Errors.fail "%s: class order lines must be integers, found '%s'" file (l.Trim()))
        Given(List.ofArray numbers)

/// The run configuration from an optional file and the command's flags.
let configure (args: ParseResults<RunArgs>) : RunConfig =
    let fromFile = args.TryGetResult RunArgs.Config |> Option.map readConfigFile
    let benchmarkName =
        match args.TryGetResult RunArgs.Benchmark, fromFile with
        | Some b, _ -> (Benchmarks.find b).Name
        | None, Some c -> c.Benchmark
        | None, None -> Errors.fail "run: --benchmark is required (see `prompting benchmarks`)"
    let benchmark = Benchmarks.find benchmarkName
    let scenario =
        match args.TryGetResult RunArgs.Scenario, fromFile with
        | Some "class", _ -> ClassIncremental
        | Some "task", _ -> TaskIncremental
        | Some "joint", _ -> Joint
        | Some "domain", _ -> DomainIncremental
        | Some other, _ -> Errors.fail "--scenario %s: expected class, task, domain or joint" other
        | None, Some c -> c.Scenario
        | None, None -> if benchmarkName = "domains" then DomainIncremental else ClassIncremental
    let tasks =
        Configure.tasks scenario (args.TryGetResult RunArgs.Tasks)
            (match fromFile with
             | Some c -> c.Tasks
             | None when benchmarkName = "domains" ->
                 Benchmarks.domainDirectories (args.TryGetResult RunArgs.Data) |> List.length
             | None -> Configure.defaultTasks scenario benchmark)
    let methodName =
        match args.TryGetResult RunArgs.Method, fromFile with
        | Some m, _ -> Some m
        | None, Some _ -> None
        | None, None -> Errors.fail "run: --method is required (see `prompting methods`)"
    let method =
        match methodName, fromFile with
        | Some m, _ -> Methods.find m tasks
        | None, Some c -> c.Method
        | None, None -> Errors.fail "run: --method is required"
    let method =
        match args.TryGetResult RunArgs.Query_Depth with
        | Some k when k < 1 -> Errors.fail "--query-depth %d: must be at least 1" k
        | Some k -> { method with QueryDepth = Some k }
        | None -> method
    let checkpoint =
        match args.TryGetResult RunArgs.Checkpoint, fromFile with
        | Some c, _ -> c
        | None, Some c -> c.Checkpoint
        | None, None -> Errors.fail "run: --checkpoint is required"
    Configure.requireCheckpoint checkpoint
    let heads = args.TryGetResult RunArgs.Heads |> Option.orElse (fromFile |> Option.bind (fun c -> c.Heads))
    let seed = args.GetResult(RunArgs.Seed, defaultValue = (fromFile |> Option.map (fun c -> c.Seed) |> Option.defaultValue 0))
    let recipe =
        match fromFile with
        | Some c when methodName.IsNone || methodName = Some c.Method.Name -> c.Training
        | _ -> Recipes.forMethod method.Name
    let training =
        Configure.training recipe (args.TryGetResult RunArgs.Epochs) (args.TryGetResult RunArgs.Batch_Size) (args.TryGetResult RunArgs.Lr)
    let training = if args.Contains RunArgs.Bf16 then { training with Bf16 = true } else training
    let imageSize =
        match args.TryGetResult RunArgs.Image_Size, fromFile with
        | Some s, _ -> s
        | None, Some c -> c.ImageSize
        | None, None -> Configure.checkpointImageSize checkpoint heads
    { Method = method
      Benchmark = benchmarkName
      Data = args.TryGetResult RunArgs.Data |> Option.orElse (fromFile |> Option.bind (fun c -> c.Data))
      Checkpoint = checkpoint
      Heads = heads
      ImageSize = imageSize
      Tasks = tasks
      Scenario = scenario
      ClassOrder =
        match args.TryGetResult RunArgs.Class_Order, fromFile with
        | None, Some c when not (args.Contains RunArgs.Seed) -> c.ClassOrder
        | order, _ -> classOrder seed order
      TrainPerClass = args.TryGetResult RunArgs.Train_Per_Class |> Option.orElse (fromFile |> Option.bind (fun c -> c.TrainPerClass))
      TestPerClass = args.TryGetResult RunArgs.Test_Per_Class |> Option.orElse (fromFile |> Option.bind (fun c -> c.TestPerClass))
      Training = training
      Normalisation =
        if args.Contains RunArgs.Unit_Range then Data.UnitRange
        else fromFile |> Option.map (fun c -> c.Normalisation) |> Option.defaultValue Data.Normalised
      Seed = seed
      SkipCorrupt = args.Contains RunArgs.Skip_Corrupt || (fromFile |> Option.exists (fun c -> c.SkipCorrupt))
      Validation = args.TryGetResult RunArgs.Validation |> Option.orElse (fromFile |> Option.bind (fun c -> c.Validation)) }

let run (args: ParseResults<RunArgs>) =
    let config = configure args
    let device = Devices.parse (args.GetResult(RunArgs.Device, defaultValue = "auto"))
    let dir = args.GetResult(RunArgs.Out, defaultValue = Path.Combine("runs", sprintf "%s-%s-s%d" config.Method.Name config.Benchmark config.Seed))
    let outcome = Runs.run config dir device
    let summary = Experiment.summary config dir outcome.Progress outcome.TrainableParameters
    Report.printSummary summary
    printfn "run directory: %s" (Path.GetFullPath dir)
    printfn "report: %s" (Path.GetFullPath(Experiment.reportFile dir))
    0

/// Evaluates a run again from its saved per-task state and prints the accuracy matrix.
let eval (args: ParseResults<EvalArgs>) =
    let dir = args.GetResult EvalArgs.Run
    if not (File.Exists(Run.configFile dir)) then Errors.fail "%s: not a run directory (no config.json)" dir
    let recorded = Json.deserialize<Run.Recorded> (Run.configFile dir) (File.ReadAllText(Run.configFile dir))
    let c = recorded.Config
    let device = Devices.parse (args.GetResult(EvalArgs.Device, defaultValue = "auto"))
    let scenario = Experiment.scenario c ignore
    let batches = Experiment.provider c
    let learned =
        [ 0 .. scenario.Tasks.Length - 1 ] |> List.filter (fun t -> File.Exists(Run.taskStateFile dir t)) |> List.tryLast
    match learned with
    | None -> Errors.fail "%s: no task has been completed yet" dir
    | Some last ->
        let backbone = Checkpoint.load c.Checkpoint { ImageSize = Some c.ImageSize; Heads = c.Heads; Classes = None }
        use model = PromptedModel.build c.Method scenario.Layout backbone
        TrainableState.load (Run.taskStateFile dir last) model
        model.``to`` device |> ignore
        for j in 0 .. last do
            let e = Evaluate.evaluateTask model device scenario.Tasks[j] (batches.Eval scenario.Tasks[j].Test)
            printfn "task %d: class-incremental %.2f%%, task-incremental %.2f%%%s" (j + 1) e.ClassIncremental e.TaskIncremental
                (match e.PromptChoice with Some p -> sprintf ", prompt choice %.2f%%" p | None -> "")
        0

let benchmarks (namesOnly: bool) =
    for b in Benchmarks.all do
        if namesOnly then printfn "%s" b.Name
        else
            printfn "%-14s %s" b.Name b.Description
            printfn "%-14s   --data: %s" "" b.Data
    0

/// Compares several runs: a table on the terminal and an HTML report.
let report (args: ParseResults<ReportArgs>) =
    let summaries =
        [ for dir in args.GetResult ReportArgs.Runs ->
              if not (File.Exists(Run.configFile dir)) then Errors.fail "%s: not a run directory (no config.json)" dir
              if not (File.Exists(Run.progressFile dir)) then Errors.fail "%s: the run has not finished a task yet" dir
              let recorded = Json.deserialize<Run.Recorded> (Run.configFile dir) (File.ReadAllText(Run.configFile dir))
              let progress = Json.deserialize<RunProgress> (Run.progressFile dir) (File.ReadAllText(Run.progressFile dir))
              if progress.Evaluations.IsEmpty then Errors.fail "%s: the run has not finished a task yet" dir
              Experiment.summary recorded.Config dir progress progress.TrainableParameters ]
    Report.printComparison (Report.compare summaries)
    let output = args.GetResult(ReportArgs.Output, defaultValue = "comparison.html")
    Report.writeComparison output summaries
    printfn "report: %s" (Path.GetFullPath output)
    0
