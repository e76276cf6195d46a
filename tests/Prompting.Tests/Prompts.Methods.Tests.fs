/// Method-specific checks against values computed by hand: tiny sizes, hand-picked parameters and
/// queries, and expected results written down or recomputed here with plain .NET arrays and loops
/// (never by calling the code under test). Where a check needs the backbone, the expected value
/// comes from running the backbone ourselves with a hook that encodes the specification.
module Prompting.Tests.PromptsMethods

open System
open Expecto
open TorchSharp
open Prompting.Vit
open Prompting.Prompts
open Prompting.Tests.Fixtures

// ------------------------------------------------------------------ plain .NET arithmetic

let private dot (a: float[]) (b: float[]) = Array.fold2 (fun s x y -> s + x * y) 0.0 a b
let private norm (a: float[]) = sqrt (dot a a)
let private cosine (a: float[]) (b: float[]) = dot a b / (norm a * norm b)
let private unit (a: float[]) = let n = norm a in a |> Array.map (fun x -> x / n)
let private add (a: float[]) (b: float[]) = Array.map2 (+) a b
let private sub (a: float[]) (b: float[]) = Array.map2 (-) a b
let private scale (s: float) (a: float[]) = a |> Array.map (fun x -> s * x)
let private neg (a: float[]) = scale -1.0 a
let private sumOf (width: int) (rows: float[] seq) = Seq.fold add (Array.zeroCreate width) rows
let private meanOf (rows: float[] list) = sumOf rows.Head.Length rows |> scale (1.0 / float rows.Length)

let private softmax (s: float[]) =
    let m = Array.max s
    let e = s |> Array.map (fun x -> exp (x - m))
    let z = Array.sum e
    e |> Array.map (fun x -> x / z)

let private argmin (xs: float[]) = xs |> Array.indexed |> Array.minBy snd |> fst
let private argmax (xs: float[]) = xs |> Array.indexed |> Array.maxBy snd |> fst

/// Indices of the k largest values, largest first.
let private topK k (xs: float[]) =
    xs |> Array.indexed |> Array.sortBy (fun (i, v) -> -v, i) |> Array.take k |> Array.map fst

/// LayerNorm with unit weight, zero bias and eps 1e-6.
let private layerNorm (x: float[]) =
    let n = float x.Length
    let mean = Array.sum x / n
    let variance = (x |> Array.sumBy (fun v -> (v - mean) * (v - mean))) / n
    x |> Array.map (fun v -> (v - mean) / sqrt (variance + 1e-6))

let private rowsOf (width: int) (flat: float[]) = Array.chunkBySize width flat

/// Deterministic hand-chosen values: distinct for distinct seeds, all in (−0.9, 0.9).
let private pattern (seed: float) (n: int) = Array.init n (fun i -> 0.9 * sin (seed * 1.3 + 0.7 * float i + 0.11 * float (i * i)))

/// Token t of entry e of a (M, S, D) parameter given flat.
let private token (flat: float[]) (stored: int) (width: int) (e: int) (t: int) =
    flat.[(e * stored + t) * width .. (e * stored + t) * width + width - 1]

// ------------------------------------------------------------------ tensors in and out

let private tensor (shape: int list) (values: float[]) =
    torch.tensor (values |> Array.map float32, ReadOnlySpan<int64>(shape |> List.map int64 |> Array.ofList))

/// (B, n, D) from per-sample token rows.
let private batchOf (perSample: float[][][]) =
    tensor [ perSample.Length; perSample.[0].Length; perSample.[0].[0].Length ] (perSample |> Array.collect Array.concat)

let private valuesOf (t: torch.Tensor) = (host t).Values |> Array.map float

let private idsOf (t: torch.Tensor) =
    use c = t.cpu().to_type(torch.int64).contiguous ()
    c.data<int64>().ToArray() |> Array.map int

let private parameter (m: torch.nn.Module) (name: string) : torch.Tensor =
    match m.named_parameters () |> Seq.tryPick (fun struct (n, p) -> if n = name then Some p else None) with
    | Some p -> p
    | None -> failtestf "no parameter %s among %A" name [ for struct (n, _) in m.named_parameters () -> n ]

let private assign (m: torch.nn.Module) (name: string) (values: float[]) =
    let p = parameter m name
    use _ = torch.no_grad ()
    use source = torch.tensor (values |> Array.map float32, ReadOnlySpan<int64> p.shape)
    p.copy_ source |> ignore

let private get (m: torch.nn.Module) (name: string) = valuesOf (parameter m name)

let private gradOf (m: torch.nn.Module) (name: string) =
    let p = parameter m name
    let g = p.grad
    if isNull g then Array.zeroCreate (int (p.numel ())) else valuesOf g

// ------------------------------------------------------------------ expectations

let private maxDiff (a: float[]) (b: float[]) =
    if a.Length <> b.Length then infinity else Array.fold2 (fun m x y -> max m (abs (x - y))) 0.0 a b

let private expectClose (tol: float) (actual: float[]) (expected: float[]) (what: string) =
    Expect.equal actual.Length expected.Length (what + ": element count")
    let d = maxDiff actual expected
    Expect.isLessThanOrEqual d tol (sprintf "%s: max |difference| %g\n  actual   %A\n  expected %A" what d actual expected)

/// The alternative reading must be told apart from the right one (the check discriminates).
let private expectApart (tol: float) (a: float[]) (b: float[]) (what: string) =
    let d = maxDiff a b
    Expect.isGreaterThan d tol (sprintf "%s: should differ, max |difference| only %g" what d)

let private expectScalar (tol: float) (actual: torch.Tensor option) (expected: float) (what: string) =
    match actual with
    | None -> failtestf "%s: no auxiliary loss" what
    | Some t ->
        let v = (valuesOf t).[0]
        Expect.isLessThan (abs (v - expected)) tol (sprintf "%s: %.9g, expected %.9g" what v expected)

// ------------------------------------------------------------------ construction

let private keyedOf (m: Method) (i: int) =
    match m.Groups.[i].Source with
    | Keyed k -> k
    | s -> failtestf "%s group %d is not keyed: %A" m.Name i s

let private shapeOf (g: PromptGroup) (layers: int list) (width: int) (stored: int) (tasks: int) =
    { Group = g; Layers = layers; Width = width; PatchSize = 8; StoredLength = stored; Tasks = tasks }

let private context (q: torch.Tensor) (training: bool) (task: int) =
    { Query = Some q; Training = training; Task = task; Batch = q.shape.[0] }

let private width = 8

/// A 16 px, patch 8 ViT (4 patches, D = 8, 2 heads) with weights large enough that different
/// images give clearly different queries; every LayerNorm has weight 1 and bias 0.
let private tinyBackbone (depth: int) =
    let vit = new VisionTransformer(VitConfig.custom 16 8 depth width 2 0)
    use _ = torch.no_grad ()
    for struct (name, p) in vit.named_parameters () do
        if name.Contains "norm" then
            if name.EndsWith "weight" then torch.nn.init.ones_ p |> ignore else torch.nn.init.zeros_ p |> ignore
        elif p.dim () >= 2L && name <> "pos_embed" && name <> "cls_token" then
            torch.nn.init.normal_ (p, 0.0, 1.0 / sqrt (float (p.numel () / p.shape.[0]))) |> ignore
        else
            torch.nn.init.normal_ (p, 0.0, 0.5) |> ignore
    vit

/// Final-norm CLS of the un-prompted backbone, per sample.
let private queryOf (backbone: VisionTransformer) (images: torch.Tensor) =
    use _ = torch.no_grad ()
    use f = backbone.ForwardFeatures images
    use cls = f.select (1, 0L)
    valuesOf cls |> rowsOf width

/// Runs the backbone with our own hook: the final-norm tokens as [sample].[position] rows.
let private runWith (backbone: VisionTransformer) (images: torch.Tensor) (hook: BlockHook) =
    use _ = torch.no_grad ()
    use f = backbone.ForwardFeatures(images, hook)
    let b, n = int f.shape.[0], int f.shape.[1]
    let v = valuesOf f
    Array.init b (fun i -> Array.init n (fun t -> v.[(i * n + t) * width .. (i * n + t) * width + width - 1]))

