/// The aligned head (SLCA's classifier alignment) on tiny sizes, against values computed by hand:
/// statistics, the shrink of older means, logit normalisation, re-training toward the class means,
/// the stage-1 head restored when the next task begins, per-task heads, and an exact resume.
module Prompting.Tests.PromptsAlignment

open System.IO
open Expecto
open TorchSharp
open Prompting.Prompts
open Prompting.Engine
open Prompting.Tensors
open Prompting.Tests.Fixtures
open Prompting.Tests.TestSupport

let private values (t: torch.Tensor) = (host t).Values

let private part (head: ClassifierHead) = head :> ITaskPart

let private ending (task: int) (seen: int) = { Task = task; SeenClasses = seen }

let private alignedHead (config: ClassAlignment) (width: int) (classes: int) =
    new ClassifierHead(LinearHead, width, width, classes, false, AlignedHead config, truncatedNormal = 0.02)

/// The final layer's weight and bias.
type private Final = { weight: Modules.Parameter; bias: Modules.Parameter }

let private fc (head: ClassifierHead) =
    let table = Map.ofList [ for struct (n, p) in head.named_parameters () -> n, p ]
    { weight = table["fc.weight"]; bias = table["fc.bias"] }

/// `perClass` features of each class c around 3·e_(c mod D), spread 0.1, with their labels.
let private around (classes: int list) (width: int) (perClass: int) =
    let means = torch.eye (int64 width) * 3.0f
    use ids = torch.tensor ([| for c in classes do for _ in 1 .. perClass -> int64 c |])
    use rows = torch.tensor ([| for c in classes do for _ in 1 .. perClass -> int64 (c % width) |])
    let features = means.index_select (0L, rows) + torch.randn (ids.shape[0], int64 width) * 0.1f
    features, ids.clone ()

let private observe (head: ClassifierHead) (classes: int list) =
    let f, y = around classes 4 20
    (part head).ObserveFeatures(f, y)

let private setWeights (head: ClassifierHead) (weight: torch.Tensor) =
    use _ = torch.no_grad ()
    (fc head).weight.copy_ weight |> ignore
    (fc head).bias.zero_ () |> ignore

