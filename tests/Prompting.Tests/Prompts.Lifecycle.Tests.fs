module Prompting.Tests.PromptsLifecycle

open Expecto
open TorchSharp
open Prompting.Vit
open Prompting.Prompts
open Prompting.Tests.Fixtures

let private backbone () = new VisionTransformer(VitConfig.custom 32 8 5 128 2 10)

/// The end of the model's current task, with the head's statistics those of `stats`.
let private endTask (model: PromptedModel) (stats: ClassStatistics) =
    model.Head.Statistics.Import(stats.Export())
    model.EndTask() |> ignore

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompts/lifecycle"
        [ test "class statistics: per-class mean and population variance" {
              let stats = ClassStatistics()
              use f = tensorOf2 [| 1.0f; 2.0f; 3.0f; 6.0f; 10.0f; 0.0f |] [| 3L; 2L |]
              use y = torch.tensor ([| 4L; 4L; 7L |])
              stats.Add(f, y)
              Expect.equal stats.Classes [ 4; 7 ] "classes"
              Expect.equal (stats.Mean 4) [| 2.0; 4.0 |] "mean of (1,2) and (3,6)"
              Expect.equal (stats.Variance 4) [| 1.0; 4.0 |] "variance"
              Expect.equal (stats.Mean 7) [| 10.0; 0.0 |] "single sample"
              Expect.equal (stats.Variance 7) [| 0.0; 0.0 |] "zero variance"
          }

          test "SimpleCIL: prototypes are the unit class means and logits their cosines" {
              torch.manual_seed 1L |> ignore
              use model = PromptedModel.build Methods.simpleCil (TaskLayout.uniform 2 10) (backbone ())
              let stats = ClassStatistics()
              use features = torch.randn (20L, 128L)
              use labels = torch.arange(10L).repeat (2L)
              stats.Add(features, labels)
              endTask model stats
              let protos = model.Head.get_buffer "prototypes"
              for c in 0 .. 9 do
                  let mean = stats.Mean c |> Array.map float32
                  let norm = mean |> Array.sumBy (fun v -> v * v) |> sqrt
                  let expected = mean |> Array.map (fun v -> v / norm)
                  Expect.isLessThan (relativeError (host (protos.select (0, int64 c))).Values expected) 1e-6 (sprintf "prototype %d" c)
              use probe = tensorOf2 (stats.Mean 3 |> Array.map float32) [| 1L; 128L |] * 5.0f
              use logits = model.Head.forward probe
              Expect.equal (logits.argmax(1L).item<int64> ()) 3L "a class mean is closest to its own prototype"
              Expect.isLessThan (abs (logits[0L, 3L].item<float32> () - 1.0f)) 1e-5f "cosine 1"
          }

          test "VQ-Prompt's aligned head retrains only the head, from the second task on" {
              torch.manual_seed 2L |> ignore
              let fast =
                  { Methods.vqPrompt with
                      Calibration = AlignedHead { Method.vqAlignment with LearningRate = 0.05; RateSchedule = CosinePerStep 0.001; Epochs = 5; SamplesPerClass = 64; BatchSize = 32 } }
              use model = PromptedModel.build fast (TaskLayout.uniform 2 10) (backbone ())
              // Well separated class means: the head must learn to tell them apart.
              use means = torch.randn (10L, 128L) * 3.0f
              use noise = torch.randn (100L, 128L) * 0.1f
              use labels = torch.arange(5L).repeat (10L)
              let observe (first: int64) =
                  use ids = labels + first
                  use features = means.index_select (0L, ids) + noise.narrow (0, first * 10L, 50L)
                  model.ObserveFeatures(features, ids)
              let snapshot () = [ for struct (n, p) in model.named_parameters () -> n, p.detach().clone () ]
              let before = snapshot ()
              observe 0L
              model.EndTask() |> ignore
              let after = snapshot ()
              for (n, a), (_, b) in List.zip before after do
                  Expect.isTrue (sameValues a b) (sprintf "%s untouched after the first task" n)
              Expect.isTrue (before |> List.exists (fun (n, _) -> n = "head.fc.weight")) "has a head"
              model.BeginTask 1
              let before1 = snapshot ()
              observe 5L
              model.EndTask() |> ignore
              let after1 = snapshot ()
              let changed = List.zip before1 after1 |> List.filter (fun ((_, a), (_, b)) -> not (sameValues a b)) |> List.map (fst >> fst)
              Expect.equal (List.sort changed) [ "head.fc.bias"; "head.fc.weight" ] "only the head changes"
              use logits = model.Head.forward means
              Expect.equal (logits.argmax(1L).data<int64>().ToArray()) [| 0L .. 9L |] "class means classified correctly"
          } 
          test "bf16 mixed precision: close to float32, float32 gradients on prompts, backbone untouched" {
              for m in [ Methods.l2p; Methods.codaPrompt; Methods.vqPrompt ] do
                  torch.manual_seed 3L |> ignore
                  use model = PromptedModel.build m (TaskLayout.uniform 2 10) (backbone ())
                  model.BeginTask 1
                  use input = torch.randn (4L, 3L, 32L, 32L)
                  use labels = torch.tensor ([| 5L; 6L; 7L; 8L |])
                  let reference = (host ((model.Forward(input, false)).Logits)).Values
                  model.SetComputeType torch.bfloat16
                  let output = model.Forward(input, true)
                  Expect.equal output.Logits.dtype torch.float32 "logits in float32"
                  let mixed = (host ((model.Forward(input, false)).Logits)).Values
                  Expect.isLessThan (relativeError mixed reference) 0.1 (sprintf "%s: bf16 logits near float32" m.Name)
                  let loss = Loss.total model output labels
                  loss.backward ()
                  let prompts = model.TrainableParameters() |> List.filter (fun (n, _) -> n.StartsWith "prompts.")
                  Expect.isTrue (prompts |> List.forall (fun (_, p) -> p.dtype = torch.float32)) "prompts stay float32"
                  Expect.isTrue (prompts |> List.exists (fun (_, p) -> not (isNull p.grad) && p.grad.abs().sum().item<float32> () > 0.0f)) (sprintf "%s: prompts get gradients" m.Name)
                  for struct (n, p) in model.Backbone.named_parameters () do
                      Expect.isTrue (isNull p.grad) (sprintf "%s: frozen %s gets no gradient" m.Name n)
              use full = PromptedModel.build Methods.full (TaskLayout.uniform 2 10) (backbone ())
              Expect.throwsT<Prompting.PromptingError> (fun () -> full.SetComputeType torch.bfloat16) "refused when the backbone trains"
          } ]
