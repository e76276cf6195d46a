module Prompting.Tests.Engine

open System
open System.IO
open Expecto
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Prompts
open Prompting.Engine
open Prompting.Tests.Fixtures

/// Four colour-coded classes of 16×16 images with a little seeded noise.
let private syntheticDataset () =
    let colours = [| 220uy, 30uy, 30uy; 30uy, 220uy, 30uy; 30uy, 30uy, 220uy; 220uy, 220uy, 30uy |]
    let image (c: int) (index: int) =
        let rng = Random(c * 1000 + index)
        let r, g, b = colours[c]
        let jitter (v: byte) = byte (max 0 (min 255 (int v + rng.Next(-40, 41))))
        { Width = 16; Height = 16; Pixels = Array.init (16 * 16 * 3) (fun i -> jitter (match i % 3 with 0 -> r | 1 -> g | _ -> b)) }
    let samples split count =
        [| for c in 0 .. 3 do
               for i in 0 .. count - 1 ->
                   let offset = if split = "test" then 500 else 0
                   { Source = sprintf "synthetic/%s/%d/%d" split c i; Label = c; Load = fun () -> image c (i + offset) } |]
    { Name = "synthetic"; ClassNames = [| "red"; "green"; "blue"; "yellow" |]; Train = samples "train" 12; Test = samples "test" 6 }

/// The data layer's loader: seeded shuffling and augmentation for training, evaluation transform in order.
let private provider (size: int) (batchSize: int) : BatchProvider =
    let options = { LoaderOptions.Defaults with BatchSize = batchSize; Seed = 11; Workers = 2 }
    let train = Transforms.training Normalised Preprocessing.augreg size
    let eval = Transforms.evaluation Normalised Preprocessing.augreg size
    { Train = (fun samples epoch -> Loader.epoch { options with Shuffle = true } train samples epoch)
      Eval = (fun samples -> Loader.epoch { options with Shuffle = false } eval samples 0)
      BatchesPerEpoch = fun samples -> Loader.batchCount options samples.Length }

let private checkpoint =
    lazy
        (let path = Path.Combine(tempDir (), "vit-engine.safetensors")
         torch.manual_seed 5L |> ignore
         use model = new VisionTransformer(VitConfig.custom 32 8 5 64 2 10)
         Checkpoint.export path model
         path)

let private config (method: Method) =
    { Method = method
      Benchmark = "synthetic"
      Data = None
      Checkpoint = checkpoint.Value
      Heads = None
      ImageSize = 32
      Tasks = 2
      Scenario = ClassIncremental
      ClassOrder = Natural
      TrainPerClass = None
      TestPerClass = None
      Training = { Recipes.forMethod method.Name with Epochs = 2; BatchSize = 8; LearningRate = 0.01; ScaleByBatch = false }
      Normalisation = Normalised
      Seed = 3
      SkipCorrupt = false
      Validation = None }

let private run (cfg: RunConfig) (dir: string) (log: string -> unit) =
    let scenario = Scenario.build cfg.Scenario cfg.Tasks cfg.ClassOrder (syntheticDataset ())
    Run.execute cfg dir scenario (provider cfg.ImageSize cfg.Training.BatchSize) torch.CPU { RunEvents.silent with Message = log }

exception private Killed

