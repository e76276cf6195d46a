namespace Prompting.Demo

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Engine
open Prompting.Pretrain

/// What one invocation of the demo needs besides the settings.
type DemoOptions =
    { Output: string
      CacheDirectory: string
      Data: string option
      Device: torch.Device
      /// libtorch's threads; None: all cores when they are idle, else one (see CpuThreads).
      Threads: int option
      Log: string -> unit }

/// A finished demo: the backbone, each method's summary, the report and the times it took.
[<NoEquality; NoComparison>]
type DemoResult =
    { Backbone: CachedBackbone
      Runs: RunSummary list
      Report: string
      PretrainSeconds: float
      TotalSeconds: float }

/// Runs the demo: data, backbone (cached or pretrained now), one run per method, table and report.
module Demo =
    let runsDirectory (output: string) = Path.Combine(output, "runs")
    let reportFile (output: string) = Path.Combine(output, "report.html")

    /// The run of one method, with the method's own recipe except where the demo says.
    let runConfig (s: DemoSettings) (checkpoint: string) (data: string) (methodName: string) : PreparedRun =
        let prepared =
            Configure.resolve
                { RunRequest.empty with
                    Method = Some(MethodNamed methodName)
                    Benchmark = Some "fashion-mnist"
                    Data = Some data
                    Checkpoint = Some checkpoint
                    Tasks = Some s.Tasks
                    Scenario = Some ClassIncremental
                    Epochs = Some s.Epochs
                    BatchSize = Some s.BatchSize
                    LearningRate = s.LearningRates.TryFind methodName
                    TrainPerClass = Some s.TrainPerClass
                    TestPerClass = Some s.TestPerClass
                    Seed = Some s.Seed }
        let config = prepared.Config
        match s.Alignment, config.Method.Calibration with
        | Some a, Prompting.Prompts.AlignedHead _ -> { prepared with Config = { config with Method = { config.Method with Calibration = Prompting.Prompts.AlignedHead a } } }
        | _ -> prepared

    /// Clears the directory of an earlier demo run of the same method, so every demo trains afresh
    /// (and a changed backbone never meets an old run). Anything else there is left alone.
    let private clearRun (dir: string) =
        if Directory.Exists dir then
            if File.Exists(Run.configFile dir) || Directory.GetFileSystemEntries(dir).Length = 0 then Directory.Delete(dir, true)
            else Errors.fail "%s: exists and is not a run directory; choose another --out" dir

    /// The class names of each task, in the scenario's (seeded) class order.
    let taskClasses (s: DemoSettings) =
        let names = Idx.fashionMnistClasses
        let order = Scenario.classOrder (Shuffled s.Seed) names.Length
        let perTask = names.Length / s.Tasks
        [ for t in 0 .. s.Tasks - 1 -> [ for k in 0 .. perTask - 1 -> names[order[t * perTask + k]] ] ]

    let run (s: DemoSettings) (o: DemoOptions) : DemoResult =
        let clock = Stopwatch.StartNew()
        CpuThreads.configure o.Threads o.Log |> ignore
        let data = DemoData.ensure (DemoData.system o.Log) o.Data
        o.Log(sprintf "data: Fashion-MNIST from %s" data)
        let dataset = Idx.fashionMnist data
        let images = UnlabelledImages.ofSamples dataset.Name dataset.Train
        let backbone = Cache.getOrTrain s.Backbone images o.CacheDirectory false o.Device o.Log
        let pretrainSeconds = clock.Elapsed.TotalSeconds
        let summaries =
            [ for name in s.Methods ->
                  let prepared = runConfig s backbone.Path data name
                  let dir = Path.Combine(runsDirectory o.Output, name)
                  clearRun dir
                  o.Log(sprintf "run: %s, %d tasks of %d classes, %d training images per class, %d epochs (%s)"
                          name s.Tasks (10 / s.Tasks) s.TrainPerClass s.Epochs dir)
                  let outcome = Runs.run prepared dir o.Device
                  Experiment.summary (Run.record prepared) outcome.Progress ]
        let report = reportFile o.Output
        DemoReport.write report s backbone (taskClasses s) summaries
        { Backbone = backbone
          Runs = summaries
          Report = report
          PretrainSeconds = pretrainSeconds
          TotalSeconds = clock.Elapsed.TotalSeconds }
