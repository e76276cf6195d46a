/// Calibrated heads: RanPAC's ridge regression on a random projection, class means, the first-task
/// adaptation schedule, and the refusal of compositions that cannot learn.
module Prompting.Tests.PromptsHeads

open Expecto
open TorchSharp
open Prompting
open Prompting.Vit
open Prompting.Prompts
open Prompting.Tests.Fixtures

let private backbone () = new VisionTransformer(VitConfig.custom 32 8 5 128 2 10)

let private values (t: torch.Tensor) = (host t).Values

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompts/heads"
        [ test "ridge solution: W = solve(G + λI, Q)ᵀ, checked by hand" {
              use g = tensorOf2 [| 2.0f; 0.0f; 0.0f; 4.0f |] [| 2L; 2L |]
              use q = tensorOf2 [| 2.0f; 4.0f |] [| 2L; 1L |]
              // (G + λI) w = q: λ = 0 gives (1, 1); λ = 2 gives (2/4, 4/6).
              use w0 = Ridge.solve g q 0.0
              use w2 = Ridge.solve g q 2.0
              Expect.equal w0.shape [| 1L; 2L |] "C x M"
              Expect.isLessThan (relativeError (values w0) [| 1.0f; 1.0f |]) 1e-6 "no regulariser"
              Expect.isLessThan (relativeError (values w2) [| 0.5f; 2.0f / 3.0f |]) 1e-6 "λ = 2"
          }

          test "the λ search leaves no tensor behind: each of its 17 solves frees its M × M temporaries" {
              torch.manual_seed 10L |> ignore
              use h = torch.randn (100L, 8L)
              use y = torch.randn (100L, 2L)
              use scope = torch.NewDisposeScope()
              let before = scope.DisposablesCount
              Ridge.selectRegulariser [ -8 .. 8 ] 0.8 h y |> ignore
              Expect.equal scope.DisposablesCount before "nothing left for the caller's scope to free (at M = 10,000 each would be 400 MB)"
              use g = torch.eye 8L
              use q = torch.ones (8L, 2L)
              let counted = scope.DisposablesCount
              use w = Ridge.solve g q 1.0
              Expect.equal scope.DisposablesCount (counted + 1) "a solve leaves only its readout"
              Expect.equal w.shape [| 2L; 8L |] "the readout, C x M"
          }

          test "a singular system is one line naming λ, not a native failure" {
              use g = torch.zeros (3L, 3L)
              use q = torch.ones (3L, 2L)
              let message = TestSupport.promptingError "singular" (fun () -> Ridge.solve g q 0.0 |> ignore)
              TestSupport.expectMessage message [ "ridge head"; "singular"; "λ = 0" ] "says what and where"
          }

          test "the regulariser RanPAC's rule chooses: tiny for exact targets, large for pure noise" {
              torch.manual_seed 8L |> ignore
              use h = torch.randn (200L, 16L)
              use truth = torch.randn (16L, 3L)
              use exact = torch.mm (h, truth)
              let chosen, errors = Ridge.selectRegulariser [ -8 .. 8 ] 0.8 h exact
              Expect.equal errors.Length 17 "17 candidates"
              Expect.isLessThanOrEqual chosen 1e-2 "an exact linear relation wants almost no regularisation"
              use noise = torch.randn (200L, 3L)
              let chosenNoise, _ = Ridge.selectRegulariser [ -8 .. 8 ] 0.8 h noise
              Expect.isGreaterThanOrEqual chosenNoise 1e2 "targets unrelated to the features: shrink hard"
              // The split: the first 160 rows fit, the last 40 score (independent check of one error).
              use fitT = (h.narrow (0, 0L, 160L)).t ()
              use wHand = Ridge.solve (torch.mm (fitT, h.narrow (0, 0L, 160L))) (torch.mm (fitT, noise.narrow (0, 0L, 160L))) 1.0
              use predicted = torch.mm (h.narrow (0, 160L, 40L), wHand.t ())
              let mse = (predicted - noise.narrow (0, 160L, 40L)).pow(2.0.ToScalar()).mean().item<float32> ()
              let _, noiseErrors = Ridge.selectRegulariser [ -8 .. 8 ] 0.8 h noise
              Expect.floatClose Accuracy.medium (noiseErrors |> List.find (fun (l, _) -> l = 1.0) |> snd) (float mse) "λ = 1 scored by hand"
          }

          test "a ridge head sums G and Q over every task and predicts ReLU(f W) W_outᵀ" {
              torch.manual_seed 9L |> ignore
              let ridge = { ProjectionSize = 64; RidgeExponents = [ -2 .. 2 ]; FitFraction = 0.8 }
              let m = { Methods.linear with Calibration = RandomProjectionRidge ridge; Adaptation = FirstTaskOnly }
              use model = PromptedModel.build m (TaskLayout.uniform 2 10) (backbone ())
              model.eval ()
              let feed (task: int) =
                  use f = torch.randn (40L, 128L)
                  use y = torch.arange(int64 (5 * task), int64 (5 * task + 5)).repeat (8L)
                  model.ObserveFeatures(f, y)
                  f.clone (), y.clone ()
              let f0, y0 = feed 0
              torch.manual_seed 1L |> ignore
              model.EndTask() |> ignore
              model.BeginTask 1
              let f1, y1 = feed 1
              torch.manual_seed 2L |> ignore
              model.EndTask() |> ignore
              let r = model.Head.Ridge.Value
              let projection = r.get_buffer "projection"
              let project (f: torch.Tensor) = torch.nn.functional.relu (torch.mm (f, projection))
              let h = torch.cat ([| project f0; project f1 |], 0L)
              let y = torch.nn.functional.one_hot(torch.cat ([| y0; y1 |], 0L), 10L).to_type torch.float32
              let g = torch.mm (h.t (), h)
              let q = torch.mm (h.t (), y)
              let state = Map.ofList (model.LifecycleState())
              Expect.isLessThan (relativeError (state["head.ridge.gram"].Values |> Array.map float32) (values g)) 1e-5 "G over both tasks"
              Expect.isLessThan (relativeError (state["head.ridge.targets"].Values |> Array.map float32) (values q)) 1e-5 "Q over both tasks"
              use expected = Ridge.solve g q r.Regulariser
              Expect.isLessThan (relativeError (values (r.get_buffer "readout")) (values expected)) 1e-4 "readout = solve(G + λI, Q)ᵀ"
              use probe = torch.randn (3L, 128L)
              use logits = model.Head.forward probe
              use byHand = torch.mm (project probe, expected.t ())
              Expect.isLessThan (relativeError (values logits) (values byHand)) 1e-4 "predicts with the ridge readout in evaluation"
              model.Head.train ()
              use trained = model.Head.forward probe
              Expect.equal trained.shape [| 3L; 10L |] "training still reads the trained head"
              Expect.isGreaterThan (relativeError (values trained) (values byHand)) 1e-3 "which is another head"
          }

          test "class-means calibration: after a task, cosine to each seen class's mean feature" {
              torch.manual_seed 10L |> ignore
              use model = PromptedModel.build { Methods.linear with Calibration = ClassMeans } (TaskLayout.uniform 2 10) (backbone ())
              model.eval ()
              use f = torch.randn (30L, 128L)
              use y = torch.arange(5L).repeat (6L)
              model.ObserveFeatures(f, y)
              model.EndTask() |> ignore
              use logits = model.Head.forward f
              for c in 0 .. 4 do
                  use mean = f.index_select(0L, torch.arange(int64 c, 30L, 5L)).mean [| 0L |]
                  use expected = torch.nn.functional.cosine_similarity (f, mean.unsqueeze 0L, 1L)
                  Expect.isLessThan (relativeError (values (logits.select (1, int64 c))) (values expected)) 1e-5 (sprintf "class %d" c)
          }

          test "refused compositions: a ridge head on features that change every task; a calibrated prototype head" {
              let ridgeEvery = { Methods.l2p with Calibration = RandomProjectionRidge Method.ranpacRidge }
              let message = TestSupport.promptingError "ridge on l2p" (fun () -> Method.checkComposition ridgeEvery)
              TestSupport.expectMessage message [ "ridge head"; "change on every task"; "--adapt first-task" ] "says why"
              Method.checkComposition { ridgeEvery with Adaptation = FirstTaskOnly }
              Method.checkComposition { Methods.linear with Calibration = RandomProjectionRidge Method.ranpacRidge }
              let prototypes = TestSupport.promptingError "simplecil" (fun () -> Method.checkComposition { Methods.simpleCil with Calibration = ClassMeans })
              TestSupport.expectMessage prototypes [ "simplecil"; "prototypes" ] "says why"
              let twoAdapters = TestSupport.promptingError "two adapters" (fun () -> Method.checkComposition { Methods.aperAdapter with AdapterReduction = Some 8 })
              TestSupport.expectMessage twoAdapters [ "aper-adapter"; "one MLP adapter" ] "says why"
          } ]
