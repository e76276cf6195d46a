namespace Prompting.Engine

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Prompts

/// A whole experiment from a RunConfig: data, scenario, training with resumption, metrics and report.
module Experiment =
    let metricsFile dir = Path.Combine(dir, "metrics.json")
    let reportFile dir = Path.Combine(dir, "report.html")

    /// Validates what can be checked before any data is read.
    let validate (c: RunConfig) =
        Benchmarks.find c.Benchmark |> ignore
        if c.Tasks < 1 then Errors.fail "--tasks %d: must be at least 1" c.Tasks
        if c.Scenario = Joint && c.Tasks <> 1 then Errors.fail "joint training is one task, but --tasks is %d" c.Tasks
        if c.Training.Epochs < 1 then Errors.fail "--epochs %d: must be at least 1" c.Training.Epochs
        if c.Training.BatchSize < 1 then Errors.fail "--batch-size %d: must be at least 1" c.Training.BatchSize
        if c.Training.LearningRate <= 0.0 then Errors.fail "--lr %g: must be positive" c.Training.LearningRate
        if c.ImageSize < 1 then Errors.fail "--image-size %d: must be positive" c.ImageSize
        match c.TrainPerClass, c.TestPerClass with
        | Some n, _ when n < 1 -> Errors.fail "--train-per-class %d: must be at least 1" n
        | _, Some n when n < 1 -> Errors.fail "--test-per-class %d: must be at least 1" n
        | _ -> ()
        if not (File.Exists c.Checkpoint) then Errors.fail "%s: checkpoint not found" c.Checkpoint

    let private subset (c: RunConfig) (d: Dataset) =
        match c.TrainPerClass, c.TestPerClass with
        | None, None -> d
        | train, test -> Dataset.subset c.Seed (defaultArg train Int32.MaxValue) (defaultArg test Int32.MaxValue) d

    /// Reads the benchmark's data and splits it into tasks.
    let scenario (c: RunConfig) (log: string -> unit) =
        let reportSkipped (skipped: Skipped list) =
            if not skipped.IsEmpty then
                log (sprintf "skipped %d unreadable files (--skip-corrupt), e.g. %s: %s" skipped.Length skipped.Head.Path skipped.Head.Reason)
        match c.Benchmark with
        | "sequence" ->
            let datasets = [ for name, path in Benchmarks.sequenceParts c.Data -> Benchmarks.loadNamed name path c.SkipCorrupt reportSkipped |> subset c ]
            Scenario.ofDatasets datasets
        | name ->
            let dataset = Benchmarks.loadNamed name c.Data c.SkipCorrupt reportSkipped |> subset c
            Scenario.build c.Scenario c.Tasks c.ClassOrder dataset

    /// Decoding and augmentation through the parallel loader, with the backbone's preprocessing.
    let provider (c: RunConfig) : BatchProvider =
        // Two batches ahead: what Runtime.noCollection budgets for while a step runs.
        let options = { LoaderOptions.Defaults with BatchSize = c.Training.BatchSize; Seed = c.Seed; Prefetch = 2 }
        let train = Transforms.training c.Normalisation Preprocessing.augreg c.ImageSize
        let eval = Transforms.evaluation c.Normalisation Preprocessing.augreg c.ImageSize
        { Train = fun samples epoch -> Loader.epoch { options with Shuffle = true } train samples epoch
          Eval = fun samples -> Loader.epoch options eval samples 0
          BatchesPerEpoch = fun samples -> Loader.batchCount options samples.Length }

    /// The report's view of a run.
    let summary (c: RunConfig) (dir: string) (progress: RunProgress) (trainable: int64) =
        let evaluations = progress.Evaluations |> List.map Array.ofList |> Array.ofList
        let recorded = Json.deserialize<Run.Recorded> (Run.configFile dir) (File.ReadAllText(Run.configFile dir))
        { Method = c.Method.Name
          Seed = c.Seed
          Metrics = Metrics.ofEvaluations evaluations
          TrainSeconds = progress.TrainSeconds
          PeakMemoryBytes = Process.GetCurrentProcess().PeakWorkingSet64
          TrainableParameters = trainable
          Checkpoint = recorded.CheckpointFile
          CheckpointSha256 = recorded.CheckpointSha256
          ConfigJson = File.ReadAllText(Run.configFile dir) }

    /// metrics.json, metrics.csv, summary.csv and report.html from the progress so far.
    let writeOutputs (c: RunConfig) (dir: string) (progress: RunProgress) (trainable: int64) =
        if not progress.Evaluations.IsEmpty then
            let s = summary c dir progress trainable
            Metrics.writeJson (metricsFile dir) s.Metrics
            Metrics.writeCsv (Path.Combine(dir, "metrics.csv")) (Path.Combine(dir, "summary.csv")) s.Metrics
            Report.writeRun (reportFile dir) s

    /// Runs or resumes the experiment in `dir`; log lines also go to dir/log.txt.
    let run (c: RunConfig) (dir: string) (device: torch.Device) =
        validate c
        // Before any data is read or logged: a refused resume leaves the directory untouched.
        Run.checkResumable c dir
        Directory.CreateDirectory dir |> ignore
        let logPath = Run.logFile dir
        let append (line: string) = File.AppendAllText(logPath, sprintf "%s %s%s" (DateTime.Now.ToString "yyyy-MM-dd HH:mm:ss") line Environment.NewLine)
        let scenario = scenario c append
        let batches = provider c
        let steps = scenario.Tasks |> Array.sumBy (fun t -> int64 c.Training.Epochs * int64 (batches.BatchesPerEpoch t.Train))
        Progress.run (sprintf "%s on %s" c.Method.Name c.Benchmark) steps (fun reporter ->
            let events =
                { Message = fun line -> append line; reporter.Message line
                  Step = fun () -> reporter.Advance 1
                  TaskDone = fun progress -> writeOutputs c dir progress progress.TrainableParameters }
            let outcome = Run.execute c dir scenario batches device events
            writeOutputs c dir outcome.Progress outcome.TrainableParameters
            outcome)
