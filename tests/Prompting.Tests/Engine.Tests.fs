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
open Prompting.Tensors
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
    { Method = { method with Recipe = { method.Recipe with Epochs = 2; BatchSize = 8; LearningRate = 0.01; ScaleByBatch = false } }
      Benchmark = "synthetic"
      Data = None
      Checkpoint = checkpoint.Value
      Heads = None
      ImageSize = 32
      Tasks = 2
      Scenario = ClassIncremental
      Split = None
      ClassOrder = Natural
      TrainPerClass = None
      TestPerClass = None
      Normalisation = Normalised
      Seed = 3
      SkipCorrupt = false
      Validation = None }

let private run (cfg: RunConfig) (dir: string) (log: string -> unit) =
    let scenario = Scenario.build cfg.Scenario cfg.Tasks cfg.ClassOrder (syntheticDataset ())
    Run.execute (PreparedRun.ofConfig cfg) dir scenario (provider cfg.ImageSize cfg.Method.Recipe.BatchSize) torch.CPU { RunEvents.silent with Message = log }

exception private Killed

[<Tests>]
let tests =
    testSequenced
    <| testList
        "engine"
        [ test "a method composed outside the core trains with its own recipe, whatever its name" {
              let recipe = { Training.defaults with Epochs = 3; BatchSize = 5; LearningRate = 0.02 }
              let composed = { Methods.linear with Name = "my-probe"; Recipe = recipe }
              let outcome = run { config Methods.linear with Method = composed } (tempDir ()) ignore
              Expect.equal (outcome.Progress.EpochLosses |> List.map List.length) [ 3; 3 ] "the recipe's 3 epochs per task"
              let prepared =
                  Configure.resolve
                      { RunRequest.empty with
                          Method = Some(MethodValue composed); Benchmark = Some "imagefolder"; Data = Some "unused"
                          Checkpoint = Some checkpoint.Value; Epochs = Some 4 }
              Expect.equal prepared.Config.Method.Recipe { recipe with Epochs = 4 } "the one configuration path keeps the recipe, overriding only what is given"
          }

          test "the one configuration path: a base configuration's recipe survives the same --method" {
              let tuned = { Methods.l2p with Recipe = { Methods.l2p.Recipe with LearningRate = 0.123 } }
              let base' = { config Methods.l2p with Method = tuned; Benchmark = "imagefolder"; Data = Some "unused" }
              let resolve r = (Configure.resolve { r with Base = Some base' }).Config
              Expect.equal (resolve { RunRequest.empty with Method = Some(MethodNamed "l2p") }).Method.Recipe.LearningRate 0.123 "same name: the base's recipe"
              Expect.equal (resolve { RunRequest.empty with Method = Some(MethodNamed "dualprompt") }).Method.Recipe Methods.Recipes.dualPrompt "another method: its own recipe"
              Expect.equal (resolve { RunRequest.empty with Seed = Some 9 }).ClassOrder (Shuffled 9) "a new seed reshuffles the class order"
              Expect.equal (resolve RunRequest.empty).ClassOrder Natural "otherwise the base's class order"
              Expect.throwsT<PromptingError> (fun () -> Configure.resolve RunRequest.empty |> ignore) "no benchmark, no method: refused"
          }

          test "CODA's quarter-cosine schedule: rate · cos(99π·e / (200·(K − 1))) per epoch" {
              let t = { Methods.codaPrompt.Recipe with Epochs = 20 }
              Expect.equal t.Schedule QuarterCosine "CODA-Prompt's recipe uses it"
              Expect.equal Methods.l2pPlusPlus.Recipe.Schedule QuarterCosine "so do the CODA repository's L2P++ ..."
              Expect.equal (Methods.dualPromptCoda.Recipe.Schedule) QuarterCosine "... and DualPrompt"
              let at e = Schedules.rateAt t 1.0 e 0 10
              Expect.floatClose Accuracy.veryHigh (at 0) 1.0 "full rate at epoch 0"
              Expect.floatClose Accuracy.veryHigh (at 10) (cos (99.0 * Math.PI * 10.0 / 3800.0)) "epoch 10"
              Expect.floatClose { absolute = 1e-7; relative = 1e-5 } (at 19) 0.0157073 "ends near 1.6 % of the rate, not 0"
              Expect.floatClose Accuracy.veryHigh (Schedules.rateAt { t with Epochs = 1 } 0.5 0 3 10) 0.5 "a single epoch keeps the rate"
          }

          test "drop-last leaves out the last incomplete batch, but never a task's only batch" {
              let t = { Training.defaults with BatchSize = 5; DropLast = true }
              Expect.equal (Training.batchesPerEpoch t 12) 2 "12 images: two full batches"
              Expect.equal (Training.batchesPerEpoch t 3) 1 "3 images: the one batch stays"
              Expect.equal (Training.batchesPerEpoch { t with DropLast = false } 12) 3 "without drop-last: three"
              Expect.isTrue Methods.codaPrompt.Recipe.DropLast "the CODA repository's loaders drop the last batch"
              let cfg = { config Methods.linear with Method = { Methods.linear with Recipe = t } }
              let batches = Experiment.provider cfg
              let samples = (syntheticDataset ()).Train |> Array.truncate 12
              let sizes = batches.Train samples 0 |> Seq.map (fun b -> b.Count) |> List.ofSeq
              Expect.equal sizes [ 5; 5 ] "the loader drops the last 2 images"
              Expect.equal (batches.BatchesPerEpoch samples) 2 "and the step count agrees"
          }

          test "end-of-task state is owned by the head, saved per task, and exact after a kill at any point of the task's end" {
              let recalibrated =
                  { (config Methods.linear).Method with
                      Name = "linear-recalibrated"
                      Calibration = AlignedHead { Method.vqAlignment with Epochs = 2; SamplesPerClass = 8; BatchSize = 8 } }
              let cfg = { config Methods.linear with Method = recalibrated }
              let reference = run cfg (tempDir ()) ignore
              let dir = tempDir ()
              // Killed after the last epoch of task 2 was saved, before its end-of-task pass.
              let killer (line: string) = if line.StartsWith "task 2 epoch 2/2" then raise Killed
              Expect.throwsT<Killed> (fun () -> run cfg dir killer |> ignore) "interrupted at the end of task 2"
              let beforeEnd = tempDir ()
              for f in Directory.GetFiles(dir, "*", SearchOption.AllDirectories) do
                  let target = Path.Combine(beforeEnd, Path.GetRelativePath(dir, f))
                  Directory.CreateDirectory(Path.GetDirectoryName target) |> ignore
                  File.Copy(f, target)
              let counts d t = ExactFile.read (Run.lifecycleFile d t) |> List.find (fun (n, _) -> n = "head.alignment.counts") |> fun (_, c) -> Array.sum c.Values
              Expect.equal (counts beforeEnd 0) 24.0 "statistics of task 1's 24 images"
              let resumed = run cfg dir ignore
              Expect.equal resumed.Progress.Evaluations reference.Progress.Evaluations "same accuracy matrix after the end-of-task pass is redone"
              Expect.isFalse (File.Exists(Run.lifecycleFile dir 0)) "once task 2 is committed, task 1's lifecycle state is not kept"
              // The same kill, but after the task's lifecycle and trainable state were written and
              // before its progress: the pass starts again from task 1's state, not on top of task 2's.
              for f in [ Run.lifecycleFile beforeEnd 1; Run.taskStateFile beforeEnd 1 ] do
                  File.Copy(Path.Combine(dir, Path.GetRelativePath(beforeEnd, f)), f, true)
              let again = run cfg beforeEnd ignore
              Expect.equal again.Progress.Evaluations reference.Progress.Evaluations "same accuracy matrix again"
              Expect.equal (counts dir 1) 48.0 "then of all 48"
              Expect.equal (counts beforeEnd 1) 48.0 "no image counted twice"
          }

          test "a ridge head resumes exactly after a kill anywhere: projection, Gram and target matrices" {
              let smallRidge = RandomProjectionRidge { Method.ranpacRidge with ProjectionSize = 48 }
              let cfg = config { Methods.ranpac with Calibration = smallRidge }
              let logged = ResizeArray<string>()
              let reference = run cfg (tempDir ()) logged.Add
              let ends = [ for line in logged do if line.Contains " end: " then yield line ]
              Expect.equal ends.Length 2 "one end-of-task line per task"
              Expect.stringStarts ends[0] "task 1 end: ridge head: regulariser 10^" "the log names the regulariser chosen"
              for point in [ "task 1 epoch 1/2"; "task 1 epoch 2/2"; "task 1 end"; "after task 1"; "task 2 epoch 1/2"; "task 2 epoch 2/2"; "task 2 end" ] do
                  let dir = tempDir ()
                  let killer (line: string) = if line.StartsWith point then raise Killed
                  Expect.throwsT<Killed> (fun () -> run cfg dir killer |> ignore) ("killed at " + point)
                  let resumed = run cfg dir ignore
                  Expect.equal resumed.Progress.Evaluations reference.Progress.Evaluations ("same accuracy matrix after a kill at " + point)
              let dir = tempDir ()
              run cfg dir ignore |> ignore
              let saved = ExactFile.read (Run.lifecycleFile dir 1) |> Map.ofList
              Expect.equal saved["head.ridge.gram"].Shape [| 48L; 48L |] "G is saved exactly"
              Expect.equal saved["head.ridge.targets"].Shape [| 48L; 4L |] "Q over every class of the synthetic set"
          }

          test "--head on any method: ridge:M sets the projection, linear predicts from the adapted features (when the head learns on every task)" {
              match (Configure.withHead "ridge:500" Methods.ranpac).Calibration with
              | RandomProjectionRidge r -> Expect.equal r.ProjectionSize 500 "ridge:500"
              | other -> failtestf "expected a ridge head, got %A" other
              let bad = TestSupport.promptingError "ridge:x" (fun () -> Configure.withHead "ridge:x" Methods.ranpac |> ignore)
              TestSupport.expectMessage bad [ "--head ridge:x"; "positive integer" ] "one line naming the option"
              let trainedAper = Configure.withAdaptation "every-task" (Configure.withHead "linear" Methods.aperAdapter)
              Expect.equal trainedAper.HeadFeatures AdaptedFeatures "the trained cosine head reads g(x) only"
              Method.checkComposition trainedAper
              let frozenHead = TestSupport.promptingError "a trained head frozen after task 1" (fun () -> Method.checkComposition (Configure.withHead "linear" Methods.aperAdapter))
              TestSupport.expectMessage frozenHead [ "aper-adapter"; "first task only"; "never be learned" ] "says why, in one line"
              let ridgeL2p = Configure.withAdaptation "first-task" (Configure.withHead "ridge:64" Methods.l2p)
              Method.checkComposition ridgeL2p
          }

          test "an aligned head (slca) resumes exactly: killed mid-task, before and after its end-of-task work" {
              let slca =
                  { Methods.slca with
                      Calibration = AlignedHead { Method.slcaAlignment with SamplesPerClass = 8; BatchSize = 8; Epochs = 2 } }
              let cfg = { config slca with Method = { (config slca).Method with Recipe = { (config slca).Method.Recipe with LearningRate = 1e-3; HeadLearningRate = Some 0.01 } } }
              let referenceDir = tempDir ()
              let logged = ResizeArray<string>()
              let reference = run cfg referenceDir logged.Add
              // 4 classes × 8 samples in batches of 8, 2 epochs; nothing to align after task 1.
              Expect.equal [ for line in logged do if line.Contains " end: " then yield line.Substring(0, line.IndexOf " rate") ]
                  [ "task 2 end: head alignment: 8 steps," ] "the log says what the alignment did"
              // The lifecycle state after the last task and the aligned head that predicts.
              let final d =
                  (ExactFile.read (Run.lifecycleFile d 1) |> List.map (fun (n, t) -> n, t.Values)),
                  (Safetensors.read (Run.taskStateFile d 1) |> List.filter (fun (n, _) -> n.StartsWith "head.") |> List.map (fun (n, t) -> n, t.Values))
              let names = fst (final referenceDir) |> List.map fst
              Expect.containsAll names [ "head.alignment.second"; "head.alignment.seen_after"; "head.alignment.snapshot.fc.weight" ] "statistics and snapshot saved per task"
              for kill in [ "task 1 epoch 1/2"; "task 2 epoch 1/2"; "task 2 epoch 2/2"; "task 2 end" ] do
                  let dir = tempDir ()
                  Expect.throwsT<Killed> (fun () -> run cfg dir (fun line -> if line.StartsWith kill then raise Killed) |> ignore) kill
                  let resumed = run cfg dir ignore
                  Expect.equal resumed.Progress.Evaluations reference.Progress.Evaluations (kill + ": same accuracy matrix")
                  Expect.equal resumed.Progress.EpochLosses reference.Progress.EpochLosses (kill + ": same losses")
                  Expect.equal (final dir) (final referenceDir) (kill + ": identical statistics, snapshot and aligned head")
          }

          test "configurations written before VQ-Prompt's recalibration was an aligned head, or before the aligned head named its optimiser, read as what they ran" {
              let cfg = config Methods.vqPrompt
              let written (calibration: string) (recalibration: string option) =
                  let node = Text.Json.Nodes.JsonNode.Parse(Json.serialize cfg).AsObject()
                  let m = node["Method"].AsObject()
                  m["Calibration"] <- Text.Json.Nodes.JsonNode.Parse calibration
                  recalibration |> Option.iter (fun r -> m["Recalibration"] <- Text.Json.Nodes.JsonNode.Parse r)
                  let path = Path.Combine(tempDir (), "config.json")
                  File.WriteAllText(path, node.ToJsonString())
                  (Run.readConfigFile path).Method.Calibration
              let trained = Json.serialize TrainedHead
              let vq = written trained (Some """{"Epochs": 10, "SamplesPerClass": 512, "LearningRate": 1e-5, "FinalLearningRate": 1e-6, "WeightDecay": 5e-4, "VarianceFloor": 1e-4}""")
              Expect.equal vq (AlignedHead { Method.vqAlignment with BatchSize = cfg.Method.Recipe.BatchSize }) "the recalibration as the aligned head it was, in batches of the recipe's size"
              Expect.equal (written trained (Some "null")) TrainedHead "no recalibration: the trained head"
              let slca =
                  written """{"AlignedHead": {"Item": {"Covariance": {"FullCovariance": {"ridge": 0.0001}}, "SamplesPerClass": 256, "BatchSize": 256, "Epochs": 5, "LearningRate": 0.01, "Momentum": 0.9, "WeightDecay": 0.0005, "ShrinkOlderMeans": true, "LogitNormalisation": 0.1, "RestoreBeforeNextTask": true, "FreezeEarlierHeads": true}}}""" None
              Expect.equal slca (AlignedHead Method.slcaAlignment) "SGD with its momentum, the per-epoch cosine and full epochs"
          }

          test "format-1 run directories still load and resume; a newer format is refused naming it" {
              let cfg = config Methods.linear
              let dir = tempDir ()
              run cfg dir ignore |> ignore
              let configPath = Run.configFile dir
              let node = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText configPath).AsObject()
              let c = node["Config"].AsObject()
              let methodNode = c["Method"].AsObject()
              let recipe = methodNode["Recipe"].DeepClone().AsObject()
              recipe.Remove "DropLast" |> ignore
              methodNode.Remove "Recipe" |> ignore
              c["Training"] <- recipe
              node.Remove "FormatVersion" |> ignore
              File.WriteAllText(configPath, node.ToJsonString())
              Expect.equal (Run.readRecorded dir).Config cfg "format 1 reads as the same configuration"
              let resumed = run cfg dir ignore
              Expect.equal resumed.Progress.CompletedTasks 2 "a finished format-1 run resumes (nothing to do)"
              Expect.equal (Experiment.summaryOf dir).Method "linear" "and summarises"
              node["FormatVersion"] <- Text.Json.Nodes.JsonValue.Create 99
              File.WriteAllText(configPath, node.ToJsonString())
              let message = try Run.readRecorded dir |> ignore; "" with PromptingError m -> m
              Expect.stringContains message "format 99" "names the version"
          }

          test "the benchmark registry: one table of names, kinds, task splits and layouts" {
              let names = Benchmarks.all |> List.map (fun b -> b.Name)
              for expected in [ "imagefolder"; "cifar10"; "cifar100"; "fashion-mnist"; "imagenet-r"; "domains"; "sequence" ] do
                  Expect.contains names expected "registered benchmarks"
              Expect.equal (List.distinct names) names "names are unique"
              Expect.equal (Benchmarks.find "cifar100").DefaultTasks (Some 10) "Split CIFAR-100: 10 tasks"
              Expect.equal (Benchmarks.find "domains").DefaultScenario DomainIncremental "domains are domain-incremental"
              Expect.isNonEmpty (Benchmarks.find "cifar10").Checksums "known checksums are listed"
              let data = tempDir ()
              for d in [ "sketch"; "photo"; "clipart" ] do Directory.CreateDirectory(Path.Combine(data, d)) |> ignore
              Expect.equal (Benchmarks.defaultTasks (Benchmarks.find "domains") (Some data)) 3 "one task per domain directory"
              Expect.equal (Benchmarks.defaultTasks (Benchmarks.find "sequence") (Some "cifar10=a,fashion-mnist=b")) 2 "one per dataset"
          }

          test "ImageNet-R's seeded 80/20 split: per class, deterministic, disjoint" {
              let samples = [| for c in 0 .. 2 do for i in 0 .. 9 -> { Source = sprintf "r/%d/%02d.jpg" c i; Label = c; Load = fun () -> failwith "not read" } |]
              let split = Splits.perClass 0.8 0 "ImageNet-R" [| "a"; "b"; "c" |] samples
              Expect.equal (split.Train.Length, split.Test.Length) (24, 6) "8 + 2 per class"
              let sources (xs: Sample[]) = xs |> Array.map (fun s -> s.Source) |> Set.ofArray
              Expect.isTrue (Set.intersect (sources split.Train) (sources split.Test)).IsEmpty "disjoint"
              let again = Splits.perClass 0.8 0 "ImageNet-R" [| "a"; "b"; "c" |] (Array.rev samples)
              Expect.equal (sources again.Train) (sources split.Train) "independent of the listing order"
              let other = Splits.perClass 0.8 1 "ImageNet-R" [| "a"; "b"; "c" |] samples
              Expect.notEqual (sources other.Train) (sources split.Train) "another seed, another split"
          }

          test "adapting on the first task only: every trainable tensor bit-identical after task 1" {
              let cfg = config Methods.linear
              let dir = tempDir ()
              // Class means predict: a trained head frozen after task 1 alone is refused.
              let frozen = { cfg.Method with Adaptation = FirstTaskOnly; Calibration = ClassMeans }
              run { cfg with Method = frozen } dir ignore |> ignore
              let after t = Prompting.Tensors.Safetensors.read (Run.taskStateFile dir t) |> Map.ofList
              let first, second = after 0, after 1
              Expect.equal (Map.keys second |> List.ofSeq) (Map.keys first |> List.ofSeq) "same tensors"
              // The class means (buffers) take task 2's classes; the parameters must not move.
              use model = PromptedModel.build frozen (TaskLayout.uniform 2 10) (Checkpoint.load checkpoint.Value LoadOptions.defaults)
              let trainable = [ for struct (name, p) in model.named_parameters () do if p.requires_grad then yield name ]
              Expect.isNonEmpty trainable "the head trains"
              Expect.containsAll (Map.keys first) trainable "every trainable tensor is saved"
              for name in trainable do
                  Expect.equal second[name].Values first[name].Values (sprintf "%s unchanged by task 2" name)
              let everyTask = tempDir ()
              run cfg everyTask ignore |> ignore
              let moved = Prompting.Tensors.Safetensors.read (Run.taskStateFile everyTask 1) |> Map.ofList
              let firstHead = first["head.fc.weight"].Values
              Expect.notEqual moved["head.fc.weight"].Values firstHead "while every-task adaptation moves them"
          }

          test "APER and RanPAC through the engine: the adapter learns on task 1 only, the calibrated head predicts" {
              let smallRidge = RandomProjectionRidge { Method.ranpacRidge with ProjectionSize = 64 }
              for m in [ Methods.aperAdapter; Methods.aperSsf; { Methods.ranpac with Calibration = smallRidge } ] do
                  let dir = tempDir ()
                  let outcome = run (config m) dir ignore
                  let after t = Prompting.Tensors.Safetensors.read (Run.taskStateFile dir t) |> Map.ofList
                  let first, second = after 0, after 1
                  let trained = first |> Map.filter (fun name _ -> name.StartsWith "parallel_adapters." || name.StartsWith "ssf.")
                  Expect.isNonEmpty trained (m.Name + ": the module is saved")
                  for KeyValue(name, t) in trained do
                      Expect.equal second[name].Values t.Values (sprintf "%s: %s unchanged by task 2" m.Name name)
                  let initial = PromptedModel.build m (TaskLayout.uniform 2 10) (Checkpoint.load checkpoint.Value LoadOptions.defaults)
                  let moved =
                      [ for struct (name, p) in initial.named_parameters () do
                            if trained.ContainsKey name && (Prompting.Tests.Fixtures.host p).Values <> trained[name].Values then yield name ]
                  Expect.isNonEmpty moved (m.Name + ": task 1 trained the module")
                  Expect.equal (outcome.Progress.EpochLosses |> List.map List.length) [ 2; 2 ] (m.Name + ": epochs recorded for both tasks")
                  Expect.isTrue (outcome.Progress.EpochLosses[1] |> List.forall System.Double.IsNaN) (m.Name + ": no step on task 2")
                  let last = outcome.Progress.Evaluations |> List.last
                  let accuracy = last |> List.averageBy (fun e -> e.ClassIncremental)
                  // Ten classes in all: chance is 10 %; class means of the synthetic classes do far better.
                  Expect.isGreaterThan accuracy 30.0 (m.Name + ": the calibrated head predicts every class seen")
          }

          test "a trainable part that gets no gradient is an error naming it and its part" {
              // L2P with a parameter-free prototype head: the loss cannot reach the prompts.
              let broken = { (config Methods.l2p).Method with Name = "l2p-prototypes"; Head = PrototypeHead }
              let message =
                  try
                      run { config Methods.l2p with Method = broken } (tempDir ()) ignore |> ignore
                      ""
                  with PromptingError m -> m
              Expect.stringContains message "prompts.pool.layer0.prompt" "names the parameter"
              Expect.stringContains message "prompt group pool" "and its part"
              Expect.stringContains message "l2p-prototypes" "and the method"
          }

          test "configuration survives JSON" {
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
              let outcome = Run.execute (PreparedRun.ofConfig cfg) (tempDir ()) scenario (provider cfg.ImageSize cfg.Method.Recipe.BatchSize) torch.CPU RunEvents.silent
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
              let outcome = run { cfg with Method = { cfg.Method with Recipe = { cfg.Method.Recipe with Bf16 = true; Epochs = 1 } } } (tempDir ()) ignore
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
          }

          test "a run reports each step in the user's terms and records its tasks' classes and its warnings" {
              let cfg = config Methods.linear
              let scenario = Scenario.build cfg.Scenario cfg.Tasks cfg.ClassOrder (syntheticDataset ())
              let steps = ResizeArray<StepDone>()
              let events = { RunEvents.silent with Step = steps.Add }
              let dir = tempDir ()
              Run.execute (PreparedRun.ofConfig cfg) dir scenario (provider cfg.ImageSize cfg.Method.Recipe.BatchSize) torch.CPU events |> ignore
              // 2 tasks of 2 × 12 images, batch 8: 3 steps per epoch, 2 epochs.
              let expected =
                  [ for t in 1 .. 2 do
                        for e in 1 .. 2 do
                            for s in 1 .. 3 -> t, e, s ]
              Expect.equal [ for s in steps -> s.Task, s.Epoch, s.Step ] expected "task, epoch, step, in order"
              Expect.isTrue (steps |> Seq.forall (fun s -> s.Tasks = 2 && s.Epochs = 2 && s.Steps = 3 && s.Images = 8)) "totals and batch sizes"
              let progress = Run.readProgress dir
              Expect.equal progress.TaskClasses (Some [ [ "red"; "green" ]; [ "blue"; "yellow" ] ]) "natural order, by name"
              let recorded = defaultArg progress.Warnings []
              Expect.equal (List.head recorded)
                  "tasks 1-2: 6 optimiser steps per task (2 epochs × 3 batches of up to 8 for 24 training images), fewer than 10: lower --batch-size or raise --epochs"
                  "the plan's warning, recorded"
              let summary = Experiment.summaryOf dir
              Expect.equal summary.Warnings recorded "the summary shows what the run recorded"
              Expect.equal summary.EpochLosses progress.EpochLosses "losses per epoch"
              Expect.stringContains summary.Settings "method linear" "settings: method"
              for part in [ "image size 32"; "2 epochs"; "batch 8"; "lr 0.01"; "seed 3"; "frozen" ] do
                  Expect.stringContains summary.Settings part (sprintf "settings: %s" part)
          } ]
