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

/// The run request of the command's flags and optional configuration file.
let request (args: ParseResults<RunArgs>) : RunRequest =
    let seed = args.TryGetResult RunArgs.Seed
    let scenario =
        match args.TryGetResult RunArgs.Scenario with
        | None -> None
        | Some "class" -> Some ClassIncremental
        | Some "task" -> Some TaskIncremental
        | Some "joint" -> Some Joint
        | Some "domain" -> Some DomainIncremental
        | Some other -> Errors.fail "--scenario %s: expected class, task, domain or joint" other
    { Base = args.TryGetResult RunArgs.Config |> Option.map Run.readConfigFile
      Method = args.TryGetResult RunArgs.Method |> Option.map MethodNamed
      Benchmark = args.TryGetResult RunArgs.Benchmark
      Data = args.TryGetResult RunArgs.Data
      Checkpoint = args.TryGetResult RunArgs.Checkpoint
      Heads = args.TryGetResult RunArgs.Heads
      Tasks = args.TryGetResult RunArgs.Tasks
      Scenario = scenario
      Split = args.TryGetResult RunArgs.Split
      Epochs = args.TryGetResult RunArgs.Epochs
      BatchSize = args.TryGetResult RunArgs.Batch_Size
      LearningRate = args.TryGetResult RunArgs.Lr
      Bf16 = if args.Contains RunArgs.Bf16 then Some true else None
      ImageSize = args.TryGetResult RunArgs.Image_Size
      ClassOrder = args.TryGetResult RunArgs.Class_Order |> Option.map ClassOrder.parse
      TrainPerClass = args.TryGetResult RunArgs.Train_Per_Class
      TestPerClass = args.TryGetResult RunArgs.Test_Per_Class
      Normalisation = if args.Contains RunArgs.Unit_Range then Some Data.UnitRange else None
      QueryDepth = args.TryGetResult RunArgs.Query_Depth
      Head = args.TryGetResult RunArgs.Head
      Adapt = args.TryGetResult RunArgs.Adapt
      Seed = seed
      SkipCorrupt = if args.Contains RunArgs.Skip_Corrupt then Some true else None
      Validation = args.TryGetResult RunArgs.Validation
      AcceptRecipeChange = if args.Contains RunArgs.Accept_Recipe_Change then Some true else None }

/// An argument as a POSIX shell reads it back: quoted when it holds anything but safe characters.
let quoteArgument (arg: string) =
    if arg <> "" && arg |> Seq.forall (fun c -> Char.IsLetterOrDigit c || "-_./:=,+@%".Contains c) then arg
    else "'" + arg.Replace("'", "'\\''") + "'"

/// The run configuration from an optional file and the command's flags (checkpoint read once).
let configure (args: ParseResults<RunArgs>) : PreparedRun = Configure.resolve (request args)

let run (args: ParseResults<RunArgs>) =
    let prepared = configure args
    let config = prepared.Config
    let device = Devices.parse (args.GetResult(RunArgs.Device, defaultValue = "auto"))
    let dir = args.GetResult(RunArgs.Out, defaultValue = Path.Combine("runs", sprintf "%s-%s-s%d" config.Method.Name config.Benchmark config.Seed))
    // Ctrl-C ends the process at once (every state file is written atomically); say how to go on.
    let interrupted =
        ConsoleCancelEventHandler(fun _ _ ->
            let command = Environment.GetCommandLineArgs() |> Array.skip 1 |> Array.map quoteArgument |> String.concat " "
            eprintfn "interrupted: the same command resumes this run from its last saved epoch: prompting %s" command)
    Console.CancelKeyPress.AddHandler interrupted
    let outcome =
        try Runs.run prepared dir device
        finally Console.CancelKeyPress.RemoveHandler interrupted
    let summary = Experiment.summary (Run.record prepared) outcome.Progress
    Report.printSummary summary
    printfn "run directory: %s" (Path.GetFullPath dir)
    printfn "report: %s" (Path.GetFullPath(Experiment.reportFile dir))
    0

/// Evaluates a run again from its saved per-task state and prints the accuracy matrix.
let eval (args: ParseResults<EvalArgs>) =
    let device = Devices.parse (args.GetResult(EvalArgs.Device, defaultValue = "auto"))
    let options = { Checkpoint = args.TryGetResult EvalArgs.Checkpoint; Data = args.TryGetResult EvalArgs.Data; ReadData = true }
    let run = Experiment.reopen (args.GetResult EvalArgs.Run) device options
    use model = run.Model
    for note in run.Notes do eprintfn "note: %s" note
    let scenario = run.Scenario |> Option.defaultWith (fun () -> Errors.fail "%s: the run's data were not read" run.Directory)
    let batches = Experiment.provider run.Recorded.Config
    for j in 0 .. run.LastTask do
        let task = scenario.Tasks[j]
        let e = Evaluate.evaluateTask model device task (batches.Eval task.Test)
        printfn "task %d: class-incremental %.2f%%, task-incremental %.2f%%%s" (j + 1) e.ClassIncremental e.TaskIncremental
            (match e.PromptChoice with Some p -> sprintf ", prompt choice %.2f%%" p | None -> "")
    0

/// `prompting benchmarks`: the table; with a name, which files go where; with --data, checks them.
let benchmarks (args: ParseResults<BenchmarksArgs>) =
    match args.TryGetResult BenchmarksArgs.Name with
    | Some name ->
        let b = Benchmarks.find name
        for line in Benchmarks.describe b do printfn "%s" line
        match args.TryGetResult BenchmarksArgs.Data with
        | Some data ->
            for line in Benchmarks.check b (Some data) (args.TryGetResult BenchmarksArgs.Split) do printfn "%s" line
        | None -> printfn "  (pass --data PATH to check the files)"
        0
    | None ->
        for b in Benchmarks.all do
            if args.Contains BenchmarksArgs.Names_Only then printfn "%s" b.Name
            else
                printfn "%-14s %s" b.Name b.Description
                printfn "%-14s   --data: %s" "" b.Layout
                let tasks = match b.DefaultTasks with Some n -> string n | None -> "one per part of --data"
                printfn "%-14s   tasks: %s; scenario: %s; splits: %s (default %s)" "" tasks (sprintf "%A" b.DefaultScenario)
                    (b.Splits |> List.map (fun s -> s.Name) |> String.concat ", ") (b.DefaultSplit None)
                for c in b.Checksums do printfn "%-14s   checksum: %s" "" c
        0

/// Compares several runs: a table on the terminal and an HTML report.
let report (args: ParseResults<ReportArgs>) =
    let summaries =
        [ for dir in args.GetResult ReportArgs.Runs -> Experiment.summaryOf dir ]
    Report.printComparison (Report.compare summaries)
    let output = args.GetResult(ReportArgs.Output, defaultValue = "comparison.html")
    Report.writeComparison output summaries
    printfn "report: %s" (Path.GetFullPath output)
    0
