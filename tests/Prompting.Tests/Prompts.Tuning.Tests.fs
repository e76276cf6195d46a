/// The parameter-efficient modules of APER and RanPAC (SSF, AdaptFormer's parallel adapter), the
/// cosine head with a learnable scale, and the pretrained + adapted features a calibrated head reads:
/// checked against a ViT written out by hand from the state dict, and against METHODS.md's counts.
module Prompting.Tests.PromptsTuning

open Expecto
open TorchSharp
open Prompting.Vit
open Prompting.Prompts
open Prompting.Tests.Fixtures

let private config = VitConfig.custom 32 8 2 32 2 10
let private layout = TaskLayout.uniform 2 10
let private values (t: torch.Tensor) = (host t).Values

/// Parameters of a model by state name.
let private parameterTable (model: torch.nn.Module) =
    [ for struct (name, p) in model.named_parameters () -> name, (p :> torch.Tensor) ] |> Map.ofList

/// Sets every parameter under `prefix` to fresh random values (zero-initialised parts included),
/// so that a check cannot pass because a module starts as the identity.
let private randomise (model: torch.nn.Module) (prefix: string) =
    use _ = torch.no_grad ()
    for KeyValue(name, p) in parameterTable model do
        if name.StartsWith prefix then p.copy_ (torch.randn_like p * 0.3 + (if name.EndsWith "_scale" then 1.0 else 0.0)) |> ignore

/// The final-norm class token of a timm ViT computed with plain tensor operations from the named
/// parameters: SSF's γ ⊙ x + β at each site when `ssf` names its parameters, and AdaptFormer's
/// 0.1 · up(relu(down x_a)) beside each MLP when `adapter` does (no dropout: evaluation).
let private handWritten (p: Map<string, torch.Tensor>) (ssf: (string -> (torch.Tensor * torch.Tensor)) option) (adapter: (int -> (torch.Tensor * torch.Tensor * torch.Tensor * torch.Tensor)) option) (images: torch.Tensor) =
    let d = int64 config.Width
    let heads, hd = int64 config.Heads, int64 (VitConfig.headDim config)
    let site name (x: torch.Tensor) =
        match ssf with
        | Some f ->
            let scale, shift = f name
            x * scale + shift
        | None -> x
    let layerNorm (x: torch.Tensor) prefix = torch.nn.functional.layer_norm (x, [| d |], p[prefix + ".weight"], p[prefix + ".bias"], 1e-6)
    let linear (x: torch.Tensor) prefix = torch.nn.functional.linear (x, p[prefix + ".weight"], p[prefix + ".bias"])
    let b = images.shape[0]
    let conv = torch.nn.functional.conv2d (images, p["backbone.patch_embed.proj.weight"], p["backbone.patch_embed.proj.bias"], strides = [| 8L; 8L |])
    let patches = site "patch" (conv.flatten(2).transpose (1, 2))
    let mutable x = torch.cat ([| p["backbone.cls_token"].expand (b, -1L, -1L); patches |], 1L) + p["backbone.pos_embed"]
    for i in 0 .. config.Depth - 1 do
        let block = sprintf "backbone.blocks.%d" i
        let name s = sprintf "block%d_%s" i s
        let n1 = site (name "norm1") (layerNorm x (block + ".norm1"))
        let qkv = site (name "qkv") (linear n1 (block + ".attn.qkv"))
        let n = x.shape[1]
        let split (k: int64) = qkv.narrow(2, k * d, d).reshape(b, n, heads, hd).permute (0L, 2L, 1L, 3L)
        let scores = torch.matmul (split 0L, (split 1L).transpose (2, 3)) / sqrt (float hd)
        let attended = torch.matmul(torch.softmax (scores, -1), split 2L).permute(0L, 2L, 1L, 3L).reshape (b, n, d)
        let xa = x + site (name "proj") (linear attended (block + ".attn.proj"))
        let n2 = site (name "norm2") (layerNorm xa (block + ".norm2"))
        let hidden = torch.nn.functional.gelu (site (name "fc1") (linear n2 (block + ".mlp.fc1")))
        let mlp = site (name "fc2") (linear hidden (block + ".mlp.fc2"))
        let beside =
            match adapter with
            | Some weights ->
                let dw, db, uw, ub = weights i
                let h = torch.nn.functional.relu (torch.nn.functional.linear (xa, dw, db))
                torch.nn.functional.linear (h, uw, ub) * 0.1
            | None -> torch.zeros_like mlp
        x <- xa + mlp + beside
    (site "final" (layerNorm x "backbone.norm")).select (1, 0L)

let private ssfOf (p: Map<string, torch.Tensor>) = fun (name: string) -> p["ssf." + name + "_scale"], p["ssf." + name + "_shift"]

