module Prompting.Cli.Commands.Demo

open System
open System.IO
open Argu
open Prompting
open Prompting.Demo
open Prompting.Pretrain
open Prompting.Cli

/// The offline demo: data, backbone, the runs, a table on the terminal and the report's path.
let run (args: ParseResults<DemoArgs>) =
    let output = args.GetResult(DemoArgs.Out, defaultValue = Path.Combine("out", "demo"))
    let options =
        { Output = output
          CacheDirectory = args.GetResult(DemoArgs.Cache_Dir, defaultValue = Cache.defaultDirectory ())
          Data = args.TryGetResult DemoArgs.Data
          Device = Devices.parse (args.GetResult(DemoArgs.Device, defaultValue = "auto"))
          Threads = args.TryGetResult DemoArgs.Threads
          Log = fun line -> printfn "%s" line }
    let settings = DemoSettings.standard
    let result = Demo.run settings options
    printfn ""
    Report.printTable DemoReport.header (DemoReport.rows result.Runs)
    printfn "%s" (DemoReport.verdict settings.Baseline result.Runs)
    printfn "backbone: %s (%s)" result.Backbone.Path (if result.Backbone.Reused then "cached" else "pretrained now")
    printfn "time: %s in all, %s of it getting data and backbone" (Report.formatDuration result.TotalSeconds) (Report.formatDuration result.PretrainSeconds)
    printfn "report: %s" (Path.GetFullPath result.Report)
    0
