/// Side-by-side check of the prompt methods against reference forward passes that mirror the
/// official PyTorch code (tests/fixtures/make_prompt_fixtures.py): same backbone, same prompt
/// values, same input; features, logits, losses and gradients must agree to float32 precision
/// and the chosen pool entries exactly.
module Prompting.Tests.PromptsReference

open System
open Expecto
open TorchSharp
open Prompting.Tensors
open Prompting.Vit
open Prompting.Prompts
open Prompting.Tests.Fixtures

let private layout = TaskLayout.uniform 2 10
let private tolerance = 1e-5

/// CODA-Prompt with 10 components (5 per task) so that Gram–Schmidt fits the width-32 test
/// backbone, and an orthogonality weight of 0.1 so that the penalty is exercised.
let private codaSmall =
    { Methods.codaPrompt with
        Groups =
            [ { Methods.codaPrompt.Groups.Head with
                  Source = Components { Components = 10; OrthogonalityWeight = 0.1 } } ] }

/// VPT-deep without prompt dropout, so that the training pass is deterministic.
let private vptDeepNoDropout =
    { Methods.vptDeep with Groups = [ { Methods.vptDeep.Groups.Head with Dropout = 0.0 } ] }

/// L2P++ with the CODA repository's cross-sample pull loss.
let private l2pPlusPlusQuirk =
    let g = Methods.l2pPlusPlus.Groups.Head
    match g.Source with
    | Keyed k -> { Methods.l2pPlusPlus with Groups = [ { g with Source = Keyed { k with PullLoss = CrossSampleQuirk } } ] }
    | _ -> failwith "l2p++ is expected to use a keyed pool"

type private Case =
    { Title: string
      Method: Method
      /// tests/fixtures/prompts/<State>.safetensors
      State: string
      /// tests/fixtures/prompts/<Expected>.expected.npz
      Expected: string
      /// Whether the training pass (and so the losses and gradients) is compared too.
      Training: bool }

let private case title meth state =
    { Title = title; Method = meth; State = state; Expected = state; Training = true }

let private cases =
    [ case "l2p (JH-LEE-KR/l2p-pytorch)" Methods.l2p "l2p"
      case "l2p++ (CODA-Prompt repository, per-sample pull loss)" Methods.l2pPlusPlus "l2p++"
      { case "l2p++ with CrossSampleQuirk (the repository's (1 - cos[:, idx]).sum())" l2pPlusPlusQuirk "l2p++" with
          Expected = "l2p++-quirk" }
      case "dualprompt (original semantics, separate K/V prefixes)" (Methods.dualPrompt 2) "dualprompt"
      case "dualprompt-coda (CODA-Prompt repository)" Methods.dualPromptCoda "dualprompt-coda"
      case "coda-prompt (10 components, orthogonality 0.1)" codaSmall "coda-prompt"
      case "vq-prompt" Methods.vqPrompt "vq-prompt"
      case "vpt-shallow" Methods.vptShallow "vpt-shallow"
      case "vpt-deep (dropout 0)" vptDeepNoDropout "vpt-deep"
      // Evaluation never applies dropout, so the named method itself must match there.
      { case "vpt-deep (named method, dropout 0.1, evaluation only)" Methods.vptDeep "vpt-deep" with
          Training = false } ]

let private promptFixture (name: string) = fixture (IO.Path.Combine("prompts", name))

/// Observed errors, printed when PROMPTING_REFERENCE_REPORT is set.
let private report = Environment.GetEnvironmentVariable "PROMPTING_REFERENCE_REPORT" |> String.IsNullOrEmpty |> not

let private expectClose (title: string) (what: string) (actual: torch.Tensor) (expected: HostTensor) =
    Expect.sequenceEqual actual.shape expected.Shape (sprintf "%s: %s shape" title what)
    let err = relativeError (host actual).Values expected.Values
    Expect.isLessThanOrEqual err tolerance (sprintf "%s: %s relative error %.3g" title what err)
    err

let private expectIds (title: string) (what: string) (actual: torch.Tensor option) (expected: HostTensor option) =
    match actual, expected with
    | Some ids, Some e ->
        Expect.sequenceEqual ids.shape e.Shape (sprintf "%s: %s shape" title what)
        Expect.sequenceEqual (host ids).Values e.Values (sprintf "%s: %s (exact)" title what)
    | None, None -> ()
    | Some _, None -> failtestf "%s: the model reports %s but the reference has none" title what
    | None, Some _ -> failtestf "%s: the reference has %s but the model reports none" title what

