/// The query pass of pool-based methods: its depth (Method.QueryDepth) and the blocks it shares
/// with the prompted pass. Expected queries come from running the backbone's blocks one by one.
module Prompting.Tests.PromptsQuery

open Expecto
open TorchSharp
open Prompting
open Prompting.Vit
open Prompting.Prompts
open Prompting.Tests.Fixtures

let private layout = TaskLayout.uniform 2 10
let private backbone () = Checkpoint.load (fixture "vit_depth5.safetensors") { LoadOptions.defaults with Heads = Some 2 }

/// CODA-Prompt small enough for the width-32 test backbone.
let private codaSmall =
    { Methods.codaPrompt with
        Groups = [ { Methods.codaPrompt.Groups.Head with Source = Components { Components = 10; OrthogonalityWeight = 0.1 } } ] }

/// DualPrompt without its G-prompt: nothing touches blocks 0 and 1, so both passes share them.
let private eOnly = { Methods.dualPrompt 2 with Name = "e-only"; Groups = [ (Methods.dualPrompt 2).Groups[1] ] }

/// The un-prompted class token after k blocks through the final norm, blocks run one by one.
let private expectedQuery (vit: VisionTransformer) (images: torch.Tensor) (k: int) =
    use _ = torch.no_grad ()
    let mutable x = vit.Embed images
    for i in 0 .. k - 1 do
        let next = vit.Blocks[i].forward x
        x.Dispose()
        x <- next
    use cls = x.select (1, 0L)
    let sd = vit.state_dict ()
    let q = torch.nn.functional.layer_norm (cls, [| 32L |], sd["norm.weight"], sd["norm.bias"], 1e-6)
    x.Dispose()
    q

let private close (what: string) (tolerance: float) (actual: torch.Tensor) (expected: torch.Tensor) =
    Expect.sequenceEqual actual.shape expected.shape (what + ": shape")
    let err = relativeError (host actual).Values (host expected).Values
    Expect.isLessThanOrEqual err tolerance (sprintf "%s: relative error %.3g" what err)

/// A model of `method` whose random prompts depend only on the seed.
let private build (seed: int64) (method: Method) =
    torch.manual_seed seed |> ignore
    PromptedModel.build method layout (backbone ())

let private images () = tensorOf (fixture "input_32.npy")
let private labels () = torch.tensor [| 7L; 5L; 9L; 6L |]

/// Evaluation and training outputs, and the prompts' gradients of the training loss.
let private outputs (model: PromptedModel) (input: torch.Tensor) =
    // Starting a task draws random numbers (CODA's Gram–Schmidt rows): the same for every model.
    torch.manual_seed 9L |> ignore
    model.BeginTask 1
    let evaluation =
        model.eval ()
        use _ = torch.no_grad ()
        model.Forward(input, false)
    model.train ()
    let training = model.Forward(input, true)
    use y = labels ()
    use loss = Loss.total model training y
    loss.backward ()
    let grads = [ for name, p in model.TrainableParameters() do if name.StartsWith "prompts." && not (isNull p.grad) then yield name, p.grad ]
    evaluation, training, grads

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompts.query"
        [ test "the query is the un-prompted final-norm class token after QueryDepth blocks" {
              use input = images ()
              for method in [ Methods.l2p; Methods.dualPrompt 2; codaSmall; eOnly ] do
                  for depth in [ None; Some 1; Some 2; Some 5 ] do
                      use model = build 1L { method with QueryDepth = depth }
                      use q = model.Query input
                      use expected = expectedQuery model.Backbone input (defaultArg depth 5)
                      close (sprintf "%s, query depth %A" method.Name depth) 1e-6 q expected
          }

          test "QueryDepth equal to the backbone's depth is the reference method" {
              use input = images ()
              for method in [ Methods.l2p; codaSmall; Methods.vqPrompt ] do
                  use reference = build 2L method
                  use full = build 2L { method with QueryDepth = Some 5 }
                  let e1, t1, g1 = outputs reference input
                  let e2, t2, g2 = outputs full input
                  close (method.Name + ": evaluation logits") 1e-6 e2.Logits e1.Logits
                  close (method.Name + ": training logits") 1e-6 t2.Logits t1.Logits
                  close (method.Name + ": auxiliary loss") 1e-6 t2.AuxLoss t1.AuxLoss
                  for (n1, a), (n2, b) in List.zip g1 g2 do
                      Expect.equal n2 n1 "same parameters"
                      close (sprintf "%s: gradient of %s" method.Name n1) 1e-6 b a
          }

          test "an early query changes what the prompts see" {
              use input = images ()
              use reference = build 3L codaSmall
              use early = build 3L { codaSmall with QueryDepth = Some 1 }
              let e1, _, _ = outputs reference input
              let e2, _, _ = outputs early input
              let diff = relativeError (host e2.Logits).Values (host e1.Logits).Values
              Expect.isGreaterThan diff 1e-4 "CODA's attention weights depend on the query"
          }

          test "blocks before the first prompted block are computed once and give the same result" {
              use input = images ()
              // Training the final norm makes the backbone count as not frozen: nothing is shared.
              for method in [ eOnly; { eOnly with QueryDepth = Some 2 }; { eOnly with QueryDepth = Some 4 } ] do
                  use sharing = build 4L method
                  use separate = build 4L { method with Backbone = LastBlocks 0 }
                  let e1, t1, g1 = outputs separate input
                  let e2, t2, g2 = outputs sharing input
                  let what = sprintf "query depth %A" method.QueryDepth
                  close (what + ": evaluation logits") 1e-6 e2.Logits e1.Logits
                  close (what + ": training features") 1e-6 t2.Features t1.Features
                  close (what + ": auxiliary loss") 1e-6 t2.AuxLoss t1.AuxLoss
                  Expect.equal (g2 |> List.map fst) (g1 |> List.map fst) (what + ": prompts with gradients")
                  for (name, a), (_, b) in List.zip g1 g2 do close (sprintf "%s: gradient of %s" what name) 1e-6 b a
          }

          test "a query depth outside the backbone is refused, naming the method" {
              for depth in [ 0; 6 ] do
                  let message = TestSupport.promptingError "query depth" (fun () -> build 5L { Methods.l2p with QueryDepth = Some depth })
                  TestSupport.expectMessage message [ "l2p"; "query depth"; string depth ] "bad query depth"
          } ]
