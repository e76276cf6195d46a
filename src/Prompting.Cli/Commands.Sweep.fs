module Prompting.Cli.Commands.Sweep

open System
open System.IO
open Argu
open Prompting
open Prompting.Engine
open Prompting.Sweep
open Prompting.Cli

let private runParser = lazy (ArgumentParser.Create<RunArgs>(programName = "prompting run"))

/// The run options parsed as `prompting run` parses them; one line on a bad option.
let private parseRun (options: string list) =
    try runParser.Force().ParseCommandLine(Array.ofList options, raiseOnUsage = true)
    with :? ArguParseException as e ->
        Errors.fail "sweep: run options %s: %s" (String.Join(" ", options)) ((e.Message.Split('\n')[0]).Trim())

/// The run configuration JSON of one (method, seed): exactly what `prompting run --config BASE
/// RUN-OPTIONS --method M --seed S` would run.
let configure (baseFile: string option) (runOptions: string list) (methodName: string) (seed: int) =
    let args =
        [ match baseFile with Some b -> yield! [ "--config"; b ] | None -> ()
          yield! runOptions
          yield! [ "--method"; methodName; "--seed"; string seed ] ]
    Json.serialize (Commands.Run.configure (parseRun args)).Config

/// Reads a point's configuration as `run --config` will, so a bad grid value fails here, once.
let check (what: string) (json: string) =
    try Json.deserialize<RunConfig> what json |> ignore
    with PromptingError message -> Errors.fail "sweep: a grid value does not fit the run configuration: %s" message

/// A method's run options: the shared ones, then its own.
let private optionsOf (spec: SweepSpec) (methodName: string) =
    spec.RunOptions @ (spec.MethodOptions |> List.tryFind (fun (m, _) -> m = methodName) |> Option.map snd |> Option.defaultValue [])

/// The points of a spec, with the run options checked: --method, --seed and --out belong to the sweep.
let points (spec: SweepSpec) =
    for m, _ in spec.MethodOptions do
        if not (List.contains m spec.Methods) then Errors.fail "sweep: run options for method %s, which is not among the methods" m
    for options in spec.RunOptions :: (spec.MethodOptions |> List.map snd) do
        let parsed = parseRun options
        if parsed.Contains RunArgs.Method then Errors.fail "sweep: give methods with --methods, not --method in the run options"
        if parsed.Contains RunArgs.Seed then Errors.fail "sweep: give seeds with --seeds, not --seed in the run options"
        if parsed.Contains RunArgs.Out then Errors.fail "sweep: --out in the run options: each point runs in DIR/runs/<point>"
    Definition.points spec (fun m seed -> configure spec.Base (optionsOf spec m) m seed) check

/// Options every child run gets besides its configuration: the device.
let private childOptions (runOptions: string list) =
    match (parseRun runOptions).TryGetResult RunArgs.Device with
    | Some d -> [ "--device"; d ]
    | None -> []

let private gpus (childOptions: string list) =
    match childOptions with
    // A CPU run, or an explicit cuda:N that a narrowed CUDA_VISIBLE_DEVICES would break.
    | [ "--device"; d ] when d.StartsWith "cpu" || d.Contains ':' -> 0
    | _ ->
        try if TorchSharp.torch.cuda.is_available () then TorchSharp.torch.cuda.device_count () else 0
        with _ -> 0

/// The spec from the sweep file (if any) and the flags: --methods and --seeds replace the file's,
/// --grid adds axes (or replaces the file's axis of the same field), run options after -- follow
/// the file's.
let spec (args: ParseResults<SweepArgs>) (inlineBase: string) =
    let fromFile =
        match args.TryGetResult SweepArgs.File with
        | Some f -> Definition.readFile f inlineBase
        | None -> { Base = None; RunOptions = []; Methods = []; MethodOptions = []; Seeds = []; Grid = []; Select = None; SelectSplit = None }
    let flagged = args.GetResults SweepArgs.Grid |> List.map Definition.parseGridFlag
    let grid =
        (fromFile.Grid |> List.filter (fun a -> not (flagged |> List.exists (fun f -> f.Field = a.Field)))) @ flagged
    let methods = args.TryGetResult SweepArgs.Methods |> Option.defaultValue fromFile.Methods
    { fromFile with
        Methods = methods
        MethodOptions = fromFile.MethodOptions |> List.filter (fun (m, _) -> List.contains m methods)
        Seeds = args.TryGetResult SweepArgs.Seeds |> Option.defaultValue fromFile.Seeds
        Grid = grid
        Select = args.TryGetResult SweepArgs.Select |> Option.orElse fromFile.Select
        SelectSplit = args.TryGetResult SweepArgs.Select_Split |> Option.orElse fromFile.SelectSplit |> Option.map (fun s -> s.Trim().ToLowerInvariant())
        RunOptions = fromFile.RunOptions @ args.GetResults SweepArgs.Run_Options }