let private clsOf (tokens: float[][][]) = tokens |> Array.collect (fun s -> s.[0])

let private insertAfterClass (x: torch.Tensor) (prompts: torch.Tensor) =
    torch.cat ([| x.narrow (1, 0L, 1L); prompts; x.narrow (1, 1L, x.shape.[1] - 1L) |], 1L)

let private prefixHook (at: int -> (torch.Tensor * torch.Tensor) option) : BlockHook =
    fun layer x ->
        { Tokens = x
          Prefix = at layer |> Option.map (fun (k, v) -> { Key = k; Value = v })
          MlpAdapter = None
          Modulation = None }

/// Key and value prefixes (B, n, D): for sample b the given tokens of entry entries.[b].
let private keyValue (flat: float[]) (stored: int) (entries: int[][]) (keyTokens: int list) (valueTokens: int list) =
    let take tokens = batchOf [| for ids in entries -> [| for e in ids do for t in tokens -> token flat stored width e t |] |]
    take keyTokens, take valueTokens

let private images (count: int64) = torch.randn (count, 3L, 16L, 16L)

// ================================================================== L2P

/// Hand-picked keys (different norms, so an un-normalised key would change the ranking) and
/// queries; cos(q, K) and the resulting top-2 are written beside them.
let private l2pKeys = [| [| 1.0; 0.0; 0.0 |]; [| 0.0; 1.0; 0.0 |]; [| 3.0; 3.0; 0.0 |]; [| 0.0; 0.0; 0.5 |] |]
let private l2pQueries =
    [| [| 2.0; 1.0; 0.0 |] //  cos: .894 .447 .949 0      → [2; 0]
       [| 0.0; 1.0; 3.0 |] //  cos: 0 .316 .224 .949      → [3; 1]
       [| 1.0; 2.0; 2.5 |] //  cos: .298 .596 .632 .745   → [3; 2]
       [| 0.0; 1.0; 0.1 |] |] // cos: 0 .995 .704 .0995   → [1; 2]
let private l2pTop2 = [| [| 2; 0 |]; [| 3; 1 |]; [| 3; 2 |]; [| 1; 2 |] |]
let private l2pPrompts = Array.init 4 (fun j -> [| for c in 1 .. 3 -> float (10 * j + c) |])

let private l2pSource (k: KeyedPool) =
    let g = { Methods.l2p.Groups.Head with Length = 1; Source = Keyed k }
    let source = new PoolSource(shapeOf g [ 0 ] 3 1 1)
    assign source "keys" (Array.concat l2pKeys)
    assign source "layer0.prompt" (Array.concat l2pPrompts)
    source

let private l2pSmall = { keyedOf Methods.l2p 0 with PoolSize = 4; TopK = 2 }

let private l2pTests =
    [ test "top-k ids in order of decreasing cosine, and their prompts" {
          use source = l2pSource l2pSmall
          use q = tensor [ 4; 3 ] (Array.concat l2pQueries)
          let out = source.Prepare(context q false 0)
          let independent = l2pQueries |> Array.map (fun qb -> topK 2 (l2pKeys |> Array.map (cosine qb)))
          Expect.equal independent l2pTop2 "the hand-written top-2 agree with the loop"
          Expect.sequenceEqual (idsOf out.Chosen.Value) (Array.concat l2pTop2) "chosen ids (B, k)"
          let prompts = out.At 0 |> Option.get
          Expect.sequenceEqual prompts.shape [| 4L; 2L; 1L; 3L |] "(B, k, S, D)"
          expectClose 0.0 (valuesOf prompts) (l2pTop2 |> Array.collect (Array.collect (fun j -> l2pPrompts.[j]))) "gathered prompts"
          Expect.isNone out.AuxLoss "no pull loss at evaluation"
      }

      test "pull loss values for every PullLoss variant" {
          let cos b j = cosine l2pQueries.[b] l2pKeys.[j]
          let batch = 4.0
          let w = 0.5
          let own f = Seq.sum (seq { for b in 0 .. 3 do for j in l2pTop2.[b] -> f b j })
          let cases =
              [ NegativeCosine, -(own cos) / batch * w
                OneMinusCosine, own (fun b j -> 1.0 - cos b j) / batch * w
                OneMinusCosineSummed, own (fun b j -> 1.0 - cos b j) * w
                // every sample b against every sample b′'s chosen keys: a (B, B, k) sum
                CrossSampleQuirk,
                Seq.sum (seq { for b in 0 .. 3 do for b' in 0 .. 3 do for j in l2pTop2.[b'] -> 1.0 - cos b j }) * w ]
          for loss, expected in cases do
              use source = l2pSource { l2pSmall with PullLoss = loss; PullWeight = w }
              use q = tensor [ 4; 3 ] (Array.concat l2pQueries)
              let out = source.Prepare(context q true 0)
              Expect.sequenceEqual (idsOf out.Chosen.Value) (Array.concat l2pTop2) (sprintf "%A: training uses the top-k" loss)
              expectScalar 1e-5 out.AuxLoss expected (sprintf "%A" loss)
          // the literal value of the simplest case, to pin the loop down as well
          let negative = -(2.0 / sqrt 5.0 + 3.0 / sqrt 10.0) // sample 0 alone: cos to K2 and K0
          use one = l2pSource { l2pSmall with PullWeight = 1.0 }
          use q0 = tensor [ 1; 3 ] l2pQueries.[0]
          expectScalar 1e-6 (one.Prepare(context q0 true 0)).AuxLoss negative "NegativeCosine for one sample"
      }

      test "batch-wise selection: the k most frequent ids (ties to the lower id), only when enabled" {
          // top-2 counts over the batch: id 0 ×1, id 1 ×2, id 2 ×3, id 3 ×2 → [2; 1] (1 beats 3 on the tie)
          let counts = Array.zeroCreate 4
          for ids in l2pTop2 do for j in ids do counts.[j] <- counts.[j] + 1
          let major = [| 0 .. 3 |] |> Array.sortBy (fun j -> -counts.[j], j) |> Array.take 2
          Expect.equal major [| 2; 1 |] "hand count"
          for training in [ false; true ] do
              use on = l2pSource { l2pSmall with BatchwiseSelection = true; PullWeight = 1.0 }
              use q = tensor [ 4; 3 ] (Array.concat l2pQueries)
              let out = on.Prepare(context q training 0)
              Expect.sequenceEqual (idsOf out.Chosen.Value) (Array.concat (Array.replicate 4 major)) (sprintf "flag on (training %b)" training)
              expectClose 0.0 (valuesOf (out.At 0).Value) (Array.replicate 4 major |> Array.collect (Array.collect (fun j -> l2pPrompts.[j]))) "every sample gets the batch's prompts"
              if training then
                  let expected = -(Seq.sum (seq { for b in 0 .. 3 do for j in major -> cosine l2pQueries.[b] l2pKeys.[j] })) / 4.0
                  expectScalar 1e-5 out.AuxLoss expected "the pull loss uses the batch-wise ids"
              use off = l2pSource l2pSmall
              let plain = off.Prepare(context q training 0)
              Expect.sequenceEqual (idsOf plain.Chosen.Value) (Array.concat l2pTop2) (sprintf "flag off (training %b): per sample" training)
          Expect.isFalse (keyedOf Methods.l2p 0).BatchwiseSelection "off by default"
      }

      test "l2p: [CLS, P + pos(CLS), patches]; the head reads exactly the mean of the prompt outputs" {
          torch.manual_seed 11L |> ignore
          let backbone = tinyBackbone 2
          let g = Methods.l2p.Groups.Head
          let method = { Methods.l2p with Groups = [ { g with Length = 2; Source = Keyed l2pSmall } ] }
          use model = PromptedModel.build method (TaskLayout.uniform 2 4) backbone
          use input = images 3L
          let prompts = pattern 1.0 (4 * 2 * width)
          let keys = pattern 2.0 (4 * width)
          assign model "prompts.pool.layer0.prompt" prompts
          assign model "prompts.pool.keys" keys
          let out = model.Forward(input, false)
          let q = queryOf backbone input
          let ids = q |> Array.map (fun qb -> topK 2 (rowsOf width keys |> Array.map (cosine qb)))
          Expect.sequenceEqual (idsOf out.Chosen.Value) (Array.concat ids) "ids from the un-prompted query"
          let pos0 = (get backbone "pos_embed").[0 .. width - 1]
          // reference: our own hook puts N·L = 4 prompt tokens after CLS; the head reads positions 1..4
          let reference withPosition =
              let selected =
                  ids |> Array.map (fun idb -> [| for e in idb do for t in 0 .. 1 -> (let p = token prompts 2 width e t in if withPosition then add p pos0 else p) |])
              use p = batchOf selected
              let lengths = ResizeArray()
              let tokens =
                  runWith backbone input (fun layer x ->
                      let next = if layer = 0 then insertAfterClass x p else x
                      lengths.Add(next.shape.[1])
                      BlockInput.plain next)
              Expect.sequenceEqual lengths [ 9L; 9L ] "1 + N·L + patches tokens"
              tokens |> Array.collect (fun s -> meanOf [ s.[1]; s.[2]; s.[3]; s.[4] ])
          let expected = reference true
          expectClose 1e-5 (valuesOf out.Features) expected "prompt-mean features"
          expectApart 1e-3 (valuesOf out.Features) (reference false) "without CLS's position embedding"
          let w = get model "head.fc.weight" |> rowsOf width
          let bias = get model "head.fc.bias"
          let logits = rowsOf width expected |> Array.collect (fun f -> Array.init 4 (fun c -> dot w.[c] f + bias.[c]))
          expectClose 1e-5 (valuesOf out.Logits) logits "logits = W·mean + b"
      }

      // Blocks are permutation-equivariant over tokens, so a layout shows only in which positions the
      // head reads and in the position embedding the prompts carry: both are checked here.
      test "l2p-jax: [P, CLS, patches] with no position embedding; prompt mean over 0..N·L−1, CLS at N·L" {
          torch.manual_seed 12L |> ignore
          let backbone = tinyBackbone 2
          let g = Methods.l2pJax.Groups.Head
          let k = { keyedOf Methods.l2pJax 0 with PoolSize = 4; TopK = 2 }
          let method = { Methods.l2pJax with Groups = [ { g with Length = 2; Source = Keyed k } ] }
          let classHead = { method with HeadInput = ClassToken }
          use model = PromptedModel.build method (TaskLayout.uniform 2 4) backbone
          use classModel = PromptedModel.build classHead (TaskLayout.uniform 2 4) backbone
          use input = images 2L
          let prompts = pattern 3.0 (4 * 2 * width)
          let keys = pattern 4.0 (4 * width)
          for m in [ model; classModel ] do
              assign m "prompts.pool.layer0.prompt" prompts
              assign m "prompts.pool.keys" keys
          let q = queryOf backbone input
          let ids = q |> Array.map (fun qb -> topK 2 (rowsOf width keys |> Array.map (cosine qb)))
          let pos0 = (get backbone "pos_embed").[0 .. width - 1]
          let reference withPosition =
              let selected =
                  ids |> Array.map (fun idb -> [| for e in idb do for t in 0 .. 1 -> (let p = token prompts 2 width e t in if withPosition then add p pos0 else p) |])
              use p = batchOf selected
              runWith backbone input (fun layer x ->
                  BlockInput.plain (if layer = 0 then torch.cat ([| p; x |], 1L) else x))
          let tokens = reference false
          let promptMean = tokens |> Array.collect (fun s -> meanOf [ s.[0]; s.[1]; s.[2]; s.[3] ])
          let out = model.Forward(input, false)
          expectClose 1e-5 (valuesOf out.Features) promptMean "prompt mean over positions 0..3"
          expectApart 1e-3 (valuesOf out.Features) ((reference true) |> Array.collect (fun s -> meanOf [ s.[0]; s.[1]; s.[2]; s.[3] ])) "with a position embedding"
          let cls = classModel.Forward(input, false)
          expectClose 1e-5 (valuesOf cls.Features) (tokens |> Array.collect (fun s -> s.[4])) "class-token head reads index N·L = 4"
          expectApart 1e-3 (valuesOf cls.Features) (tokens |> Array.collect (fun s -> s.[0])) "index 0 holds a prompt, not CLS"
      } ]