let private adapterOf (p: Map<string, torch.Tensor>) =
    fun (i: int) ->
        let at s = p[sprintf "parallel_adapters.block%d_%s" i s]
        at "down.weight", at "down.bias", at "up.weight", at "up.bias"

let private images () = torch.randn (3L, 3L, 32L, 32L)

let private checkAgainstHand (m: Method) (ssf: bool) (adapter: bool) =
    torch.manual_seed 21L |> ignore
    use model = PromptedModel.build m layout (new VisionTransformer(config))
    randomise model "ssf."
    randomise model "parallel_adapters."
    model.eval ()
    use _ = torch.no_grad ()
    use x = images ()
    let p = parameterTable model
    use expected = handWritten p (if ssf then Some(ssfOf p) else None) (if adapter then Some(adapterOf p) else None) x
    let out = model.Forward(x, false)
    Expect.isLessThan (relativeError (values out.Features) (values expected)) 1e-5 "features"
    use plain = handWritten p None None x
    Expect.isGreaterThan (relativeError (values out.Features) (values plain)) 1e-3 "the modules change the features"

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompts/tuning"
        [ test "SSF: γ ⊙ x + β after the patch projection, norm1, qkv, proj, norm2, fc1, fc2 and the final norm" {
              checkAgainstHand { Methods.linear with ScaleShift = Some Methods.ssf } true false
          }

          test "AdaptFormer: x_a + mlp(norm2 x_a) + 0.1 · up(relu(down x_a)), reading the un-normalised residual" {
              checkAgainstHand { Methods.linear with ParallelAdapter = Some Methods.adaptFormer } false true
          }

          test "SSF and the parallel adapter compose in one model" {
              checkAgainstHand { Methods.linear with ScaleShift = Some Methods.ssf; ParallelAdapter = Some Methods.adaptFormer } true true
          }

          test "fresh modules start at (or near) the pretrained function: the adapter's up is zero, SSF is N(1, 0.02²) / N(0, 0.02²)" {
              torch.manual_seed 22L |> ignore
              let backbone = new VisionTransformer(config)
              use model = PromptedModel.build Methods.aperAdapter layout backbone
              model.eval ()
              use _ = torch.no_grad ()
              use x = images ()
              let out = model.Forward(x, false)
              use plain = backbone.ClassFeatures x
              let adapted = out.Features.narrow (1, int64 config.Width, int64 config.Width)
              Expect.isLessThan (relativeError (values adapted) (values plain)) 1e-6 "zero up: the pretrained features"
              use ssfModel = PromptedModel.build Methods.aperSsf layout (new VisionTransformer(config))
              let scales = [ for struct (n, p) in ssfModel.named_parameters () do if n.EndsWith "_scale" then yield! values p ]
              let shifts = [ for struct (n, p) in ssfModel.named_parameters () do if n.EndsWith "_shift" then yield! values p ]
              let meanStd (xs: float32 list) =
                  let m = xs |> List.averageBy float
                  m, sqrt (xs |> List.averageBy (fun v -> (float v - m) ** 2.0))
              let sm, ss = meanStd scales
              let hm, hs = meanStd shifts
              Expect.floatClose { absolute = 0.005; relative = 0.0 } sm 1.0 "γ mean 1"
              Expect.floatClose { absolute = 0.005; relative = 0.0 } hm 0.0 "β mean 0"
              Expect.floatClose { absolute = 0.004; relative = 0.0 } ss 0.02 "γ std 0.02"
              Expect.floatClose { absolute = 0.004; relative = 0.0 } hs 0.02 "β std 0.02"
          }

          test "the adapter's dropout acts in training passes only" {
              torch.manual_seed 23L |> ignore
              use model = PromptedModel.build Methods.aperAdapter layout (new VisionTransformer(config))
              randomise model "parallel_adapters."
              use _ = torch.no_grad ()
              use x = images ()
              let eval1 = values (model.Forward(x, false).Features)
              let eval2 = values (model.Forward(x, false).Features)
              Expect.equal eval1 eval2 "evaluation is deterministic"
              let train = values (model.Forward(x, true).Features)
              Expect.isGreaterThan (relativeError train eval1) 1e-4 "training drops bottleneck units"
          }

          test "cosine head: σ · cos(x, w_c), σ learnable from 1, rows from U(±1/√D)" {
              torch.manual_seed 24L |> ignore
              let d = 32
              use head = new ClassifierHead(CosineHead, d, d, 5, false, TrainedHead)
              let p = parameterTable head
              Expect.equal (values p["sigma"]) [| 1.0f |] "σ starts at 1"
              let bound = 1.0f / sqrt (float32 d)
              Expect.isTrue (values p["weight"] |> Array.forall (fun v -> abs v <= bound)) "rows within ±1/√D"
              using (torch.no_grad ()) (fun _ -> p["sigma"].fill_ (2.5.ToScalar()) |> ignore)
              use x = torch.randn (4L, int64 d)
              use logits = head.forward x
              use expected = torch.nn.functional.cosine_similarity (x.unsqueeze 1L, p["weight"].unsqueeze 0L, 2L) * 2.5
              Expect.isLessThan (relativeError (values logits) (values expected)) 1e-5 "σ · cosine"
              logits.sum().backward ()
              Expect.isTrue (p["sigma"].grad.abs().item<float32> () > 0.0f) "σ receives a gradient"
          }

          test "APER's features: [f_PTM(x); g(x)], and class means with one L2 norm over both halves" {
              torch.manual_seed 25L |> ignore
              let backbone = new VisionTransformer(config)
              use model = PromptedModel.build Methods.aperAdapter layout backbone
              randomise model "parallel_adapters."
              model.eval ()
              use _ = torch.no_grad ()
              use x = torch.randn (20L, 3L, 32L, 32L)
              let out = model.Forward(x, false)
              let d = int64 config.Width
              use pretrained = backbone.ClassFeatures x
              Expect.isLessThan (relativeError (values (out.Features.narrow (1, 0L, d))) (values pretrained)) 1e-6 "PTM first"
              let p = parameterTable model
              use adapted = handWritten p None (Some(adapterOf p)) x
              Expect.isLessThan (relativeError (values (out.Features.narrow (1, d, d))) (values adapted)) 1e-5 "adapted second"
              // The calibrated head on features whose halves differ in scale (as PTM and SSF-adapted
              // features do), so that one norm over 2D and a norm per half give different logits.
              use phi = torch.cat ([| out.Features.narrow (1, 0L, d) * 3.0; out.Features.narrow (1, d, d) + torch.randn (20L, d) |], 1L)
              use y = torch.arange(4L).repeat (5L)
              model.ObserveFeatures(phi, y)
              model.EndTask() |> ignore
              use logits = model.Head.forward phi
              for c in 0 .. 3 do
                  use mean = phi.index_select(0L, torch.arange(int64 c, 20L, 4L)).mean [| 0L |]
                  use expected = torch.nn.functional.cosine_similarity (phi, mean.unsqueeze 0L, 1L)
                  Expect.isLessThan (relativeError (values (logits.select (1, int64 c))) (values expected)) 1e-5 (sprintf "class %d" c)
                  let half (k: int64) = torch.nn.functional.cosine_similarity (phi.narrow (1, k, d), (mean.narrow (0, k, d)).unsqueeze 0L, 1L)
                  use perHalf = (half 0L + half d) / 2.0
                  Expect.isGreaterThan (relativeError (values (logits.select (1, int64 c))) (values perHalf)) 1e-4 "one norm over 2D"
          }

          test "APER-BitFit keeps a frozen pretrained copy: training the biases leaves f_PTM as it was" {
              torch.manual_seed 26L |> ignore
              let backbone = new VisionTransformer(config)
              use model = PromptedModel.build Methods.aperBitfit layout backbone
              model.eval ()
              use _ = torch.no_grad ()
              use x = images ()
              use before = backbone.ClassFeatures x
              for struct (name, p) in backbone.named_parameters () do
                  if name.EndsWith ".bias" && not (name.StartsWith "head.") then p.add_ (0.5.ToScalar()) |> ignore
              let out = model.Forward(x, false)
              let d = int64 config.Width
              Expect.isLessThan (relativeError (values (out.Features.narrow (1, 0L, d))) (values before)) 1e-6 "f_PTM unchanged"
              use now = backbone.ClassFeatures x
              Expect.isLessThan (relativeError (values (out.Features.narrow (1, d, d))) (values now)) 1e-6 "g(x) is the trained backbone"
              Expect.isGreaterThan (relativeError (values now) (values before)) 1e-3 "the biases moved the features"
              Expect.isTrue (model.PretrainedCopy.Value.parameters () |> Seq.forall (fun p -> not p.requires_grad)) "the copy is frozen"
          }

          test "ViT-B/16 counts match METHODS.md: adapter 1,189,632, SSF 205,824, VPT-deep (5) 46,080" {
              let vitB = VitConfig.preset "vit-base"
              let count m = Counting.count m vitB 100
              Expect.equal (count Methods.aperAdapter).Other 1_189_632L "AdaptFormer, bottleneck 64"
              Expect.equal (count Methods.ranpac).Other 1_189_632L "RanPAC's phase-1 adapter"
              Expect.equal (count Methods.aperSsf).Other 205_824L "SSF"
              Expect.equal (count Methods.aperVptDeep).PromptsAndKeys 46_080L "12 x 5 x 768"
              Expect.equal (count Methods.aperVptShallow).PromptsAndKeys 3_840L "5 x 768"
              Expect.equal (count Methods.aperAdapter).Head (768L * 100L + 1L) "cosine head: rows and σ"
          } ]