/// The selection points of `--select-split NAME`: every point configured as `prompting run ...
/// --split NAME` would be (the split's own class-order rule included). Refused in one line when a
/// point's benchmark has no such split, or when the final runs would read that split too.
let splitPoints (spec: SweepSpec) (allPoints: SweepPoint list) (split: string) =
    let configOf (p: SweepPoint) = Json.deserialize<RunConfig> (sprintf "point %s" p.Name) p.Config
    for p in allPoints |> List.distinctBy _.Method do
        let c = configOf p
        let b = Benchmarks.find c.Benchmark
        if not (b.Splits |> List.exists (fun s -> s.Name = split)) then
            Errors.fail "sweep: --select-split %s: benchmark %s has no split %s (its splits: %s)" split b.Name split
                (b.Splits |> List.map _.Name |> String.concat ", ")
        if c.Split = Some split then
            Errors.fail "sweep: --select-split %s: the final runs of %s would use split %s too; they take the run options' --split or the benchmark's default (%s)"
                split p.Method split (b.DefaultSplit None)
    let selection = points { spec with RunOptions = spec.RunOptions @ [ "--split"; split ] }
    for p in selection do
        match (configOf p).Split with
        | Some s when s = split -> ()
        | other -> Errors.fail "sweep: --select-split %s: point %s would run on split %s (its method's run options name another)" split p.Name (defaultArg other "none")
    selection

let private log (line: string) =
    printfn "%s %s" (DateTime.Now.ToString "HH:mm:ss") line
    Console.Out.Flush()

let run (args: ParseResults<SweepArgs>) =
    match args.TryGetSubCommand() with
    | Some(SweepArgs.Status s) -> Sweeps.status (s.GetResult SweepStatusArgs.Dir)
    | _ ->
        let dir =
            match args.TryGetResult SweepArgs.Out with
            | Some d -> d
            | None -> Errors.fail "sweep: --out DIR is required (the sweep directory)"
        let executor =
            match args.GetResult(SweepArgs.Executor, defaultValue = "local") with
            | "local" -> LocalExecutor
            | "slurm" -> SlurmExecutor
            | other -> Errors.fail "sweep: --executor %s: expected local or slurm" other
        let inlineBase = Path.Combine(Path.GetTempPath(), sprintf "prompting-sweep-base-%s.json" (Guid.NewGuid().ToString "N"))
        try
            let spec = spec args inlineBase
            let allPoints = points spec
            let children = childOptions spec.RunOptions
            let options =
                { Executor = executor
                  Parallel = args.TryGetResult SweepArgs.Parallel
                  NoWait = args.Contains SweepArgs.No_Wait
                  Poll = TimeSpan.FromSeconds(args.GetResult(SweepArgs.Poll, defaultValue = 30.0))
                  Resources =
                    { Partition = args.TryGetResult SweepArgs.Partition
                      Time = args.TryGetResult SweepArgs.Time
                      CpusPerTask = args.TryGetResult SweepArgs.Cpus_Per_Task
                      Mem = args.TryGetResult SweepArgs.Mem
                      Gres = args.TryGetResult SweepArgs.Gres
                      Extra = args.GetResults SweepArgs.Sbatch_Line }
                  Gpus = (if executor = LocalExecutor then gpus children else 0)
                  WorkDir = Environment.CurrentDirectory
                  Command = Exec.selfCommand ()
                  ChildOptions = children }
            if options.Poll <= TimeSpan.Zero then Errors.fail "sweep: --poll must be positive"
            let finalPoints (choices: (string * (string * string) list) list) =
                [ for m, overrides in choices do
                      yield!
                          points
                              { spec with
                                  Methods = [ m ]
                                  Grid = overrides |> List.map (fun (f, v) -> { Field = f; Values = [ v ] }) } ]
            match spec.Select, spec.SelectSplit with
            | Some fraction, _ ->
                Prompting.Data.Validation.check fraction
                let value = fraction.ToString("R", Globalization.CultureInfo.InvariantCulture)
                let validationPoints =
                    allPoints |> List.map (fun p -> { p with Config = Definition.apply (sprintf "point %s" p.Name) p.Config [ "Validation", value ] })
                Selection.run dir (HeldOut fraction) validationPoints finalPoints options log
            | None, Some split ->
                let selectionPoints = splitPoints spec allPoints split
                Selection.run dir (NamedSplit split) selectionPoints finalPoints options log
            | None, None -> Sweeps.run dir allPoints options log
        finally
            try File.Delete inlineBase with _ -> ()
