module Prompting.Tests.VitModel

open Expecto
open TorchSharp
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Tests.Fixtures

let private micro = { LoadOptions.defaults with Heads = Some 3 }

/// Checkpoint file × image size → expected outputs from the independent PyTorch reference.
let private equivalenceCases =
    [ "vit_micro.safetensors", 32
      "vit_micro.npz", 32
      "vit_micro.safetensors", 48
      "vit_micro.npz", 48 ]

let private matchesReference (file, size) =
    test (sprintf "%s at %d px equals the PyTorch timm reference" file size) {
        use model = Checkpoint.load (fixture file) { micro with ImageSize = Some size }
        model.eval ()
        use _ = torch.no_grad ()
        use input = tensorOf (fixture (sprintf "input_%d.npy" size))
        use features = model.ForwardFeatures input
        use logits = model.ForwardHead features
        use cls = model.PreLogits features
        let expectedLogits = Npy.read (fixture (sprintf "expected_logits_%d.npy" size))
        let expectedFeatures = Npy.read (fixture (sprintf "expected_features_%d.npy" size))
        Expect.equal logits.shape expectedLogits.Shape "logit shape"
        Expect.isLessThan (relativeError (host logits).Values expectedLogits.Values) 1e-5 "logits"
        Expect.isLessThan (relativeError (host cls).Values expectedFeatures.Values) 1e-5 "features"
        if size = 32 then
            let expectedTokens = Npy.read (fixture "expected_tokens_32.npy")
            Expect.isLessThan (relativeError (host features).Values expectedTokens.Values) 1e-5 "all final-norm tokens"
    }

/// Attention written out with explicit matmul and softmax: an independent formulation of what
/// the prefixed scaled_dot_product_attention path must compute.
let private manualAttention (model: VisionTransformer) (x: torch.Tensor) (prefix: Prefix) =
    let sd = model.state_dict ()
    let w, b = sd["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.bias"]
    let pw, pb = sd["blocks.0.attn.proj.weight"], sd["blocks.0.attn.proj.bias"]
    let c = model.Config
    let heads, hd = int64 c.Heads, int64 (VitConfig.headDim c)
    let bsz, n = x.shape[0], x.shape[1]
    let qkv = torch.nn.functional.linear (x, w, b)
    let split (t: torch.Tensor) = t.reshape(t.shape[0], t.shape[1], heads, hd).permute (0L, 2L, 1L, 3L)
    let q = split (qkv.narrow (2, 0L, int64 c.Width))
    let k = torch.cat ([| split prefix.Key; split (qkv.narrow (2, int64 c.Width, int64 c.Width)) |], 2L)
    let v = torch.cat ([| split prefix.Value; split (qkv.narrow (2, 2L * int64 c.Width, int64 c.Width)) |], 2L)
    let scores = torch.bmm(q.reshape (-1L, n, hd), k.reshape(-1L, k.shape[2], hd).transpose (1, 2)) / sqrt (float hd)
    let weights = torch.softmax (scores, -1)
    let attended = torch.bmm(weights, v.reshape (-1L, v.shape[2], hd)).reshape (bsz, heads, n, hd)
    torch.nn.functional.linear (attended.permute(0L, 2L, 1L, 3L).reshape (bsz, n, int64 c.Width), pw, pb)

/// A module holding a ViT, as the prompted model and the MAE pretrainer do.
type private NestedVit(config: VitConfig) as this =
    inherit torch.nn.Module<torch.Tensor, torch.Tensor>("NestedVit")
    let inner = new VisionTransformer(config)
    do this.register_module ("inner", inner)
    override _.forward x = inner.forward x