// ================================================================== DualPrompt

let private dualSmall tasks =
    let d = Methods.dualPrompt tasks
    { d with Groups = [ { d.Groups.[0] with Length = 2 }; { d.Groups.[1] with Length = 2 } ] }

let private dualCodaSmall =
    let d = Methods.dualPromptCoda
    { d with
        Groups =
            [ { d.Groups.[0] with Length = 2 }
              { d.Groups.[1] with Length = 4; Source = Keyed { keyedOf d 1 with PoolSize = 3 } } ] }

let private dualTests =
    [ test "dualprompt: G prefixes at 0-1, E at 2-4, nowhere else; K = first L stored tokens, V = next L" {
          torch.manual_seed 21L |> ignore
          let backbone = tinyBackbone 6
          use model = PromptedModel.build (dualSmall 3) (TaskLayout.uniform 3 6) backbone
          use input = images 2L
          model.BeginTask 1
          let q = queryOf backbone input
          // keys pointing at the queries: sample 0 matches entry 2, sample 1 entry 0 (never task 1)
          let keys = [| q.[1]; neg (add q.[0] q.[1]); q.[0] |]
          let evalIds = q |> Array.map (fun qb -> argmax (keys |> Array.map (cosine qb)))
          Expect.equal evalIds [| 2; 0 |] "hand-built keys give these top-1 entries"
          assign model "prompts.e.keys" (Array.concat keys)
          let g = Map.ofList [ for l in 0 .. 1 -> l, pattern (float l) (1 * 4 * width) ]
          let e = Map.ofList [ for l in 2 .. 4 -> l, pattern (10.0 + float l) (3 * 4 * width) ]
          for KeyValue(l, v) in g do assign model (sprintf "prompts.g.layer%d.prompt" l) v
          for KeyValue(l, v) in e do assign model (sprintf "prompts.e.layer%d.prompt" l) v
          let kvG l = keyValue g.[l] 4 [| [| 0 |]; [| 0 |] |] [ 0; 1 ] [ 2; 3 ]
          let kvE l (ids: int[]) = keyValue e.[l] 4 (ids |> Array.map (fun i -> [| i |])) [ 0; 1 ] [ 2; 3 ]
          let correct ids layer =
              if layer <= 1 then Some(kvG layer) elif layer <= 4 then Some(kvE layer ids) else None
          let run at = runWith backbone input (prefixHook at) |> clsOf
          let out = model.Forward(input, false)
          Expect.sequenceEqual (idsOf out.Chosen.Value) evalIds "evaluation: top-1 key match"
          let expected = run (correct evalIds)
          expectClose 1e-5 (valuesOf out.Features) expected "evaluation features"
          // every alternative placement or split must be distinguishable from what the model did
          for dropped in 0 .. 4 do
              expectApart 1e-4 expected (run (fun l -> if l = dropped then None else correct evalIds l)) (sprintf "no prefix at layer %d" dropped)
          expectApart 1e-4 expected (run (fun l -> if l = 5 then Some(kvG 1) else correct evalIds l)) "an extra prefix at layer 5"
          expectApart 1e-4 expected (run (fun l -> if l >= 2 && l <= 4 then Some(keyValue e.[l] 4 [| [| 2 |]; [| 0 |] |] [ 2; 3 ] [ 0; 1 ]) else correct evalIds l)) "key and value halves swapped"
          expectApart 1e-4 expected (run (correct [| 0; 2 |])) "E prompts exchanged between samples"
          // training: the true task's entry whatever the keys say, and the pull loss 1 − cos(q, k_task)
          let train = model.Forward(input, true)
          Expect.sequenceEqual (idsOf train.Chosen.Value) [| 1; 1 |] "training: the task's entry"
          expectClose 1e-5 (valuesOf train.Features) (run (correct [| 1; 1 |])) "training features"
          let pull = (q |> Array.sumBy (fun qb -> 1.0 - cosine qb keys.[1])) / 2.0
          expectClose 1e-5 [| (valuesOf train.AuxLoss).[0] |] [| pull |] "pull loss Σ(1 − cos(q, k_task))/B"
      }

      test "dualprompt-coda: split halves, and each layer chooses with its own keys" {
          torch.manual_seed 22L |> ignore
          let backbone = tinyBackbone 6
          use model = PromptedModel.build dualCodaSmall (TaskLayout.uniform 3 6) backbone
          use input = images 2L
          model.BeginTask 1
          let q = queryOf backbone input
          let other = neg (add q.[0] q.[1])
          let keys =
              Map.ofList
                  [ 2, [| q.[0]; q.[1]; other |] // → [0; 1]
                    3, [| other; q.[0]; q.[1] |] // → [1; 2]
                    4, [| q.[1]; other; q.[0] |] ] // → [2; 0]
          let chosen = keys |> Map.map (fun _ ks -> q |> Array.map (fun qb -> argmax (ks |> Array.map (cosine qb))))
          Expect.equal chosen (Map.ofList [ 2, [| 0; 1 |]; 3, [| 1; 2 |]; 4, [| 2; 0 |] ]) "independent choices per layer"
          for KeyValue(l, ks) in keys do assign model (sprintf "prompts.e.layer%d.keys" l) (Array.concat ks)
          let g = Map.ofList [ for l in 0 .. 1 -> l, pattern (30.0 + float l) (1 * 2 * width) ]
          let e = Map.ofList [ for l in 2 .. 4 -> l, pattern (40.0 + float l) (3 * 4 * width) ]
          for KeyValue(l, v) in g do assign model (sprintf "prompts.g.layer%d.prompt" l) v
          for KeyValue(l, v) in e do assign model (sprintf "prompts.e.layer%d.prompt" l) v
          // G: length 2 → 1 key + 1 value token; E: length 4 → tokens 0-1 keys, 2-3 values
          let kvE l (ids: int[]) = keyValue e.[l] 4 (ids |> Array.map (fun i -> [| i |])) [ 0; 1 ] [ 2; 3 ]
          let reference (idsAt: int -> int[]) layer =
              if layer <= 1 then Some(keyValue g.[layer] 2 [| [| 0 |]; [| 0 |] |] [ 0 ] [ 1 ])
              elif layer <= 4 then Some(kvE layer (idsAt layer))
              else None
          let run at = runWith backbone input (prefixHook at) |> clsOf
          let out = model.Forward(input, false)
          Expect.sequenceEqual (idsOf out.Chosen.Value) chosen.[2] "reported choice: the first layer's"
          let expected = run (reference (fun l -> chosen.[l]))
          expectClose 1e-5 (valuesOf out.Features) expected "evaluation with per-layer choices"
          expectApart 1e-4 expected (run (reference (fun _ -> chosen.[2]))) "one choice for all layers"
          expectApart 1e-4 expected (run (fun l -> if l <= 1 then Some(keyValue g.[l] 2 [| [| 0 |]; [| 0 |] |] [ 1 ] [ 0 ]) else reference (fun l -> chosen.[l]) l)) "G halves swapped"
          let train = model.Forward(input, true)
          expectClose 1e-5 (valuesOf train.Features) (run (reference (fun _ -> [| 1; 1 |]))) "training: the task's entry at every layer"
          let pull = Seq.sum (seq { for l in 2 .. 4 do for qb in q -> 1.0 - cosine qb keys.[l].[1] })
          expectClose 1e-4 [| (valuesOf train.AuxLoss).[0] |] [| pull |] "pull loss Σ_layers Σ_b (1 − cos), not averaged"
      }

      test "split halves per selected prompt (l2p++ with top-2): keys are each prompt's first L/2 tokens" {
          torch.manual_seed 23L |> ignore
          let backbone = tinyBackbone 2
          let pp = Methods.l2pPlusPlus
          let method = { pp with Groups = [ { pp.Groups.Head with Length = 4; Source = Keyed { keyedOf pp 0 with PoolSize = 4; TopK = 2 } } ] }
          use model = PromptedModel.build method (TaskLayout.uniform 2 4) backbone
          use input = images 2L
          let prompts = pattern 50.0 (4 * 4 * width)
          let keys = pattern 51.0 (4 * width)
          assign model "prompts.pool.layer0.prompt" prompts
          assign model "prompts.pool.keys" keys
          let q = queryOf backbone input
          let ids = q |> Array.map (fun qb -> topK 2 (rowsOf width keys |> Array.map (cosine qb)))
          let out = model.Forward(input, false)
          Expect.sequenceEqual (idsOf out.Chosen.Value) (Array.concat ids) "ids by decreasing cosine"
          let run at = runWith backbone input (prefixHook at) |> clsOf
          let expected = run (fun l -> if l = 0 then Some(keyValue prompts 4 ids [ 0; 1 ] [ 2; 3 ]) else None)
          expectClose 1e-5 (valuesOf out.Features) expected "K = [P_a.[0:2]; P_b.[0:2]], V = [P_a.[2:4]; P_b.[2:4]]"
          // splitting the concatenation instead (K = all of P_a, V = all of P_b)
          let concatSplit =
              let kv = ids |> Array.map (fun idb -> [| for t in 0 .. 3 -> token prompts 4 width idb.[0] t |]), ids |> Array.map (fun idb -> [| for t in 0 .. 3 -> token prompts 4 width idb.[1] t |])
              run (fun l -> if l = 0 then Some(batchOf (fst kv), batchOf (snd kv)) else None)
          expectApart 1e-4 expected concatSplit "halving the concatenation"
      }

      test "BeginTask copies E entry t−1 into t for dualprompt only" {
          let backbone = tinyBackbone 6
          use dual = PromptedModel.build (dualSmall 3) (TaskLayout.uniform 3 6) backbone
          use coda = PromptedModel.build dualCodaSmall (TaskLayout.uniform 3 6) (tinyBackbone 6)
          let entries (m: PromptedModel) l = get m (sprintf "prompts.e.layer%d.prompt" l) |> Array.chunkBySize (4 * width)
          for l in 2 .. 4 do assign dual (sprintf "prompts.e.layer%d.prompt" l) (pattern (float l) (3 * 4 * width))
          let before = Map.ofList [ for l in 2 .. 4 -> l, entries dual l ]
          let g = get dual "prompts.g.layer0.prompt"
          let keys = get dual "prompts.e.keys"
          dual.BeginTask 1
          for l in 2 .. 4 do
              let after = entries dual l
              Expect.equal after.[1] before.[l].[0] (sprintf "layer %d: entry 1 starts as entry 0" l)
              Expect.equal after.[0] before.[l].[0] (sprintf "layer %d: entry 0 unchanged" l)
              Expect.equal after.[2] before.[l].[2] (sprintf "layer %d: entry 2 unchanged" l)
          Expect.equal (get dual "prompts.g.layer0.prompt") g "G untouched"
          Expect.equal (get dual "prompts.e.keys") keys "keys untouched"
          assign dual "prompts.e.layer3.prompt" (pattern 9.0 (3 * 4 * width))
          let entry1 = (entries dual 3).[1]
          dual.BeginTask 2
          Expect.equal (entries dual 3).[2] entry1 "task 2 starts from entry 1"
          for l in 2 .. 4 do assign coda (sprintf "prompts.e.layer%d.prompt" l) (pattern (float l) (3 * 4 * width))
          let codaBefore = [ for l in 2 .. 4 -> get coda (sprintf "prompts.e.layer%d.prompt" l) ]
          coda.BeginTask 1
          coda.BeginTask 2
          Expect.equal [ for l in 2 .. 4 -> get coda (sprintf "prompts.e.layer%d.prompt" l) ] codaBefore "dualprompt-coda: no copying"
      }

      test "keyed pool sources: training picks the task entry, evaluation the top-1; per-layer keys choose independently" {
          let e0, e1, e2 = [| 1.0; 0.0; 0.0 |], [| 0.0; 1.0; 0.0 |], [| 0.0; 0.0; 1.0 |]
          let q = [| [| 3.0; 1.0; 0.0 |]; [| 0.0; 1.0; 2.0 |] |]
          let prompts l = Array.init 3 (fun j -> [| float (100 * l + j); 0.5; -0.5 |])
          let dual = Methods.dualPrompt 3
          // one key set for the group (original): a single choice for every layer
          let shared = new PoolSource(shapeOf { dual.Groups.[1] with Length = 1 } [ 2; 3; 4 ] 3 1 3)
          assign shared "keys" (Array.concat [| e1; e0; e2 |])
          for l in 2 .. 4 do assign shared (sprintf "layer%d.prompt" l) (Array.concat (prompts l))
          use query = tensor [ 2; 3 ] (Array.concat q)
          let evalOut = shared.Prepare(context query false 1)
          Expect.sequenceEqual (idsOf evalOut.Chosen.Value) [| 1; 2 |] "top-1 of [e1; e0; e2]"
          for l in 2 .. 4 do
              expectClose 0.0 (valuesOf (evalOut.At l).Value) (Array.append (prompts l).[1] (prompts l).[2]) (sprintf "layer %d uses the shared choice" l)
          let trainOut = shared.Prepare(context query true 1)
          Expect.sequenceEqual (idsOf trainOut.Chosen.Value) [| 1; 1 |] "training: the task's entry"
          // 1 − cos(q, k_1) with k_1 = e0: 1 − 3/√10 and 1 − 0, averaged over B = 2
          expectScalar 1e-6 trainOut.AuxLoss ((1.0 - 3.0 / sqrt 10.0 + 1.0) / 2.0) "pull loss (1 − cos)/B"
          // per-layer keys (CODA repository): layer 2 [e0 e1 e2], layer 3 [e1 e2 e0], layer 4 [e2 e0 e1]
          let coda = { Methods.dualPromptCoda.Groups.[1] with Length = 2; Source = Keyed { keyedOf Methods.dualPromptCoda 1 with PoolSize = 3 } }
          let perLayer = new PoolSource(shapeOf coda [ 2; 3; 4 ] 3 1 3)
          assign perLayer "layer2.keys" (Array.concat [| e0; e1; e2 |])
          assign perLayer "layer3.keys" (Array.concat [| e1; e2; e0 |])
          assign perLayer "layer4.keys" (Array.concat [| e2; e0; e1 |])
          for l in 2 .. 4 do assign perLayer (sprintf "layer%d.prompt" l) (Array.concat (prompts l))
          let out = perLayer.Prepare(context query false 0)
          // q0 = (3, 1, 0) picks the key e0, q1 = (0, 1, 2) the key e2
          for l, ids in [ 2, [| 0; 2 |]; 3, [| 2; 1 |]; 4, [| 1; 0 |] ] do
              expectClose 0.0 (valuesOf (out.At l).Value) (Array.append (prompts l).[ids.[0]] (prompts l).[ids.[1]]) (sprintf "layer %d chooses %A" l ids)
      } ]

