/// The calibrated heads side by side with the official RanPAC, SLCA and VQ-Prompt code: the fixtures
/// in tests/fixtures/heads were computed by that code (make_head_fixtures.py and make_vq_fixture.py
/// import and run it) on
/// the same features, the same random projection and the same sampled features fed here.
module Prompting.Tests.PromptsSideBySide

open System.IO
open Expecto
open TorchSharp
open Prompting.Prompts
open Prompting.Tensors
open Prompting.Tests.Fixtures

let private load (name: string) =
    let path = fixture (Path.Combine("heads", name + ".npz"))
    if File.Exists path then Some(Npz.read path |> Map.ofList) else None

let private tensor (t: HostTensor) = HostTensor.toTensor t

let private values (t: torch.Tensor) = (host t).Values

let private rows (t: torch.Tensor) (first: int64) (count: int64) = values (t.narrow (0, first, count))

let private scalar (t: HostTensor) = float t.Values[0]

/// Feeds the official code's inputs through our ridge head, task by task, and compares G, Q, the
/// regulariser chosen, the readout and the logits on test features.
let private ranpac (f: Map<string, HostTensor>) =
    let tasks, perTask = int (scalar f["tasks"]), int (scalar f["classes_per_task"])
    let wRand = f["w_rand"]
    let d, m = int wRand.Shape[0], int wRand.Shape[1]
    let classes = tasks * perTask
    let settings = { ProjectionSize = m; RidgeExponents = [ -8 .. 8 ]; FitFraction = 0.8 }
    use head = new ClassifierHead(LinearHead, d, d, classes, false, RandomProjectionRidge settings)
    head.eval ()
    let ridge = head.Ridge.Value
    do
        use _ = torch.no_grad ()
        use w = tensor wRand
        (ridge.get_buffer "projection").copy_ w |> ignore
    use test = tensor f["test_features"]
    for t in 0 .. tasks - 1 do
        let seen = int64 ((t + 1) * perTask)
        use features = tensor f[sprintf "features_%d" t]
        use labels = (tensor f[sprintf "labels_%d" t]).to_type torch.int64
        ridge.Observe(features, labels)
        // The official loader's (shuffled) order is the order of the fixture's rows.
        ridge.FitInObservedOrder()
        let state = Map.ofList (ridge.State())
        let exact (name: string) = state[name].Values |> Array.map float32
        Expect.isLessThan (relativeError (exact "gram") f[sprintf "gram_%d" t].Values) 1e-6 (sprintf "task %d: G" t)
        Expect.isLessThan (relativeError (exact "targets") f[sprintf "targets_%d" t].Values) 1e-6 (sprintf "task %d: Q" t)
        Expect.floatClose Accuracy.high (log10 ridge.Regulariser) (log10 (scalar f[sprintf "lambda_%d" t])) (sprintf "task %d: λ" t)
        let readout = ridge.get_buffer "readout"
        Expect.isLessThan (relativeError (rows readout 0L seen) f[sprintf "readout_%d" t].Values) 1e-5 (sprintf "task %d: W_out" t)
        if seen < int64 classes then
            Expect.allEqual (rows readout seen (int64 classes - seen)) 0.0f (sprintf "task %d: no readout for unseen classes" t)
        // What the head predicts with once calibrated (its forward after EndTask is these logits).
        use logits = ridge.Logits test
        Expect.isLessThan (relativeError (values (logits.narrow (1, 0L, seen))) f[sprintf "logits_%d" t].Values) 1e-5 (sprintf "task %d: logits" t)

/// A linear head over `seen` classes holding the official head's weights.
let private linearFrom (weight: HostTensor) (bias: HostTensor) =
    let linear = torch.nn.Linear(weight.Shape[1], weight.Shape[0])
    use _ = torch.no_grad ()
    use w = tensor weight
    use b = tensor bias
    linear.weight.copy_ w |> ignore
    linear.bias.copy_ b |> ignore
    linear