[<Tests>]
let tests =
    testSequenced
    <| testList
        "engine"
        [ test "configuration survives JSON" {
              let cfg = config Methods.codaPrompt
              let back = Json.deserialize<RunConfig> "test" (Json.serialize cfg)
              Expect.equal back cfg "round trip"
          }

          test "a class-incremental run fills the accuracy matrix" {
              let dir = tempDir ()
              let outcome = run (config Methods.linear) dir ignore
              Expect.equal outcome.Progress.CompletedTasks 2 "two tasks"
              Expect.equal (outcome.Progress.Evaluations |> List.map List.length) [ 1; 2 ] "lower-triangular rows"
              Expect.isTrue (File.Exists(Run.taskStateFile dir 1)) "per-task state"
              // A linear probe on colour classes learns something: better than chance on task 1.
              Expect.isGreaterThan outcome.Progress.Evaluations[1].[1].TaskIncremental 50.0 "task-IL accuracy above chance"
          }

          test "killed mid-run, the same command resumes and reaches the same result" {
              let cfg = config Methods.l2p
              let reference = run cfg (tempDir ()) ignore
              let dir = tempDir ()
              let mutable epochs = 0
              let killer (line: string) =
                  if line.Contains "epoch" then
                      epochs <- epochs + 1
                      if epochs = 3 then raise Killed
              Expect.throwsT<Killed> (fun () -> run cfg dir killer |> ignore) "interrupted in task 2"
              let resumed = run cfg dir ignore
              Expect.equal resumed.Progress.Evaluations reference.Progress.Evaluations "same accuracy matrix"
              Expect.equal resumed.Progress.EpochLosses reference.Progress.EpochLosses "same losses"
          }

          test "domain-incremental: every task has all classes, evaluation over all of them" {
              let bright = syntheticDataset ()
              let dim =
                  { bright with
                      Name = "dim"
                      Train = bright.Train |> Array.map (fun s -> { s with Load = fun () -> let i = s.Load() in { i with Pixels = i.Pixels |> Array.map (fun v -> v / 2uy) } })
                      Test = bright.Test |> Array.map (fun s -> { s with Load = fun () -> let i = s.Load() in { i with Pixels = i.Pixels |> Array.map (fun v -> v / 2uy) } }) }
              let scenario = Scenario.ofDomains [ { bright with Name = "bright" }; dim ]
              Expect.equal (TaskLayout.total scenario.Layout) 4 "one head over the shared classes"
              Expect.equal (TaskLayout.seen scenario.Layout 0) 4 "all classes seen from the first domain on"
              Expect.equal (scenario.Tasks |> Array.map (fun t -> t.Classes)) [| [| 0 .. 3 |]; [| 0 .. 3 |] |] "classes per domain"
              let cfg = { config Methods.linear with Scenario = DomainIncremental }
              let outcome = Run.execute cfg (tempDir ()) scenario (provider cfg.ImageSize cfg.Training.BatchSize) torch.CPU RunEvents.silent
              Expect.equal (outcome.Progress.Evaluations |> List.map List.length) [ 1; 2 ] "two domains evaluated"
              let mismatched = { dim with ClassNames = [| "a"; "b"; "c"; "d" |] }
              Expect.throwsT<PromptingError> (fun () -> Scenario.ofDomains [ bright; mismatched ] |> ignore) "domains must share classes"
          }

          test "5-datasets style: each dataset a task, labels offset so classes stay disjoint" {
              let a = { syntheticDataset () with Name = "a" }
              let b = { syntheticDataset () with Name = "b"; ClassNames = [| "w"; "x"; "y"; "z" |] }
              let scenario = Scenario.ofDatasets [ a; b ]
              Expect.equal scenario.Layout.ClassesPerTask [ 4; 4 ] "a task per dataset"
              Expect.equal scenario.Tasks[1].Classes [| 4 .. 7 |] "second dataset's classes after the first's"
              Expect.equal (scenario.Tasks[1].Train |> Array.map (fun s -> s.Label) |> Array.distinct |> Array.sort) [| 4 .. 7 |] "relabelled"
              Expect.equal scenario.ClassNames[4] "b/w" "names qualified by dataset"
          }

          test "a bf16 run of a prompt method completes and evaluates" {
              let cfg = config Methods.l2p
              let outcome = run { cfg with Training = { cfg.Training with Bf16 = true; Epochs = 1 } } (tempDir ()) ignore
              Expect.equal outcome.Progress.CompletedTasks 2 "two tasks"
              Expect.all (outcome.Progress.Evaluations |> List.concat) (fun e -> e.ClassIncremental >= 0.0 && e.ClassIncremental <= 100.0) "accuracies"
          }

          test "resuming with a changed configuration is refused, naming the difference" {
              let dir = tempDir ()
              let cfg = config Methods.linear
              run { cfg with Tasks = 1; Scenario = Joint } dir ignore |> ignore
              let message =
                  try
                      run { cfg with Tasks = 1; Scenario = Joint; Seed = 4 } dir ignore |> ignore
                      ""
                  with PromptingError m -> m
              Expect.stringContains message "Seed: 3 -> 4" "names the changed field"
          } ]