// ================================================================== CODA-Prompt

let private codaGroup components length weight =
    { Methods.codaPrompt.Groups.Head with Length = length; Source = Components { Components = components; OrthogonalityWeight = weight } }

let private codaTests =
    [ test "alpha = cos(q ⊙ A_k, K_k) and the prompt is Σ α_k P_k" {
          let keys = [| [| 1.0; 1.0; 0.0 |]; [| 0.0; 1.0; 2.0 |]; [| 1.0; 0.0; -1.0 |] |]
          let attention = [| [| 1.0; 0.0; 1.0 |]; [| 2.0; 1.0; 0.0 |]; [| 0.5; 0.5; 0.5 |] |]
          // token 0 of P_k is the unit vector e_k, so the mixed token 0 reads α directly
          let second = [| [| 0.5; -1.0; 2.0 |]; [| 1.0; 1.0; 1.0 |]; [| -2.0; 0.0; 0.25 |] |]
          let prompts = Array.init 3 (fun k -> Array.append (Array.init 3 (fun i -> if i = k then 1.0 else 0.0)) second.[k])
          let q = [| [| 1.0; 2.0; 3.0 |]; [| -1.0; 0.5; 2.0 |] |]
          use source = new ComponentSource(shapeOf (codaGroup 3 2 0.0) [ 0 ] 3 2 1)
          assign source "layer0.keys" (Array.concat keys)
          assign source "layer0.attention" (Array.concat attention)
          assign source "layer0.prompt" (Array.concat prompts)
          use query = tensor [ 2; 3 ] (Array.concat q)
          let out = source.Prepare(context query false 0)
          let alpha = q |> Array.map (fun qb -> Array.init 3 (fun k -> cosine (Array.map2 (*) qb attention.[k]) keys.[k]))
          // by hand: q0 ⊙ A0 = (1, 0, 3) against (1, 1, 0): 1/√20; q0 ⊙ A1 = (2, 2, 0) against (0, 1, 2): 2/√40;
          // q0 ⊙ A2 = (.5, 1, 1.5) against (1, 0, −1): −1/√7
          expectClose 1e-12 alpha.[0] [| 1.0 / sqrt 20.0; 2.0 / sqrt 40.0; -1.0 / sqrt 7.0 |] "the loop against the hand values"
          let mixed = valuesOf (out.At 0).Value
          Expect.sequenceEqual (out.At 0).Value.shape [| 2L; 1L; 2L; 3L |] "(B, 1, S, D)"
          let expected = alpha |> Array.collect (fun a -> sumOf 6 (Array.mapi (fun k p -> scale a.[k] p) prompts))
          expectClose 1e-6 mixed expected "Σ α_k P_k"
          expectClose 1e-6 mixed.[0..2] alpha.[0] "token 0 of sample 0 is α"
          Expect.isNone out.AuxLoss "no penalty at evaluation"
      }

      test "visible components: task t in training (earlier ones without gradient), all up to t at evaluation" {
          // 4 components, 2 tasks: task 0 owns rows 0-1, task 1 rows 2-3; all rows non-zero on purpose
          let keys, attention, prompts = pattern 60.0 12, pattern 61.0 12, pattern 62.0 (4 * 2 * 3)
          let q = [| [| 1.0; -2.0; 0.5 |]; [| 0.3; 0.7; -1.1 |] |]
          let mix (rows: int list) =
              q |> Array.collect (fun qb ->
                  sumOf 6 [ for k in rows -> scale (cosine (Array.map2 (*) qb (rowsOf 3 attention).[k]) (rowsOf 3 keys).[k]) (rowsOf 6 prompts).[k] ])
          let source () =
              let s = new ComponentSource(shapeOf (codaGroup 4 2 0.0) [ 0 ] 3 2 2)
              assign s "layer0.keys" keys
              assign s "layer0.attention" attention
              assign s "layer0.prompt" prompts
              s
          use query = tensor [ 2; 3 ] (Array.concat q)
          let grads = [| pattern 63.0 6; pattern 64.0 6 |]
          for task, training, rows in [ 0, false, [ 0; 1 ]; 1, false, [ 0 .. 3 ]; 0, true, [ 0; 1 ]; 1, true, [ 0 .. 3 ] ] do
              use s = source ()
              let out = s.Prepare(context query training task)
              let value = (out.At 0).Value
              expectClose 1e-6 (valuesOf value) (mix rows) (sprintf "task %d, training %b: components %A" task training rows)
              if training then
                  use g = tensor [ 2; 1; 2; 3 ] (Array.concat grads)
                  use objective = (value * g).sum ()
                  objective.backward ()
                  let trained = if task = 0 then [ 0; 1 ] else [ 2; 3 ]
                  for name, w in [ "keys", 3; "attention", 3; "prompt", 6 ] do
                      let gr = gradOf s ("layer0." + name) |> rowsOf w
                      for k in 0 .. 3 do
                          if List.contains k trained then
                              Expect.isGreaterThan (norm gr.[k]) 1e-6 (sprintf "task %d: %s row %d trains" task name k)
                          else
                              Expect.equal gr.[k] (Array.zeroCreate w) (sprintf "task %d: %s row %d gets no gradient" task name k)
                  // the prompt gradient of a trained row is Σ_b α_{b,k} G_b
                  let gp = gradOf s "layer0.prompt" |> rowsOf 6
                  for k in trained do
                      let expected = sumOf 6 [ for b in 0 .. 1 -> scale (cosine (Array.map2 (*) q.[b] (rowsOf 3 attention).[k]) (rowsOf 3 keys).[k]) grads.[b] ]
                      expectClose 1e-6 gp.[k] expected (sprintf "prompt row %d gradient" k)
          use s = source ()
          let task0 = s.Prepare(context query false 0)
          expectApart 1e-3 (valuesOf (task0.At 0).Value) (mix [ 0 .. 3 ]) "task 0 must not see task 1's rows"
      }

      test "BeginTask: new rows orthonormal and orthogonal to earlier rows, future rows zero" {
          torch.manual_seed 31L |> ignore
          // 6 components, 3 tasks (2 rows each), D = 6, S = 2 (flattened prompts of 12)
          use source = new ComponentSource(shapeOf (codaGroup 6 2 0.0) [ 0 ] 6 2 3)
          let widths = [ "keys", 6; "attention", 6; "prompt", 12 ]
          let rows name w = get source ("layer0." + name) |> rowsOf w
          let orthonormal (rs: float[][]) (what: string) =
              for i in 0 .. rs.Length - 1 do
                  for j in 0 .. rs.Length - 1 do
                      Expect.isLessThan (abs (dot rs.[i] rs.[j] - (if i = j then 1.0 else 0.0))) 1e-5 (sprintf "%s: <r%d, r%d>" what i j)
          source.BeginTask 0
          for name, w in widths do
              let r = rows name w
              orthonormal r.[0..1] (name + " after task 0")
              for k in 2 .. 5 do Expect.equal r.[k] (Array.zeroCreate w) (sprintf "%s row %d (future) is zero" name k)
          // earlier rows replaced by hand-picked orthonormal rows that are not coordinate axes
          let handRows w =
              let a = Array.zeroCreate w
              let b = Array.zeroCreate w
              a.[0] <- 0.6; a.[1] <- 0.8
              b.[0] <- -0.48; b.[1] <- 0.36; b.[w - 1] <- 0.8
              // as stored: float32
              [| a; b |] |> Array.map (Array.map (float32 >> float))
          for name, w in widths do
              let current = rows name w
              assign source ("layer0." + name) (Array.concat (Array.append (handRows w) current.[2..]))
          orthonormal (handRows 6) "the hand rows themselves"
          source.BeginTask 1
          for name, w in widths do
              let r = rows name w
              Expect.equal r.[0..1] (handRows w) (name + ": earlier rows kept")
              orthonormal r.[0..3] (name + " rows 0-3 after task 1")
              for k in 4 .. 5 do Expect.equal r.[k] (Array.zeroCreate w) (sprintf "%s row %d (future) is zero" name k)
          source.BeginTask 2
          for name, w in widths do
              let r = rows name w
              Expect.equal r.[0..1] (handRows w) (name + ": earlier rows kept")
              orthonormal r (name + " all rows after task 2")
      }

      test "orthogonality penalty μ·Σ mean((X Xᵀ − I)²) over K, A and flattened P, summed over layers" {
          use source = new ComponentSource(shapeOf (codaGroup 2 1 0.5) [ 0; 1 ] 2 1 1)
          // layer 0: K Kᵀ − I = [[0,1],[1,1]] → 3/4; A Aᵀ − I = [[3,0],[0,0]] → 9/4; P Pᵀ − I = [[4,2],[2,0]] → 24/4
          assign source "layer0.keys" [| 1.0; 0.0; 1.0; 1.0 |]
          assign source "layer0.attention" [| 2.0; 0.0; 0.0; 1.0 |]
          assign source "layer0.prompt" [| 1.0; 2.0; 0.0; 1.0 |]
          // layer 1: K = A = I → 0, 0; P = 0 → P Pᵀ − I = −I → 2/4
          assign source "layer1.keys" [| 1.0; 0.0; 0.0; 1.0 |]
          assign source "layer1.attention" [| 1.0; 0.0; 0.0; 1.0 |]
          assign source "layer1.prompt" [| 0.0; 0.0; 0.0; 0.0 |]
          use query = tensor [ 1; 2 ] [| 1.0; 2.0 |]
          expectScalar 1e-6 (source.Prepare(context query true 0)).AuxLoss (0.5 * (0.75 + 2.25 + 6.0) + 0.5 * 0.5) "penalty"
          Expect.isNone (source.Prepare(context query false 0)).AuxLoss "no penalty at evaluation"
      }

      test "coda-prompt model: training task 1 leaves task 0's components without gradient" {
          torch.manual_seed 32L |> ignore
          let backbone = tinyBackbone 2
          let method = { Methods.codaPrompt with Groups = [ { codaGroup 4 2 0.1 with Layers = Only [ 0; 1 ] } ] }
          use model = PromptedModel.build method (TaskLayout.uniform 2 4) backbone
          let names = [ for l in 0 .. 1 do for n, w in [ "keys", width; "attention", width; "prompt", 2 * width ] -> sprintf "prompts.coda.layer%d.%s" l n, w ]
          let task0 = Map.ofList [ for n, w in names -> n, (get model n |> rowsOf w).[0..1] ]
          model.BeginTask 1
          for n, w in names do
              Expect.equal (get model n |> rowsOf w).[0..1] task0.[n] (n + ": task 0's rows survive BeginTask 1")
          use input = images 2L
          use labels = torch.tensor ([| 2L; 3L |])
          let train trained =
              model.zero_grad ()
              let out = model.Forward(input, true)
              use loss = Loss.total model out labels
              loss.backward ()
              for n, w in names do
                  let g = gradOf model n |> rowsOf w
                  for k in 0 .. 3 do
                      if List.contains k trained then Expect.isGreaterThan (norm g.[k]) 1e-8 (sprintf "%s row %d trains" n k)
                      else Expect.equal g.[k] (Array.zeroCreate w) (sprintf "%s row %d gets no gradient" n k)
          train [ 2; 3 ]
          // task 0 again without re-initialisation: task 1's (now non-zero) rows must stay unused
          model.RestoreTask 0
          use labels0 = torch.tensor ([| 0L; 1L |])
          model.zero_grad ()
          let out = model.Forward(input, true)
          use loss = Loss.total model out labels0
          loss.backward ()
          for n, w in names do
              let g = gradOf model n |> rowsOf w
              for k in 2 .. 3 do Expect.equal g.[k] (Array.zeroCreate w) (sprintf "%s row %d (future task) gets no gradient" n k)
              for k in 0 .. 1 do Expect.isGreaterThan (norm g.[k]) 1e-8 (sprintf "%s row %d trains in task 0" n k)
      } ]