/// Our statistics, shrink, loss, gradient and alignment steps against SLCA's on the same inputs.
let private slca (f: Map<string, HostTensor>) =
    let taskSize, epochs = int (scalar f["task_size"]), int (scalar f["epochs"])
    let features = f["features"]
    let classes = int f["means"].Shape[0]
    let tasks = classes / taskSize
    let stats = ClassGaussians(true)
    use x = tensor features
    use y = (tensor f["labels"]).to_type torch.int64
    stats.Add(x, y)
    for c in 0 .. classes - 1 do
        use mean = (stats.Mean c).to_type torch.float32
        use covariance = stats.Covariance(c, 1e-4).to_type torch.float32
        Expect.isLessThan (relativeError (values mean) (rows (tensor f["means"]) (int64 c) 1L)) 1e-6 (sprintf "class %d: mean" c)
        Expect.isLessThan (relativeError (values covariance) (rows (tensor f["covariances"]) (int64 c) 1L)) 1e-6 (sprintf "class %d: covariance + 1e-4 I" c)
    let config = { Method.slcaAlignment with Epochs = epochs }
    for t in 1 .. tasks - 1 do
        let seen = (t + 1) * taskSize
        let seenAfter = [ for k in 0 .. t -> (k + 1) * taskSize ]
        let blocks = Alignment.blocks seenAfter
        // The Gaussians sampled from: shrunk means (scaled in float64, then float32) and covariances.
        for c in 0 .. seen - 1 do
            use shrunk = (stats.Mean c * Alignment.shrink (Alignment.taskOf seenAfter c) t).to_type torch.float32
            Expect.isLessThan (relativeError (values shrunk) (rows (tensor f[sprintf "loc_%d" t]) (int64 c) 1L)) 1e-6 (sprintf "task %d, class %d: shrunk mean" t c)
            use covariance = stats.Covariance(c, 1e-4).to_type torch.float32
            Expect.isLessThan (relativeError (values covariance) (rows (tensor f[sprintf "cov_%d" t]) (int64 c) 1L)) 1e-6 (sprintf "task %d, class %d: covariance sampled from" t c)
        use samples = tensor f[sprintf "samples_%d" t]
        use sampleLabels = (tensor f[sprintf "sample_labels_%d" t]).to_type torch.int64
        let perEpoch = samples.shape[0] / int64 epochs
        Expect.equal perEpoch (int64 (seen * config.SamplesPerClass)) "the official code samples 256 per class per epoch"
        // The logit-normalised loss and its gradient on the first batch, from the head before alignment.
        do
            use head = linearFrom f[sprintf "head_weight_before_%d" t] f[sprintf "head_bias_before_%d" t]
            use logits = head.forward (samples.narrow (0, 0L, int64 config.BatchSize))
            use loss = Alignment.loss config blocks logits (sampleLabels.narrow (0, 0L, int64 config.BatchSize))
            loss.backward ()
            Expect.floatClose Accuracy.high (float (loss.item<float32> ())) (float f[sprintf "loss_%d" t].Values[0]) (sprintf "task %d: first loss" t)
            Expect.isLessThan (relativeError (values head.weight.grad) f[sprintf "grad_weight_%d" t].Values) 1e-5 (sprintf "task %d: weight gradient" t)
            Expect.isLessThan (relativeError (values head.bias.grad) f[sprintf "grad_bias_%d" t].Values) 1e-5 (sprintf "task %d: bias gradient" t)
        // The whole alignment on the official code's batches: every step's loss, and the head after.
        use head = linearFrom f[sprintf "head_weight_before_%d" t] f[sprintf "head_bias_before_%d" t]
        let epochSamples (e: int) = (samples.narrow (0, int64 e * perEpoch, perEpoch)).clone (), (sampleLabels.narrow (0, int64 e * perEpoch, perEpoch)).clone ()
        let steps = Alignment.train config head.forward [ head.weight; head.bias ] seen (seen - taskSize) blocks perEpoch epochSamples
        Expect.isLessThan (relativeError (steps |> List.map (fun s -> float32 s.Loss) |> Array.ofList) f[sprintf "loss_%d" t].Values) 1e-5 (sprintf "task %d: every step's loss" t)
        Expect.isLessThan (relativeError (values head.weight) f[sprintf "head_weight_after_%d" t].Values) 1e-5 (sprintf "task %d: aligned weights" t)
        Expect.isLessThan (relativeError (values head.bias) f[sprintf "head_bias_after_%d" t].Values) 1e-5 (sprintf "task %d: aligned biases" t)