let private small = { Method.slcaAlignment with SamplesPerClass = 16; BatchSize = 16; Epochs = 2 }

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompts/alignment"
        [ test "shrink of older means, task blocks and the task of a class, by hand" {
              Expect.floatClose Accuracy.veryHigh (Alignment.shrink 0 1) 0.95 "task 0 aligned at task 1: 0.9 + 0.1·1/2"
              Expect.floatClose Accuracy.veryHigh (Alignment.shrink 1 1) 1.0 "the current task keeps its means"
              Expect.floatClose Accuracy.veryHigh (Alignment.shrink 0 2) (0.9 + 0.1 / 3.0) "task 0 at task 2"
              Expect.floatClose Accuracy.veryHigh (Alignment.shrink 1 2) (0.9 + 0.2 / 3.0) "task 1 at task 2"
              Expect.equal (Alignment.blocks [ 2; 4; 7 ]) [ 0, 2; 2, 4; 4, 7 ] "blocks from the classes seen after each task"
              Expect.equal (Alignment.blocks [ 10; 10 ]) [ 0, 10 ] "a task that adds no class has no block"
              Expect.equal [ for c in 0 .. 6 -> Alignment.taskOf [ 2; 4; 7 ] c ] [ 0; 0; 1; 1; 2; 2; 2 ] "the task of each class"
          }

          test "logit normalisation: z / (mean of the per-task block norms · τ), and its cross-entropy, by hand" {
              // Blocks (3, 4) and (0, 1): norms 5 and 1, mean 3; τ = 0.1 divides by 0.3.
              use logits = tensorOf2 [| 3.0f; 4.0f; 0.0f; 1.0f |] [| 1L; 4L |]
              let blocks = [ 0, 2; 2, 4 ]
              use normalised = Alignment.normaliseLogits 0.1 blocks logits
              let n = ((5.0 + 1e-7) + (1.0 + 1e-7)) / 2.0
              let expected = [| 3.0; 4.0; 0.0; 1.0 |] |> Array.map (fun z -> float32 (z / n / 0.1))
              Expect.isLessThan (relativeError (values normalised) expected) 1e-6 "normalised logits"
              use label = torch.tensor ([| 1L |])
              use loss = Alignment.loss Method.slcaAlignment blocks logits label
              let e = expected |> Array.map float
              let byHand = log (e |> Array.sumBy exp) - e[1]
              Expect.floatClose Accuracy.medium (float (loss.item<float32> ())) byHand "CE of the normalised logits"
              use plain = Alignment.loss { Method.slcaAlignment with LogitNormalisation = None } blocks logits label
              Expect.floatClose Accuracy.medium (float (plain.item<float32> ())) (log (exp 3.0 + exp 4.0 + 1.0 + exp 1.0) - 4.0) "plain CE without it"
          }

          test "class Gaussians: the unbiased full covariance plus ridge, and the diagonal population variance, by hand" {
              use f = tensorOf2 [| 1.0f; 2.0f; 3.0f; 6.0f; 5.0f; 4.0f; 9.0f; 9.0f |] [| 4L; 2L |]
              use y = torch.tensor ([| 0L; 0L; 0L; 3L |])
              let full = ClassGaussians(true)
              full.Add(f.narrow (0, 0L, 2L), y.narrow (0, 0L, 2L))
              full.Add(f.narrow (0, 2L, 2L), y.narrow (0, 2L, 2L))
              Expect.equal full.Classes [ 0; 3 ] "classes"
              Expect.equal (full.Count 0) 3 "count over two batches"
              Expect.equal ((full.Mean 0).data<double>().ToArray()) [| 3.0; 4.0 |] "mean"
              // Centred rows (−2, −2), (0, 2), (2, 0): Σ = [[8, 4], [4, 8]] / 2.
              let cov = (full.Covariance(0, 1e-4)).data<double>().ToArray()
              Expect.sequenceEqual (cov |> Array.map (fun v -> System.Math.Round(v, 10))) [| 4.0001; 2.0; 2.0; 4.0001 |] "(S − nμμᵀ)/(n − 1) + 1e-4·I"
              let diagonal = ClassGaussians(false)
              diagonal.Add(f, y)
              let variance = (diagonal.Covariance(0, 1e-4)).data<double>().ToArray()
              let expected = System.Math.Round(8.0 / 3.0 + 1e-4, 10)
              Expect.sequenceEqual (variance |> Array.map (fun v -> System.Math.Round(v, 10))) [| expected; expected |] "population variance + floor"
          }

          test "alignment re-trains the head toward the class means on separable Gaussians" {
              torch.manual_seed 4L |> ignore
              let config = { Method.slcaAlignment with SamplesPerClass = 64; BatchSize = 64; Epochs = 10; LearningRate = 0.1; FreezeEarlierHeads = false }
              use head = alignedHead config 4 4
              (part head).BeginTask 0
              observe head [ 0; 1 ]
              Expect.isEmpty ((part head).EndTask(ending 0 2)) "nothing to report after the first task: no alignment"
              (part head).BeginTask 1
              observe head [ 2; 3 ]
              // Each row points at the next class's mean: every class mean is misclassified.
              use misaligned = torch.roll (torch.eye 4L, [| 1L |], [| 1L |])
              setWeights head misaligned
              use means = torch.eye 4L * 3.0f
              use before = head.forward means
              Expect.notEqual (before.argmax(1L).data<int64>().ToArray()) [| 0L .. 3L |] "misclassified before"
              torch.manual_seed 5L |> ignore
              let report = (part head).EndTask(ending 1 4)
              // 4 classes × 64 samples in batches of 64: 4 steps per epoch, 10 epochs.
              Expect.equal report.Length 1 "one line for the run's log"
              Expect.stringStarts report.Head "head alignment: 40 steps, rate 0.1 → " "steps and first rate"
              let losses = (report.Head.Split "loss ").[1].Split " → " |> Array.map float
              Expect.isLessThan losses[1] losses[0] "the loss of the last step is below the first's"
              use after = head.forward means
              Expect.equal (after.argmax(1L).data<int64>().ToArray()) [| 0L .. 3L |] "every class mean classified as its class after"
              let weight = (fc head).weight
              for c in 0 .. 3 do
                  use row = weight.select (0, int64 c)
                  use cosine = torch.nn.functional.cosine_similarity (row.unsqueeze 0L, (means.select (0, int64 c)).unsqueeze 0L, 1L)
                  Expect.isGreaterThan (cosine.item<float32> ()) 0.0f (sprintf "row %d turned toward its class mean (cosine 0 before)" c)
              let snapshot = Map.ofList head.Alignment.Value.Snapshot
              Expect.isTrue (sameValues snapshot["fc.weight"] misaligned) "the snapshot holds the head before the alignment"
          }

          test "the head before alignment predicts no more: restored when the next task begins; unseen rows drawn afresh; earlier heads frozen" {
              torch.manual_seed 6L |> ignore
              use head = alignedHead small 4 6
              let weight, bias = (fc head).weight, (fc head).bias
              (part head).BeginTask 0
              use a = torch.arange(24.0f).reshape (6L, 4L) / 24.0f
              setWeights head a
              observe head [ 0; 1 ]
              (part head).EndTask(ending 0 2) |> ignore
              Expect.isTrue (sameValues weight a) "no alignment after the first task"
              (part head).BeginTask 1
              Expect.isTrue (sameValues (weight.narrow (0, 0L, 2L)) (a.narrow (0, 0L, 2L))) "rows of task 0 from the snapshot"
              use fresh = weight.narrow (0, 2L, 4L)
              Expect.isFalse (sameValues fresh (a.narrow (0, 2L, 4L))) "rows of unseen classes drawn afresh"
              Expect.isLessThan (fresh.abs().max().item<float32> ()) 0.1f "truncated normal, std 0.02"
              Expect.isTrue (sameValues (bias.narrow (0, 2L, 4L)) (torch.zeros 4L)) "their bias 0"
              // Stage-1 training moves every row (weight decay reaches even rows without gradient).
              do
                  use _ = torch.no_grad ()
                  weight.add_ (1.0f.ToScalar()) |> ignore
              use trained = weight.detach().clone ()
              observe head [ 2; 3 ]
              torch.manual_seed 7L |> ignore
              (part head).EndTask(ending 1 4) |> ignore
              let stage1 = (Map.ofList head.Alignment.Value.Snapshot)["fc.weight"]
              Expect.isTrue (sameValues (stage1.narrow (0, 0L, 2L)) (a.narrow (0, 0L, 2L))) "task 0's rows were put back before the snapshot"
              Expect.isTrue (sameValues (stage1.narrow (0, 2L, 4L)) (trained.narrow (0, 2L, 4L))) "the current task's rows as trained"
              Expect.isFalse (sameValues (weight.narrow (0, 0L, 4L)) (stage1.narrow (0, 0L, 4L))) "the aligned head differs from stage 1"
              use aligned = weight.detach().clone ()
              (part head).BeginTask 2
              Expect.isTrue (sameValues (weight.narrow (0, 0L, 4L)) (stage1.narrow (0, 0L, 4L))) "fc.recall(): the next task starts from the stage-1 heads"
              // Without the restore, the next task starts from the aligned head.
              torch.manual_seed 6L |> ignore
              use kept = alignedHead { small with RestoreBeforeNextTask = false } 4 6
              (part kept).BeginTask 0
              setWeights kept a
              observe kept [ 0; 1 ]
              (part kept).EndTask(ending 0 2) |> ignore
              (part kept).BeginTask 1
              observe kept [ 2; 3 ]
              (part kept).EndTask(ending 1 4) |> ignore
              use alignedKept = (fc kept).weight.detach().clone ()
              (part kept).BeginTask 2
              Expect.isTrue (sameValues ((fc kept).weight.narrow (0, 0L, 4L)) (alignedKept.narrow (0, 0L, 4L))) "RestoreBeforeNextTask = false keeps the aligned rows"
              Expect.isFalse (sameValues aligned (stage1)) "sanity: aligned and stage-1 heads differ"
          }

          test "resume: statistics, classes seen and the snapshot come back exactly, and the next task ends identically" {
              let run (resumeAfterTask1: bool) =
                  torch.manual_seed 8L |> ignore
                  let head = alignedHead small 4 6
                  (part head).BeginTask 0
                  observe head [ 0; 1 ]
                  (part head).EndTask(ending 0 2) |> ignore
                  (part head).BeginTask 1
                  observe head [ 2; 3 ]
                  (part head).EndTask(ending 1 4) |> ignore
                  let head =
                      if not resumeAfterTask1 then head
                      else
                          // What a killed run leaves: the lifecycle file and the head's parameters.
                          let file = Path.Combine(tempDir (), "task-01.lifecycle")
                          ExactFile.write file ((part head).LifecycleState())
                          let saved = [ for struct (n, p) in head.named_parameters () -> n, p.detach().clone () ]
                          head.Dispose()
                          torch.manual_seed 99L |> ignore
                          let resumed = alignedHead small 4 6
                          (part resumed).RestoreLifecycleState(ExactFile.read file)
                          do
                              use _ = torch.no_grad ()
                              let table = Map.ofList saved
                              for struct (n, p) in resumed.named_parameters () do p.copy_ table[n] |> ignore
                          let again = (part resumed).LifecycleState()
                          let original = ExactFile.read file
                          Expect.equal (List.map fst again) (List.map fst original) "the same state names"
                          for (n, x), (_, y) in List.zip again original do
                              Expect.equal x.Shape y.Shape (n + ": shape")
                              Expect.isTrue ((x.Values, y.Values) ||> Array.forall2 (fun u v -> u = v)) (n + ": values exact")
                          resumed
                  torch.manual_seed 9L |> ignore
                  (part head).BeginTask 2
                  observe head [ 4; 5 ]
                  torch.manual_seed 10L |> ignore
                  (part head).EndTask(ending 2 6) |> ignore
                  let names = (part head).LifecycleState() |> List.map fst
                  let result = host (fc head).weight, host (fc head).bias
                  head.Dispose()
                  names, result
              let names, (w, b) = run false
              let _, (w2, b2) = run true
              Expect.containsAll names [ "alignment.classes"; "alignment.counts"; "alignment.sums"; "alignment.second"; "alignment.seen_after"; "alignment.snapshot.fc.weight"; "alignment.snapshot.fc.bias" ] "documented state names"
              expectBitExact w2 w "weights after the third task"
              expectBitExact b2 b "biases after the third task"
          }

          test "VQ-Prompt's instance by hand: AdamW's first step, the per-step cosine, every drawn sample, nothing restored" {
              let config = { Method.vqAlignment with SamplesPerClass = 3; BatchSize = 2; Epochs = 2; LearningRate = 0.1; RateSchedule = CosinePerStep 0.01 }
              use head = torch.nn.Linear(4L, 2L)
              use samples = tensorOf2 [| 1.0f; 0.0f; 0.0f; 0.0f; 0.0f; 1.0f; 0.0f; 0.0f; 2.0f; 0.0f; 0.0f; 0.0f
                                         0.0f; 2.0f; 0.0f; 0.0f; 1.0f; 1.0f; 0.0f; 0.0f; 0.0f; 3.0f; 1.0f; 0.0f |] [| 6L; 4L |]
              use labels = torch.tensor ([| 0L; 1L; 0L; 1L; 0L; 1L |])
              // AdamW's first step by hand: p ← p(1 − η·λ) − η·g/(|g| + ε) (m̂ = g, v̂ = g²).
              let w0, b0 = head.weight.detach().clone (), head.bias.detach().clone ()
              let gradients: torch.Tensor * torch.Tensor =
                  use w = w0.clone().requires_grad_ true
                  use b = b0.clone().requires_grad_ true
                  use logits = torch.nn.functional.linear (samples.narrow (0, 0L, 2L), w, b)
                  use loss = torch.nn.functional.cross_entropy (logits, labels.narrow (0, 0L, 2L))
                  loss.backward ()
                  w.grad.clone (), b.grad.clone ()
              let expected (p: torch.Tensor) (g: torch.Tensor) = values (p * (1.0 - 0.1 * 5e-4) - g / (g.abs () + 1e-8) * 0.1)
              let one = { config with Epochs = 1; EpochLength = BatchPerEarlierClass }
              let first = Alignment.train one head.forward [ head.weight; head.bias ] 2 1 [] 6L (fun _ -> samples.clone (), labels.clone ())
              Expect.equal (first |> List.map (fun s -> s.Rate)) [ 0.1 ] "one step, at the rate"
              Expect.isLessThan (relativeError (values head.weight) (expected w0 (fst gradients))) 1e-5 "AdamW's first step (weights)"
              Expect.isLessThan (relativeError (values head.bias) (expected b0 (snd gradients))) 1e-5 "AdamW's first step (biases)"
              let steps = Alignment.train config head.forward [ head.weight; head.bias ] 2 1 [] 6L (fun _ -> samples.clone (), labels.clone ())
              Expect.equal steps.Length 6 "every drawn sample: 3 batches (2, 2, 2) in each of 2 epochs"
              for k, step in List.indexed steps do
                  Expect.floatClose Accuracy.veryHigh step.Rate (0.01 + 0.5 * (0.1 - 0.01) * (1.0 + cos (System.Math.PI * float k / 6.0))) (sprintf "step %d: cosine from 0.1 toward 0.01" k)
              let quirk = { config with RateSchedule = CosinePerStepQuirk(1.0, 0.01); EpochLength = BatchPerEarlierClass }
              Expect.equal (Alignment.batchesPerEpoch quirk 6L 1) 1L "the official epochs: one batch per earlier class"
              Expect.equal (Alignment.batchesPerEpoch quirk 6L 5) 3L "never more than the samples hold"
              Expect.equal [ for k in 0L .. 3L -> Alignment.rate quirk 0 k 4L ] [ 1.0; Alignment.rate config 0 0L 4L; Alignment.rate config 0 1L 4L; Alignment.rate config 0 2L 4L ] "the first step at its own rate, then the cosine one step late"
              // Nothing restored and no snapshot kept: the aligned head trains on from where it was.
              torch.manual_seed 4L |> ignore
              use aligned = alignedHead { Method.vqAlignment with SamplesPerClass = 16; BatchSize = 16; Epochs = 2; LearningRate = 0.05 } 4 4
              observe aligned [ 0; 1 ]
              (part aligned).EndTask(ending 0 2) |> ignore
              observe aligned [ 2; 3 ]
              (part aligned).EndTask(ending 1 4) |> ignore
              let afterAlignment = values (fc aligned).weight
              (part aligned).BeginTask 2
              Expect.equal (values (fc aligned).weight) afterAlignment "the next task starts from the aligned head"
              Expect.isEmpty aligned.Alignment.Value.Snapshot "no snapshot kept"
              let described = Describe.head Methods.vqPrompt
              for part in [ "diagonal covariance"; "512 per class"; "AdamW lr 1e-05"; "cosine to 1e-06 per step" ] do
                  Expect.stringContains described part "`prompting methods --details` says how VQ-Prompt's head is aligned"
          }

          test "a cosine head (RanPAC's, APER's) takes the aligned head: its rows and scale re-trained toward the class means" {
              torch.manual_seed 6L |> ignore
              let config = { Method.slcaAlignment with SamplesPerClass = 64; BatchSize = 64; Epochs = 10; LearningRate = 0.1; FreezeEarlierHeads = false; RestoreBeforeNextTask = false; LogitNormalisation = None }
              use head = new ClassifierHead(CosineHead, 4, 4, 4, false, AlignedHead config)
              Expect.isTrue head.Alignment.IsSome "aligned"
              observe head [ 0; 1 ]
              (part head).EndTask(ending 0 2) |> ignore
              // Every row points away from its class mean: only the alignment can fix that.
              do
                  use _ = torch.no_grad ()
                  (head.get_parameter "weight").copy_ (torch.eye 4L * -1.0f) |> ignore
              let sigma = values (head.get_parameter "sigma")
              observe head [ 2; 3 ]
              (part head).EndTask(ending 1 4) |> ignore
              head.eval ()
              use probe = torch.eye 4L * 3.0f
              use logits = head.forward probe
              Expect.equal (logits.argmax(1L).data<int64>().ToArray()) [| 0L .. 3L |] "each class mean classified as its class"
              Expect.notEqual (values (head.get_parameter "sigma")) sigma "the scale σ re-trained with the rows"
              Method.checkComposition (Configure.withHead "aligned" Methods.ranpac)
          }

          test "a VQ-Prompt run saved before its recalibration was an aligned head resumes with its statistics" {
              torch.manual_seed 5L |> ignore
              let f, y = around [ 0; 1; 2 ] 4 10
              use _ = f
              use _ = y
              let old = ClassStatistics()
              old.Add(f, y)
              use head = alignedHead Method.vqAlignment 4 4
              (part head).RestoreLifecycleState(old.ToExact())
              let stats = head.Alignment.Value.Statistics
              Expect.equal stats.Classes [ 0; 1; 2 ] "the classes"
              for c in 0 .. 2 do
                  Expect.isLessThan (relativeError (values ((stats.Mean c).to_type torch.float32)) (old.Mean c |> Array.map float32)) 1e-12 (sprintf "class %d: mean" c)
                  Expect.isLessThan (relativeError (values ((stats.Covariance(c, 0.0)).to_type torch.float32)) (old.Variance c |> Array.map float32)) 1e-6 (sprintf "class %d: variance" c)
          }

          test "slca: its recipe (slow learner, MultiStep ×0.1 at 18), composition and head initialisation" {
              let m = Methods.find "slca" 10
              Expect.equal m.Backbone FullBackbone "the whole backbone trains"
              Expect.equal m.TrainingLogits CurrentTaskClasses "loss on the current task's logits"
              Expect.equal m.Calibration (AlignedHead Method.slcaAlignment) "the aligned head"
              Expect.equal (m.Recipe.LearningRate, m.Recipe.HeadLearningRate) (1e-4, Some 0.01) "backbone 1e-4, head 0.01"
              Expect.equal (m.Recipe.Optimizer, m.Recipe.WeightDecay, m.Recipe.BatchSize, m.Recipe.Epochs) (Sgd 0.9, 5e-4, 128, 20) "SGD 0.9, wd 5e-4, 128, 20 epochs"
              let rate epoch = Schedules.rateAt m.Recipe 0.01 epoch 3 10
              Expect.equal [ rate 0; rate 17 ] [ 0.01; 0.01 ] "the full rate to epoch 17"
              Expect.floatClose Accuracy.veryHigh (rate 18) 0.001 "×0.1 from epoch 18"
              Expect.floatClose Accuracy.veryHigh (rate 19) 0.001 "still ×0.1 at epoch 19"
              Expect.floatClose Accuracy.veryHigh (Schedules.rateAt { m.Recipe with Schedule = MultiStep([ 2; 4 ], 0.5) } 1.0 5 0 10) 0.25 "two milestones passed"
              Method.checkComposition m
              use head = alignedHead Method.slcaAlignment 128 50
              let w = (fc head).weight
              Expect.isTrue ((fc head).bias.eq(0.0f.ToScalar()).all().item<bool> ()) "bias 0"
              let std = w.std().item<float32> ()
              Expect.isTrue (std > 0.018f && std < 0.022f) (sprintf "weights' std near 0.02 (got %g)" std)
              Expect.stringContains (Describe.head m) "aligned" "`prompting methods` names the aligned head"
          }

          test "--head aligned and --adapt slow-learner resolve as documented; impossible combinations refused in one line" {
              Expect.equal (Configure.withHead "aligned" Methods.linear).Calibration (AlignedHead Method.slcaAlignment) "SLCA's alignment for a method without one"
              let vq = Configure.withHead "aligned" Methods.vqPrompt
              Expect.equal vq.Calibration (AlignedHead Method.vqAlignment) "VQ-Prompt keeps its own alignment"
              Expect.equal (Configure.withHead "aligned" Methods.slca) Methods.slca "slca keeps its own"
              let coda = Configure.withHead "aligned" Methods.codaPrompt
              Method.checkComposition coda
              Expect.equal (Configure.withHead "linear" Methods.slca).Calibration TrainedHead "--head linear drops the alignment"
              let slow = Configure.withAdaptation "slow-learner" Methods.full
              Expect.equal (slow.Recipe.LearningRate, slow.Recipe.HeadLearningRate, slow.Adaptation) (1e-6, Some 1e-4, EveryTask) "all but the head at 1/100 of the head's rate"
              let message = promptingError "slow learner on a linear probe" (fun () -> Configure.withAdaptation "slow-learner" Methods.linear)
              expectMessage message [ "slow-learner"; "linear"; "besides its head" ] "says why"
              let unknown = promptingError "an unknown --adapt" (fun () -> Configure.withAdaptation "sometimes" Methods.l2p)
              expectMessage unknown [ "--adapt sometimes"; "every-task, first-task, slow-learner" ] "names the option and every choice"
              Expect.equal (Configure.withAdaptation " First-Task " Methods.l2p).Adaptation FirstTaskOnly "case and spaces ignored, as for --head"
              let prototype = promptingError "aligned prototypes" (fun () -> Method.checkComposition (Configure.withHead "aligned" Methods.simpleCil))
              expectMessage prototype [ "simplecil"; "prototypes" ] "says why"
          } ]