/// Per leading-index L2 norms of a gradient, as the fixture stores them.
let private gradRows (g: torch.Tensor) =
    use flat = g.reshape (g.shape[0], -1L)
    flat.norm (1)

let private evaluation (c: Case) (model: PromptedModel) (images: torch.Tensor) (expected: Map<string, HostTensor>) =
    model.eval ()
    use _ = torch.no_grad ()
    let out = model.Forward(images, false)
    let features = expectClose c.Title "features (eval)" out.Features expected["features_eval"]
    let logits = expectClose c.Title "logits (eval)" out.Logits expected["logits_eval"]
    expectIds c.Title "chosen ids (eval)" out.Chosen (expected.TryFind "chosen_eval")
    [ "features (eval)", features; "logits (eval)", logits ]

let private verify (c: Case) =
    let expected = Npz.read (promptFixture (c.Expected + ".expected.npz")) |> Map.ofList
    use backbone = Checkpoint.load (fixture "vit_depth5.safetensors") { LoadOptions.defaults with Heads = Some 2 }
    use model = PromptedModel.build c.Method layout backbone
    // Loading restores the task from the file's metadata without lifecycle effects
    // (no Gram–Schmidt re-initialisation, no copying of the previous task's prompt).
    TrainableState.load (promptFixture (c.State + ".safetensors")) model
    Expect.equal model.Task (int expected["task"].Values[0]) (c.Title + ": task restored from the state file")
    use images = tensorOf (fixture "input_32.npy")
    let errors = Collections.Generic.List<string * float>()
    let note what err = errors.Add((what, err))

    for what, err in evaluation c model images expected do note what err

    if c.Training then
        model.train ()
        let out = model.Forward(images, true)
        note "features (train)" (expectClose c.Title "features (train)" out.Features expected["features_train"])
        note "logits (train)" (expectClose c.Title "logits (train)" out.Logits expected["logits_train"])
        expectIds c.Title "chosen ids (train)" out.Chosen (expected.TryFind "chosen_train")
        note "aux loss" (expectClose c.Title "aux loss" out.AuxLoss expected["aux_loss"])
        use labels = torch.tensor (expected["labels"].Values |> Array.map int64)
        use total = Loss.total model out labels
        note "total loss" (expectClose c.Title "total loss" total expected["total_loss"])
        total.backward ()
        for name, p in model.TrainableParameters() do
            let key = "grad_rows." + name
            Expect.isTrue (expected.ContainsKey key) (sprintf "%s: the reference has a gradient for %s" c.Title name)
            let e = expected[key]
            let grad = p.grad
            use actual = if isNull grad then torch.zeros (p.shape[0]) else gradRows grad
            // Rows the reference leaves without gradient (detached or unused) must get none.
            let a = (host actual).Values
            e.Values |> Array.iteri (fun i v ->
                if v = 0.0f then Expect.equal a[i] 0.0f (sprintf "%s: gradient row %d of %s must be exactly zero" c.Title i name))
            // Gradients are compared relative to their own largest row.
            let scale = e.Values |> Array.fold (fun m v -> max m (abs (float v))) 1e-12
            let err = Array.fold2 (fun m (x: float32) (y: float32) -> max m (abs (float x - float y))) 0.0 a e.Values / scale
            Expect.isLessThanOrEqual err tolerance (sprintf "%s: gradient of %s, relative error %.3g" c.Title name err)
            note ("grad " + name) err
        model.eval ()

    if report then
        let worst = errors |> Seq.filter (fun (w, _) -> not (w.StartsWith "grad")) |> Seq.map snd |> Seq.max
        let worstGrad = errors |> Seq.filter (fun (w, _) -> w.StartsWith "grad") |> Seq.map snd |> Seq.fold max 0.0
        printfn "reference %-70s max rel error %.2e (gradients %.2e)" c.Title worst worstGrad

let private run (c: Case) = test c.Title { verify c }

[<Tests>]
let tests = testList "prompts.reference" [ for c in cases -> run c ]