/// VQ-Prompt's classifier-bias mitigation against the official trainer's: the statistics, every
/// sample drawn from the same seed, each step's rate and loss, and the head after, with the official
/// quirks (short epochs, the first step's rate) named in the configuration.
let private vq (f: Map<string, HostTensor>) =
    let dims = f["dims"].Values |> Array.map int
    let perTask, tasks = dims[1], dims[2]
    let settings = f["settings"].Values |> Array.map float
    let samplesPerClass, epochs, rate, weightDecay = int settings[0], int settings[1], settings[2], settings[3]
    let config =
        { Method.vqAlignment with
            SamplesPerClass = samplesPerClass
            BatchSize = samplesPerClass
            Epochs = epochs
            LearningRate = rate
            WeightDecay = weightDecay
            EpochLength = BatchPerEarlierClass
            RateSchedule = CosinePerStepQuirk(rate * 10.0, 1e-6) }
    let stats = ClassGaussians(false)
    for t in 1 .. tasks - 1 do
        let seen = (t + 1) * perTask
        let earlier = t * perTask
        // The statistics of every class seen so far, as the end of each task adds them.
        for c in (if t = 1 then 0 else earlier) .. seen - 1 do
            use x = tensor f[sprintf "features_%d" c]
            use y = torch.tensor (Array.create (int x.shape[0]) (int64 c))
            stats.Add(x, y)
        for c in earlier .. seen - 1 do
            use mean = (stats.Mean c).to_type torch.float32
            use variance = (stats.Covariance(c, 0.0)).to_type torch.float32
            Expect.isLessThan (relativeError (values mean) f[sprintf "mean_%d" c].Values) 1e-6 (sprintf "class %d: mean" c)
            Expect.isLessThan (relativeError (values variance) f[sprintf "variance_%d" c].Values) 1e-5 (sprintf "class %d: population variance" c)
        // The same seed draws the same samples, class by class, then the same shuffle.
        torch.manual_seed (int64 f[sprintf "seed_%d" t].Values[0]) |> ignore
        let classes = [ for c in 0 .. seen - 1 -> c, 1.0 ]
        let drawn = [ for _ in 1 .. epochs -> Alignment.sample config stats classes torch.CPU ]
        for e, (samples, labels) in List.indexed drawn do
            Expect.isLessThan (relativeError (values samples) f[sprintf "samples_%d_%d" t e].Values) 1e-5 (sprintf "task %d, epoch %d: samples drawn" t e)
            Expect.equal (values (labels.to_type torch.float32)) f[sprintf "labels_%d_%d" t e].Values (sprintf "task %d, epoch %d: their labels" t e)
        // The alignment on the official samples: every step's rate and loss, and the head after.
        use head = linearFrom f[sprintf "head_weight_before_%d" t] f[sprintf "head_bias_before_%d" t]
        let epochSamples (e: int) = tensor f[sprintf "samples_%d_%d" t e], (tensor f[sprintf "labels_%d_%d" t e]).to_type torch.int64
        let steps = Alignment.train config head.forward [ head.weight; head.bias ] seen earlier [] (int64 (seen * samplesPerClass)) epochSamples
        Expect.equal steps.Length (epochs * earlier) "one batch per earlier class in each epoch"
        Expect.isLessThan (relativeError (steps |> List.map (fun s -> float32 s.Rate) |> Array.ofList) f[sprintf "rate_%d" t].Values) 1e-7 (sprintf "task %d: every step's rate" t)
        Expect.isLessThan (relativeError (steps |> List.map (fun s -> float32 s.Loss) |> Array.ofList) f[sprintf "loss_%d" t].Values) 1e-5 (sprintf "task %d: every step's loss" t)
        Expect.isLessThan (relativeError (values head.weight) f[sprintf "head_weight_after_%d" t].Values) 1e-5 (sprintf "task %d: aligned weights" t)
        Expect.isLessThan (relativeError (values head.bias) f[sprintf "head_bias_after_%d" t].Values) 1e-5 (sprintf "task %d: aligned biases" t)
        for s, l in drawn do
            s.Dispose()
            l.Dispose()

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompts/side-by-side"
        [ test "RanPAC (official RanPAC.py): G, Q, λ, W_out and logits on the same features and W_rand" {
              match load "ranpac" with
              | Some f -> ranpac f
              | None -> skiptest "tests/fixtures/heads/ranpac.npz is absent"
          }
          test "VQ-Prompt (official trainer.py): statistics, samples from the same seed, rates, losses and the aligned head" {
              match load "vq" with
              | Some f -> vq f
              | None -> skiptest "tests/fixtures/heads/vq.npz is absent"
          }
          test "SLCA (official models/slca.py): statistics, shrunk means, logit-normalised loss, gradient and alignment steps" {
              match load "slca" with
              | Some f -> slca f
              | None -> skiptest "tests/fixtures/heads/slca.npz is absent"
          } ]