// ================================================================== VQ-Prompt

let private vqKeys = [| [| 3.0; 0.0 |]; [| 0.0; 2.0 |]; [| -1.0; 0.5 |] |]
/// (S = 2, D = 2) flattened: entry 2's first token is closest to p′ for every query, but its second
/// token is far, so only a whole-prompt distance picks entry 0 for the first query.
let private vqPool = [| [| 2.0; 0.0; 0.0; 0.0 |]; [| 0.0; 2.0; 0.0; 0.0 |]; [| 1.0; 1.0; 1.5; -1.0 |] |]
let private vqQueries = [| [| 1.2; 1.0 |]; [| 0.3; -0.4 |]; [| -2.0; 0.2 |] |]

let private vqSource temperature continuous discrete =
    let g =
        { Methods.vqPrompt.Groups.Head with
            Length = 2
            Source = Quantised { PoolSize = 3; Temperature = temperature; ContinuousWeight = continuous; DiscreteWeight = discrete } }
    let s = new QuantisedSource(shapeOf g [ 0 ] 2 2 1)
    assign s "layer0.keys" (Array.concat vqKeys)
    assign s "layer0.prompt" (Array.concat vqPool)
    s

/// α (q not normalised), p′ and k* by hand.
let private vqHand (temperature: float) (normaliseQuery: bool) =
    let alpha =
        vqQueries |> Array.map (fun q ->
            let q = if normaliseQuery then unit q else q
            softmax (vqKeys |> Array.map (fun k -> dot q (unit k) / temperature)))
    let continuous = alpha |> Array.map (fun a -> sumOf 4 (Array.mapi (fun j p -> scale a.[j] p) vqPool))
    let chosen = continuous |> Array.map (fun p -> argmin (vqPool |> Array.map (fun e -> let d = sub p e in dot d d)))
    alpha, continuous, chosen