[<Tests>]
let tests =
    testList
        "vit"
        [ yield! equivalenceCases |> List.map matchesReference

          test "expected checkpoint shapes are the model's own parameters" {
              let config = VitConfig.custom 32 8 3 48 3 7
              use model = new VisionTransformer(config)
              let actual = [ for KeyValue(k, v) in model.state_dict () -> k, v.shape ] |> Map.ofList
              let expected = Checkpoint.expectedShapes config |> Map.ofList
              Expect.equal actual expected "names and shapes"
          }

          test "nested in another module, the model's state keeps timm's names once each" {
              let config = VitConfig.custom 32 8 3 48 3 7
              use outer = new NestedVit(config)
              let actual = [ for KeyValue(k, v) in outer.state_dict () -> k, v.shape ] |> Map.ofList
              let expected = Checkpoint.expectedShapes config |> List.map (fun (k, s) -> "inner." + k, s) |> Map.ofList
              Expect.equal actual expected "names and shapes under the outer module"
          }

          test "preset parameter counts are timm's" {
              // timm: vit_tiny 5,717,416; vit_small 22,050,664; vit_base 86,567,656; vit_large 304,326,632
              let count name = VitConfig.parameterCount (VitConfig.preset name)
              Expect.equal (count "vit-tiny") 5_717_416L "tiny"
              Expect.equal (count "vit_small_patch16_224") 22_050_664L "small"
              Expect.equal (count "vit-base-patch16-224") 86_567_656L "base"
              Expect.equal (count "vit-large") 304_326_632L "large"
          }

          test "the model has exactly the parameters its config counts" {
              let config = VitConfig.custom 48 16 2 64 2 5
              use model = new VisionTransformer(config)
              let total = model.parameters () |> Seq.sumBy (fun p -> p.numel ())
              Expect.equal total (VitConfig.parameterCount config) "parameter count"
          }

          test "every LayerNorm uses eps 1e-6" {
              use model = new VisionTransformer(VitConfig.custom 32 8 1 48 3 2)
              use _ = torch.no_grad ()
              // Variance 1e-6: the output depends strongly on whether eps is 1e-6 or 1e-5.
              use x = torch.tensor([| 0.0f; 0.002f |]).repeat(24L).reshape (1L, 1L, 48L)
              use ones = torch.ones 48L
              use zeros = torch.zeros 48L
              use eps6 = torch.nn.functional.layer_norm (x, [| 48L |], ones, zeros, 1e-6)
              use eps5 = torch.nn.functional.layer_norm (x, [| 48L |], ones, zeros, 1e-5)
              Expect.isGreaterThan (relativeError (host eps6).Values (host eps5).Values) 0.1 "the input separates the two"
              let norms =
                  [ for struct (name, m) in model.named_modules () do
                        if name = "norm" || name.EndsWith ".norm1" || name.EndsWith ".norm2" then
                            yield name, (m :?> torch.nn.Module<torch.Tensor, torch.Tensor>) ]
              Expect.equal norms.Length 3 "final norm and two per block"
              for name, norm in norms do
                  use y = norm.forward x
                  Expect.isLessThan (relativeError (host y).Values (host eps6).Values) 1e-6 name
          }

          test "permuting the batch permutes the outputs" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              model.eval ()
              use _ = torch.no_grad ()
              use input = tensorOf (fixture "input_32.npy")
              use perm = torch.tensor ([| 2L; 0L; 3L; 1L |])
              use out = model.forward input
              use permutedOut = model.forward (input.index_select (0L, perm))
              use expected = out.index_select (0L, perm)
              Expect.isLessThan (relativeError (host permutedOut).Values (host expected).Values) 1e-6 "equivariance"
          }

          test "prefixes reach the attention as extra keys and values, split over heads" {
              torch.manual_seed 7L |> ignore
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              use _ = torch.no_grad ()
              use x = torch.randn (2L, 17L, 48L)
              let prefix = { Key = torch.randn (2L, 5L, 48L); Value = torch.randn (2L, 5L, 48L) }
              let attn = model.Blocks[0].named_children () |> Seq.pick (fun struct (n, m) -> if n = "attn" then Some(m :?> Attention) else None)
              use actual = attn.Forward(x, Some prefix, None)
              use expected = manualAttention model x prefix
              Expect.isLessThan (relativeError (host actual).Values (host expected).Values) 1e-5 "prefixed attention"
              use plain = attn.Forward(x, None, None)
              Expect.isGreaterThan (relativeError (host actual).Values (host plain).Values) 1e-3 "the prefix matters"
          }

          test "the block hook sees every layer and can prepend tokens" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              use _ = torch.no_grad ()
              use input = tensorOf (fixture "input_32.npy")
              let seen = System.Collections.Generic.List<int * int64>()
              let identity: BlockHook = fun layer x ->
                  seen.Add((layer, x.shape[1]))
                  BlockInput.plain x
              use plain = model.ForwardFeatures input
              use hooked = model.ForwardFeatures(input, identity)
              Expect.equal (List.ofSeq seen) [ 0, 17L; 1, 17L ] "called before each block with the token count"
              Expect.equal (relativeError (host hooked).Values (host plain).Values) 0.0 "identity hook changes nothing"
              use prompts = torch.randn (4L, 3L, 48L)
              let prepend: BlockHook = fun layer x ->
                  if layer = 0 then BlockInput.plain (torch.cat ([| x.narrow (1, 0L, 1L); prompts; x.narrow (1, 1L, 16L) |], 1L))
                  else BlockInput.plain x
              use prompted = model.ForwardFeatures(input, prepend)
              Expect.equal prompted.shape [| 4L; 20L; 48L |] "three tokens inserted after CLS"
          }

          test "the query is the un-prompted final-norm CLS without gradient" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              model.eval ()
              use input = tensorOf (fixture "input_32.npy")
              use q = model.Query input
              Expect.isFalse q.requires_grad "no gradient"
              let expected = Npy.read (fixture "expected_features_32.npy")
              Expect.isLessThan (relativeError (host q).Values expected.Values) 1e-5 "equals features"
          }

          test "a block restricted to some rows computes exactly those rows of the full block" {
              torch.manual_seed 11L |> ignore
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              use _ = torch.no_grad ()
              use x = torch.randn (2L, 17L, 48L)
              use key = torch.randn (2L, 5L, 48L)
              use value = torch.randn (2L, 5L, 48L)
              for p in [ None; Some { Key = key; Value = value } ] do
                  use full = model.Blocks[1].Forward(x, p)
                  for start, count in [ 0L, 1L; 3L, 5L; 0L, 17L ] do
                      use part = model.Blocks[1].Forward(x, p, None, None, Some { Start = start; Count = count })
                      use expected = full.narrow (1, start, count)
                      Expect.equal part.shape [| 2L; count; 48L |] "only the rows"
                      let err = relativeError (host part).Values (host expected).Values
                      Expect.isLessThan err 1e-6 (sprintf "rows %d..%d (prefix: %b)" start (start + count) p.IsSome)
          }

          test "class features and logits computed for the class token only equal the PyTorch reference" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              model.eval ()
              use _ = torch.no_grad ()
              use input = tensorOf (fixture "input_32.npy")
              use cls = model.ClassFeatures input
              use logits = model.forward input
              let expectedFeatures = Npy.read (fixture "expected_features_32.npy")
              let expectedLogits = Npy.read (fixture "expected_logits_32.npy")
              Expect.isLessThan (relativeError (host cls).Values expectedFeatures.Values) 1e-5 "features"
              Expect.isLessThan (relativeError (host logits).Values expectedLogits.Values) 1e-5 "logits"
          }

          test "the query after k blocks is the final norm of the class token after k blocks" {
              use model = Checkpoint.load (fixture "vit_depth5.safetensors") { LoadOptions.defaults with Heads = Some 2 }
              use input = tensorOf (fixture "input_32.npy")
              let sd = model.state_dict ()
              // Blocks one by one through their plain (all-token) forward, then the final norm by hand.
              let after (k: int) =
                  use _ = torch.no_grad ()
                  let mutable x = model.Embed input
                  for i in 0 .. k - 1 do
                      let next = model.Blocks[i].forward x
                      x.Dispose()
                      x <- next
                  x
              for k in 1 .. 5 do
                  use tokens = after k
                  use cls = tokens.select (1, 0L)
                  use expected = torch.nn.functional.layer_norm (cls, [| 32L |], sd["norm.weight"], sd["norm.bias"], 1e-6)
                  for j in 0 .. k do
                      use start = after j
                      use q = model.QueryFrom(start, j, k)
                      let err = relativeError (host q).Values (host expected).Values
                      Expect.isLessThan err 1e-6 (sprintf "query after %d blocks from tokens after %d" k j)
              // An ordinary tensor without gradient: autograd may save it (inference tensors cannot be).
              use tokens = after 0
              use q = model.QueryFrom(tokens, 0, 5)
              Expect.isFalse q.requires_grad "no gradient"
              use w = torch.randn ([| 32L; 3L |], requires_grad = true)
              use product = torch.mm (q, w)
              use y = product.sum ()
              y.backward ()
              Expect.isNotNull w.grad "usable in a backward pass"
          }

          test "input of the wrong size is a clear error, not a libtorch crash" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              use input = torch.zeros (1L, 3L, 40L, 40L)
              Expect.throwsT<PromptingError> (fun () -> model.forward input |> ignore) "error"
          }

          test "a changed class count replaces the head and keeps the rest" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") { micro with Classes = Some 4 }
              use _ = torch.no_grad ()
              use input = tensorOf (fixture "input_32.npy")
              use features = model.ForwardFeatures input
              use logits = model.ForwardHead features
              Expect.equal logits.shape [| 4L; 4L |] "new head"
              let expected = Npy.read (fixture "expected_features_32.npy")
              Expect.isLessThan (relativeError (host (model.PreLogits features)).Values expected.Values) 1e-5 "features unchanged"
          }

          test "export then import reproduces the model exactly" {
              let dir = tempDir ()
              use model = Checkpoint.load (fixture "vit_micro.npz") micro
              let path = System.IO.Path.Combine(dir, "roundtrip.safetensors")
              Checkpoint.export path model
              // no --heads: our export records the head count in the metadata
              use reloaded = Checkpoint.load path LoadOptions.defaults
              Expect.equal reloaded.Config model.Config "config"
              for KeyValue(k, v) in model.state_dict () do
                  Expect.isTrue (v.equal(reloaded.state_dict()[k]).all().item<bool>()) (sprintf "%s identical" k)
          }

          testSequenced
          <| test "no tensor leaks across 100 forward calls" {
              use model = Checkpoint.load (fixture "vit_micro.safetensors") micro
              model.eval ()
              use input = tensorOf (fixture "input_32.npy")
              let forward () =
                  use _ = torch.no_grad ()
                  use out = model.forward input
                  ()
              forward ()
              // Garbage of earlier tests must not be finalised while this one counts.
              System.GC.Collect()
              System.GC.WaitForPendingFinalizers()
              let before = torch.Tensor.TotalCount
              for _ in 1 .. 100 do forward ()
              let after = torch.Tensor.TotalCount
              Expect.equal after before "live tensor count stays flat"
          } ]
