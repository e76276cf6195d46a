/// The training step: allocation stability (live tensors stay flat over many steps), no host
/// reads inside a step, and gradient clipping that stays on the device.
module Prompting.Tests.EngineTrain

open System
open Expecto
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Prompts
open Prompting.Engine
open Prompting.Tests.Fixtures

let private layout = TaskLayout.uniform 2 10

let private codaSmall =
    { Methods.codaPrompt with
        Groups = [ { Methods.codaPrompt.Groups.Head with Source = Components { Components = 10; OrthogonalityWeight = 0.1 } } ] }

/// Seeded random 32 px batches of task 1's classes (5..9).
let private batches (count: int) (epoch: int) : Batch seq =
    let rng = Random(100 + epoch)
    Seq.init count (fun i ->
        { Index = i
          Count = 4
          Size = 32
          Pixels = Array.init (4 * 3 * 32 * 32) (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
          Labels = Array.init 4 (fun _ -> int64 (5 + rng.Next 5))
          Indices = Array.init 4 id })

/// Trains task 1 of `method` for `epochs` epochs of `steps` steps with the method's own recipe.
let private train (method: Method) (epochs: int) (steps: int) (stepDone: unit -> unit) (epochDone: int -> float -> unit) =
    torch.manual_seed 3L |> ignore
    use model = PromptedModel.build method layout (Checkpoint.load (fixture "vit_depth5.safetensors") { LoadOptions.defaults with Heads = Some 2 })
    model.BeginTask 1
    let recipe = { method.Recipe with Epochs = epochs; BatchSize = 4 }
    Trainer.trainTask model recipe torch.CPU steps (batches steps) 0 ignore (fun _ _ _ -> stepDone ()) (fun e loss _ -> epochDone e loss)

let private methods = [ Methods.l2p; Methods.dualPrompt 2; codaSmall; Methods.vqPrompt; Methods.vptDeep; Methods.linear ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "engine.train"
        [ test "the live tensor count stays flat over many training steps" {
              for method in methods do
                  let counts = Collections.Generic.List<int64>()
                  let count () =
                      // Finalising garbage (of earlier tests too) must not move the count.
                      GC.Collect()
                      GC.WaitForPendingFinalizers()
                      counts.Add torch.Tensor.TotalCount
                  train method 2 6 count (fun _ _ -> ())
                  // The first step may create lasting state (gradients); after it nothing accumulates.
                  let settled = counts |> Seq.skip 1 |> Seq.distinct |> List.ofSeq
                  Expect.equal settled.Length 1 (sprintf "%s: live tensors after each step %A" method.Name (List.ofSeq counts))
          }

          test "thousands of steps on a tiny model: live native tensors and resident memory stay flat" {
              torch.manual_seed 4L |> ignore
              let config = VitConfig.custom 16 8 1 16 1 0
              use model = PromptedModel.build Methods.l2p (TaskLayout.uniform 2 4) (new VisionTransformer(config))
              model.BeginTask 1
              let rng = Random 5
              let steps = 2000
              let tiny =
                  Seq.init steps (fun i ->
                      { Index = i; Count = 2; Size = 16
                        Pixels = Array.init (2 * 3 * 16 * 16) (fun _ -> float32 (rng.NextDouble() * 2.0 - 1.0))
                        Labels = [| 2L; 3L |]; Indices = [| 0; 1 |] })
              let samples = Collections.Generic.List<int * int64 * int64>()
              let mutable step = 0
              let sample () =
                  step <- step + 1
                  if step % 400 = 0 then
                      GC.Collect()
                      GC.WaitForPendingFinalizers()
                      samples.Add(step, torch.Tensor.TotalCount, Diagnostics.Process.GetCurrentProcess().WorkingSet64)
              let recipe = { Methods.l2p.Recipe with Epochs = 1; BatchSize = 2 }
              Trainer.trainTask model recipe torch.CPU steps (fun _ -> tiny) 0 ignore (fun _ _ _ -> sample ()) (fun _ _ _ -> ())
              let counts = samples |> Seq.map (fun (_, c, _) -> c) |> Seq.distinct |> List.ofSeq
              Expect.equal counts.Length 1 (sprintf "live tensors at steps 400..2000: %A" (List.ofSeq samples))
              let _, _, first = samples[0]
              let _, _, last = samples[samples.Count - 1]
              Expect.isLessThan (last - first) (48L <<< 20) (sprintf "resident memory grew by %d MiB over 1600 steps" ((last - first) >>> 20))
          }

          test "a second training in the same process is refused while one runs" {
              do
                  use _ = Runtime.exclusiveTraining "first"
                  let message = try (Runtime.exclusiveTraining "second").Dispose(); "" with PromptingError m -> m
                  Expect.stringContains message "another training is running in this process" "refused with the reason"
              use again = Runtime.exclusiveTraining "after the first ended"
              Expect.isNotNull (box again) "free again once the first has ended"
          }

          test "the step budget follows the largest decoded image, which the loader records" {
              let small = Runtime.budgetFor 8 32 (32L * 32L) 2
              let photo = Runtime.budgetFor 8 32 (4000L * 3000L) 2
              Expect.equal (photo - small) (8L * 3L * (4000L * 3000L - 1024L) * 6L) "8 images x 3 batches x 2 copies of the decoded RGB bytes"
              let samples = [| for i in 0 .. 3 -> { Source = string i; Label = 0; Load = fun () -> { Width = 40 + i; Height = 30; Pixels = Array.zeroCreate ((40 + i) * 30 * 3) } } |]
              let transform = Transforms.evaluation Normalised Preprocessing.augreg 16
              Loader.epochSequential { LoaderOptions.Defaults with BatchSize = 2 } transform samples 0 |> ignore
              Expect.isGreaterThanOrEqual (Runtime.largestDecodedImage ()) (43L * 30L) "the loader noted the 43 x 30 image"
          }

          test "a training epoch reads the device once, at its end" {
              for method in methods do
                  let readsAtSteps = Collections.Generic.List<int64>()
                  let losses = Collections.Generic.List<float>()
                  let before = HostReads.count ()
                  train method 3 4 (fun () -> readsAtSteps.Add(HostReads.count () - before)) (fun _ loss -> losses.Add loss)
                  Expect.equal (HostReads.count () - before) 3L (method.Name + ": one read per epoch")
                  // Steps 1-4 of epoch e see only the reads of the e earlier epochs.
                  Expect.equal (List.ofSeq readsAtSteps) [ 0L; 0L; 0L; 0L; 1L; 1L; 1L; 1L; 2L; 2L; 2L; 2L ] (method.Name + ": no read inside a step")
                  Expect.all losses Double.IsFinite (method.Name + ": the epoch losses are read back")
          }

          test "gradient clipping on the device equals PyTorch's clip_grad_norm_" {
              for maxNorm in [ 0.5; 1.0; 1e3 ] do
                  torch.manual_seed 12L |> ignore
                  let make () = [ for shape in [ [| 3L; 4L |]; [| 5L |]; [| 2L; 2L; 2L |] ] -> torch.nn.Parameter(torch.randn shape) ]
                  let ours, theirs, plain = make (), make (), make ()
                  let noGrad = torch.nn.Parameter(torch.randn 3L) // never used: no gradient, skipped
                  for a, b, c in List.zip3 ours theirs plain do
                      use _ = torch.no_grad ()
                      b.copy_ a |> ignore
                      c.copy_ a |> ignore
                  for ps in [ ours; theirs; plain ] do
                      use loss = ps |> List.map (fun p -> (p * p * p).sum ()) |> List.reduce (+)
                      loss.backward ()
                  let norm = torch.nn.utils.clip_grad_norm_ (theirs, maxNorm)
                  Gradients.clipNorm (noGrad :: ours) maxNorm
                  Expect.isNull noGrad.grad "a parameter without gradient stays without"
                  for a, b, c in List.zip3 ours theirs plain do
                      let err = relativeError (host a.grad).Values (host b.grad).Values
                      Expect.isLessThan err 1e-6 (sprintf "max norm %g (gradient norm %.3g)" maxNorm norm)
                      if norm <= maxNorm then
                          Expect.equal (relativeError (host a.grad).Values (host c.grad).Values) 0.0 "below the limit: untouched"
                      else
                          Expect.isGreaterThan (relativeError (host a.grad).Values (host c.grad).Values) 1e-3 "above the limit: scaled"
          } ]