/// dL/dK by hand from dL/dα: softmax then s_{b,j} = q_b·K_j/‖K_j‖/T.
let private vqKeyGradient (temperature: float) (alpha: float[][]) (gAlpha: float[][]) =
    vqKeys |> Array.mapi (fun j k ->
        let kn = unit k
        sumOf 2 [ for b in 0 .. vqQueries.Length - 1 ->
                      let ds = alpha.[b].[j] * (gAlpha.[b].[j] - dot alpha.[b] gAlpha.[b])
                      let q = vqQueries.[b]
                      scale (ds / temperature / norm k) (sub q (scale (dot q kn) kn)) ])

let private vqTests =
    [ testList "alpha, choice and straight-through" [
        for temperature, expectedChoice in [ 1.0, [| 0; 0; 2 |]; 2.0, [| 0; 2; 2 |] ] ->
          test (sprintf "T = %g" temperature) {
              let alpha, continuous, chosen = vqHand temperature false
              Expect.equal chosen expectedChoice "hand-computed k*"
              let firstTokenOnly = continuous |> Array.map (fun p -> argmin (vqPool |> Array.map (fun e -> let d = sub p.[0..1] e.[0..1] in dot d d)))
              let largestAlpha = alpha |> Array.map argmax
              Expect.notEqual firstTokenOnly chosen "a first-token distance would choose differently"
              if temperature = 2.0 then Expect.notEqual largestAlpha chosen "the largest α is not always the nearest entry"
              use source = vqSource temperature 0.4 0.1
              use q = tensor [ 3; 2 ] (Array.concat vqQueries)
              let out = source.Prepare(context q false 0)
              Expect.sequenceEqual (idsOf out.Chosen.Value) chosen "argmin over the whole prompt"
              let value = (out.At 0).Value
              Expect.sequenceEqual value.shape [| 3L; 1L; 2L; 2L |] "(B, 1, S, D)"
              let expectedValue = chosen |> Array.collect (fun j -> vqPool.[j])
              Expect.sequenceEqual (valuesOf value) expectedValue "the forward value is the chosen entry exactly"
              // the gradient goes through p′ = Σ α P: d/dP_j = Σ_b α_{b,j} G_b, and on to the keys via α
              let g = [| pattern 70.0 4; pattern 71.0 4; pattern 72.0 4 |]
              use gt = tensor [ 3; 1; 2; 2 ] (Array.concat g)
              use objective = (value * gt).sum ()
              objective.backward ()
              let poolGrad = Array.init 3 (fun j -> sumOf 4 [ for b in 0 .. 2 -> scale alpha.[b].[j] g.[b] ])
              expectClose 1e-6 (gradOf source "layer0.prompt") (Array.concat poolGrad) "pool gradient Σ_b α_{b,j} G_b"
              let normalisedAlpha, _, _ = vqHand temperature true
              let wrong = Array.init 3 (fun j -> sumOf 4 [ for b in 0 .. 2 -> scale normalisedAlpha.[b].[j] g.[b] ])
              expectApart 1e-3 (gradOf source "layer0.prompt") (Array.concat wrong) "α from a normalised query"
              let gAlpha = Array.init 3 (fun b -> Array.init 3 (fun j -> dot g.[b] vqPool.[j]))
              let keyGrad = vqKeyGradient temperature alpha gAlpha
              Expect.isGreaterThan (norm (Array.concat keyGrad)) 1e-3 "the keys get a gradient"
              expectClose 1e-6 (gradOf source "layer0.keys") (Array.concat keyGrad) "key gradient through softmax and normalise"
          } ]

      test "the straight-through value is bit-exactly the chosen entry for arbitrary values" {
          // p′ + (p − p′) rounds in float32 unless the operands are benign; the value must still be p
          let g =
              { Methods.vqPrompt.Groups.Head with
                  Length = 8
                  Source = Quantised { PoolSize = 10; Temperature = 1.0; ContinuousWeight = 0.4; DiscreteWeight = 0.1 } }
          use source = new QuantisedSource(shapeOf g [ 0 ] 16 8 1)
          let pool = pattern 7.0 (10 * 8 * 16) |> Array.map (fun v -> 3.7 * v + 0.013)
          assign source "layer0.prompt" pool
          assign source "layer0.keys" (pattern 8.0 (10 * 16))
          use q = tensor [ 6; 16 ] (pattern 9.0 (6 * 16) |> Array.map (fun v -> 2.0 * v))
          for training in [ false; true ] do
              let out = source.Prepare(context q training 0)
              let ids = idsOf out.Chosen.Value
              let stored = get source "layer0.prompt" |> Array.chunkBySize (8 * 16)
              let expected = ids |> Array.collect (fun j -> stored.[j]) |> Array.map float32
              let actual = (host (out.At 0).Value).Values
              Expect.sequenceEqual (TestSupport.bits actual) (TestSupport.bits expected) (sprintf "training %b: bit-exact" training)
      }

      test "loss 0.4·mse(p′, sg p) + 0.1·mse(p, sg p′): value and where each term's gradient goes" {
          let alpha, continuous, chosen = vqHand 1.0 false
          let n = float (3 * 2 * 2)
          let mse = Seq.sum (seq { for b in 0 .. 2 -> let d = sub continuous.[b] vqPool.[chosen.[b]] in dot d d }) / n
          for wc, wd in [ 0.4, 0.1; 1.0, 0.0; 0.0, 1.0 ] do
              use source = vqSource 1.0 wc wd
              use q = tensor [ 3; 2 ] (Array.concat vqQueries)
              let out = source.Prepare(context q true 0)
              // both terms have the value mse in the forward pass
              expectScalar 1e-6 out.AuxLoss ((wc + wd) * mse) (sprintf "value (%g, %g)" wc wd)
              out.AuxLoss.Value.backward ()
              // d/dp′_b = 2·wc·(p′_b − p_b)/n reaches every P_j through α and the keys through α;
              // d/dp_b = 2·wd·(p_b − p′_b)/n reaches only the chosen row P_{k*_b}
              let dContinuous = Array.init 3 (fun b -> scale (2.0 * wc / n) (sub continuous.[b] vqPool.[chosen.[b]]))
              let poolGrad =
                  Array.init 3 (fun j ->
                      sumOf 4 [ for b in 0 .. 2 do
                                    yield scale alpha.[b].[j] dContinuous.[b]
                                    if chosen.[b] = j then yield scale (2.0 * wd / n) (sub vqPool.[j] continuous.[b]) ])
              expectClose 1e-7 (gradOf source "layer0.prompt") (Array.concat poolGrad) (sprintf "pool gradient (%g, %g)" wc wd)
              let gAlpha = Array.init 3 (fun b -> Array.init 3 (fun j -> dot dContinuous.[b] vqPool.[j]))
              expectClose 1e-7 (gradOf source "layer0.keys") (Array.concat (vqKeyGradient 1.0 alpha gAlpha)) (sprintf "key gradient (%g, %g)" wc wd)
              if wc = 0.0 then
                  Expect.equal (gradOf source "layer0.keys") (Array.zeroCreate 6) "the discrete term alone leaves the keys alone"
                  Expect.equal (gradOf source "layer0.prompt" |> rowsOf 4).[1] (Array.zeroCreate 4) "and every row never chosen"
          use evaluation = vqSource 1.0 0.4 0.1
          use q = tensor [ 3; 2 ] (Array.concat vqQueries)
          Expect.isNone (evaluation.Prepare(context q false 0)).AuxLoss "no loss at evaluation"
      } ]

