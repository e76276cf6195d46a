module Prompting.Cli.Program

open System
open Argu
open Prompting

/// Parses and dispatches; every failure becomes one line on stderr and a non-zero exit code.
let run (argv: string[]) =
    let parser = ArgumentParser.Create<CliArgs>(programName = "prompting")
    try
        match (parser.ParseCommandLine(argv, raiseOnUsage = true)).GetSubCommand() with
        | Predict args -> Commands.Predict.run args
        | Info args -> Commands.Info.run args
        | Convert args -> Commands.Info.convert args
        | Create args -> Commands.Create.run args
        | Methods args -> Commands.Methods.list args
        | Forward args -> Commands.Methods.forward args
        | Run args -> Commands.Run.run args
        | Eval args -> Commands.Run.eval args
        | Benchmarks args -> Commands.Run.benchmarks args
        | Report args -> Commands.Run.report args
        | Bench args -> Commands.Bench.run args
        | Pretrain args -> Commands.Pretrain.run args
        | Demo args -> Commands.Demo.run args
        | Sweep args -> Commands.Sweep.run args
    with
    | :? ArguParseException as e when e.ErrorCode = ErrorCode.HelpText ->
        printfn "%s" e.Message
        0
    | :? ArguParseException as e ->
        // Argu appends the whole usage and starts with its own "ERROR:"; one line and a pointer
        // to --help is clearer.
        let first = (e.Message.Split('\n')[0]).Trim()
        let text = if first.StartsWith("ERROR:", StringComparison.OrdinalIgnoreCase) then first.Substring(6).TrimStart() else first
        eprintfn "error: %s (see --help)" text
        2
    | PromptingError message ->
        eprintfn "error: %s" message
        1
    | :? Runtime.InteropServices.ExternalException as e ->
        eprintfn "error: libtorch: %s" (e.Message.Split('\n')[0])
        1
    | :? IO.IOException as e ->
        eprintfn "error: %s" e.Message
        1
    | :? UnauthorizedAccessException as e ->
        eprintfn "error: %s" e.Message
        1

[<EntryPoint>]
let main argv = run argv
