module Prompting.Cli.Commands.Bench

open System
open System.Diagnostics
open System.IO
open Argu
open Prompting
open Prompting.Bench
open Prompting.Cli

/// Starts this same program (prompting.dll) as a measurement child, also from scripts that load it.
let private launcher : ChildLauncher =
    let self = typeof<BenchArgs>.Assembly.Location
    fun args -> ProcessStartInfo("dotnet", self :: args)

/// The options of a bench run from the command line (pure: no work is done here).
let options (args: ParseResults<BenchArgs>) : BenchOptions =
    let d = BenchOptions.defaults
    { d with
        Methods = args.GetResult(BenchArgs.Methods, defaultValue = d.Methods) |> List.collect (fun m -> m.Split(',', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray)
        Checkpoint = args.TryGetResult BenchArgs.Checkpoint
        Arch = args.GetResult(BenchArgs.Arch, defaultValue = d.Arch)
        Heads = args.TryGetResult BenchArgs.Heads
        ImageSize = args.TryGetResult BenchArgs.Image_Size
        BatchSize = args.GetResult(BenchArgs.Batch_Size, defaultValue = d.BatchSize)
        Threads = args.GetResult(BenchArgs.Threads, defaultValue = d.Threads)
        Warmup = args.GetResult(BenchArgs.Warmup, defaultValue = d.Warmup)
        Steps = args.GetResult(BenchArgs.Steps, defaultValue = d.Steps)
        Repeats = args.GetResult(BenchArgs.Repeats, defaultValue = d.Repeats)
        Device = args.GetResult(BenchArgs.Device, defaultValue = d.Device)
        Tasks = args.GetResult(BenchArgs.Tasks, defaultValue = d.Tasks)
        Classes = args.GetResult(BenchArgs.Classes, defaultValue = d.Classes)
        Task = args.GetResult(BenchArgs.Task, defaultValue = d.Task)
        Peer = not (args.Contains BenchArgs.No_Peer)
        Python = args.GetResult(BenchArgs.Python, defaultValue = d.Python)
        PeerScript = args.TryGetResult BenchArgs.Peer_Script
        Output = args.TryGetResult BenchArgs.Output
        Profile = args.Contains BenchArgs.Profile
        Seed = args.GetResult(BenchArgs.Seed, defaultValue = d.Seed)
        Bf16 = args.Contains BenchArgs.Bf16
        MatmulSize = args.TryGetResult BenchArgs.Matmul_Size
        QueryDepth = args.TryGetResult BenchArgs.Query_Depth }

let run (args: ParseResults<BenchArgs>) =
    match args.TryGetResult BenchArgs.Child, args.TryGetResult BenchArgs.Child_Output with
    | Some request, Some result ->
        BenchRun.child request result
        0
    | Some _, None
    | None, Some _ -> Errors.fail "bench: --child and --child-output go together"
    | None, None ->
        let o = options args
        let root = BenchRun.repositoryRoot (Path.GetDirectoryName(typeof<BenchArgs>.Assembly.Location)) |> Option.orElse (BenchRun.repositoryRoot Environment.CurrentDirectory)
        let report = BenchRun.run o launcher root (fun line -> eprintfn "%s" line)
        printf "%s" (BenchReport.text report)
        o.Output |> Option.iter (fun dir -> eprintfn "wrote %s" (Path.Combine(dir, "bench.md")))
        if report.Rows |> List.exists (fun r -> r.OursError.IsSome) then 1 else 0