// ================================================================== VPT-deep

let private vptSmall dropout = { Methods.vptDeep with Groups = [ { Methods.vptDeep.Groups.Head with Length = 2; Dropout = dropout } ] }

/// Our own VPT-deep: insert after CLS at block 0, replace positions 1..L before every later block.
let private vptReference (backbone: VisionTransformer) (input: torch.Tensor) (promptAt: int -> torch.Tensor) (lengths: ResizeArray<int * int64 * int64>) =
    runWith backbone input (fun layer x ->
        let next =
            if layer = 0 then insertAfterClass x (promptAt 0)
            else torch.cat ([| x.narrow (1, 0L, 1L); promptAt layer; x.narrow (1, 3L, x.shape.[1] - 3L) |], 1L)
        lengths.Add((layer, x.shape.[1], next.shape.[1]))
        BlockInput.plain next)

let private vptTests =
    [ test "vpt-deep: before block i ≥ 1 the prompt outputs are replaced by layer i's prompts" {
          torch.manual_seed 41L |> ignore
          let backbone = tinyBackbone 3
          use model = PromptedModel.build (vptSmall 0.1) (TaskLayout.uniform 1 4) backbone
          use input = images 2L
          let prompts = Array.init 3 (fun l -> pattern (80.0 + float l) (2 * width))
          for l in 0 .. 2 do assign model (sprintf "prompts.vpt.layer%d.prompt" l) prompts.[l]
          let promptTensor l = batchOf (Array.replicate 2 (rowsOf width prompts.[l]))
          let lengths = ResizeArray()
          let expected = vptReference backbone input promptTensor lengths |> clsOf
          Expect.sequenceEqual lengths [ 0, 5L, 7L; 1, 7L, 7L; 2, 7L, 7L ] "1 + L + patches at every block"
          let out = model.Forward(input, false)
          expectClose 1e-5 (valuesOf out.Features) expected "class token (evaluation: no dropout)"
          let carried = runWith backbone input (fun l x -> BlockInput.plain (if l = 0 then insertAfterClass x (promptTensor 0) else x)) |> clsOf
          expectApart 1e-4 expected carried "prompt outputs carried over"
          let stacked = runWith backbone input (fun l x -> BlockInput.plain (insertAfterClass x (promptTensor l))) |> clsOf
          expectApart 1e-4 expected stacked "new prompts added on top"
          let same = vptReference backbone input (fun _ -> promptTensor 0) (ResizeArray()) |> clsOf
          expectApart 1e-4 expected same "layer 0's prompts at every block"
      }

      test "vpt-deep spy through identity blocks: the last block receives exactly its own prompts" {
          // zero attention and MLP outputs make every block the identity, so the final norm sees the
          // tokens the hook handed to the last block: LN(P_last) at the prompt positions
          torch.manual_seed 42L |> ignore
          let backbone = tinyBackbone 3
          for struct (name, p) in backbone.named_parameters () do
              if name.Contains "attn.proj." || name.Contains "mlp.fc2." then assign backbone name (Array.zeroCreate (int (p.numel ())))
          let method = { vptSmall 0.0 with HeadInput = PromptMean }
          use model = PromptedModel.build method (TaskLayout.uniform 1 4) backbone
          use input = images 2L
          let prompts = Array.init 3 (fun l -> pattern (90.0 + float l) (2 * width))
          for l in 0 .. 2 do assign model (sprintf "prompts.vpt.layer%d.prompt" l) prompts.[l]
          let expected = meanOf [ for t in rowsOf width prompts.[2] -> layerNorm t ]
          let out = model.Forward(input, false)
          expectClose 1e-5 (valuesOf out.Features) (Array.append expected expected) "mean of LN(layer 2's prompts)"
          expectApart 1e-3 (valuesOf out.Features).[0 .. width - 1] (meanOf [ for t in rowsOf width prompts.[0] -> layerNorm t ]) "layer 0's prompts"
      }

      test "VPT init is uniform in ±sqrt(6/(3·p²+D))" {
          for image, patch, w in [ 16, 8, 8; 16, 4, 16 ] do
              use model = PromptedModel.build Methods.vptDeep (TaskLayout.uniform 1 2) (new VisionTransformer(VitConfig.custom image patch 3 w 2 0))
              let bound = sqrt (6.0 / float (3 * patch * patch + w))
              let values = [| for l in 0 .. 2 do yield! get model (sprintf "prompts.vpt.layer%d.prompt" l) |]
              Expect.equal values.Length (3 * 10 * w) "10 prompts per layer"
              Expect.isLessThanOrEqual (Array.max values) bound (sprintf "p = %d: max within %g" patch bound)
              Expect.isGreaterThanOrEqual (Array.min values) -bound (sprintf "p = %d: min within -%g" patch bound)
              Expect.isGreaterThan (Array.max values) (0.85 * bound) (sprintf "p = %d: the range is used (max)" patch)
              Expect.isLessThan (Array.min values) (-0.85 * bound) (sprintf "p = %d: the range is used (min)" patch)
      }

      test "prompt dropout applies at every layer in training and never at evaluation" {
          torch.manual_seed 43L |> ignore
          let backbone = tinyBackbone 3
          use input = images 2L
          let prompts = Array.init 3 (fun l -> pattern (100.0 + float l) (2 * width))
          let promptTensor l = batchOf (Array.replicate 2 (rowsOf width prompts.[l]))
          let withPrompts = vptReference backbone input promptTensor (ResizeArray()) |> clsOf
          let zeroed = vptReference backbone input (fun _ -> torch.zeros (2L, 2L, int64 width)) (ResizeArray()) |> clsOf
          // dropout 1 drops every prompt element: training sees zeros at every layer
          use all = PromptedModel.build (vptSmall 1.0) (TaskLayout.uniform 1 4) backbone
          for l in 0 .. 2 do assign all (sprintf "prompts.vpt.layer%d.prompt" l) prompts.[l]
          expectClose 1e-5 (valuesOf (all.Forward(input, true)).Features) zeroed "training, dropout 1: zero prompts everywhere"
          expectClose 1e-5 (valuesOf (all.Forward(input, false)).Features) withPrompts "evaluation, dropout 1: untouched"
          use half = PromptedModel.build (vptSmall 0.5) (TaskLayout.uniform 1 4) backbone
          for l in 0 .. 2 do assign half (sprintf "prompts.vpt.layer%d.prompt" l) prompts.[l]
          let evaluation = [ for _ in 1 .. 2 -> valuesOf (half.Forward(input, false)).Features ]
          expectClose 0.0 evaluation[0] evaluation[1] "evaluation, dropout 0.5: deterministic"
          // The model's last block computes the class token only: equal up to float32 rounding.
          for e in evaluation do expectClose 1e-5 e withPrompts "evaluation, dropout 0.5: untouched"
          expectApart 1e-4 (valuesOf (half.Forward(input, true)).Features) withPrompts "training, dropout 0.5: prompts perturbed"
      } ]

[<Tests>]
let tests =
    testSequenced
    <| testList
        "prompt methods"
        [ testList "l2p" l2pTests
          testList "dualprompt" dualTests
          testList "coda-prompt" codaTests
          testList "vq-prompt" vqTests
          testList "vpt-deep" vptTests ]
