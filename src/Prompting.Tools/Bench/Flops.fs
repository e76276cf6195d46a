namespace Prompting.Bench

open Prompting.Vit
open Prompting.Prompts

/// One matrix product per image, (M × K) · (K × N), executed Count times (once per head for
/// attention), with whether autograd computes the gradient of each operand. The left operand is
/// the activation, the right one the weight (or the second activation in attention).
type MatmulOp =
    { Name: string
      M: int64
      N: int64
      K: int64
      Count: int64
      LeftGrad: bool
      RightGrad: bool }

module MatmulOp =
    /// 2·M·N·K multiply-adds per execution.
    let forward (op: MatmulOp) = 2L * op.M * op.N * op.K * op.Count
    /// Each operand that needs a gradient costs one more product of the same size.
    let backward (op: MatmulOp) =
        forward op * ((if op.LeftGrad then 1L else 0L) + (if op.RightGrad then 1L else 0L))

/// FLOPs per image of one method, split the way the bench reports them.
type FlopCount =
    { /// The un-prompted query pass (forward only, without gradients): QueryDepth blocks less those
      /// it shares with the prompted pass (counted there once); 0 for query-free methods.
      Query: int64
      /// The prompted forward pass, head and prompt sources included.
      Forward: int64
      /// The backward pass as autograd executes it (see Flops.training).
      Backward: int64 }

module FlopCount =
    let training (c: FlopCount) = c.Query + c.Forward + c.Backward
    let inference (c: FlopCount) = c.Query + c.Forward

/// Analytic matmul FLOPs of the ViT plus a method's prompts, per image, as the computation is
/// executed: the query pass when a source reads the query (its QueryDepth blocks, those it shares
/// with the prompted pass counted once), the prompted forward, and a backward that follows
/// autograd's rule (an operand's gradient is computed only when it requires grad): activation
/// gradients wherever gradient flows, weight gradients only for trainable weights.
/// Elementwise work (norms, softmax, GELU, losses, the optimiser) is not counted, as is usual
/// for model FLOP utilisation.
module Flops =
    /// Prompts per sample and stored tokens per prompt of a group at one forward pass.
    let private chosenPerSample (training: bool) (g: PromptGroup) =
        match g.Source with
        | Keyed k when training && k.TrainWithTaskId -> 1
        | Keyed k -> k.TopK
        | Static
        | Components _
        | Quantised _ -> 1

    /// Tokens entering each block: 1 + G², plus the prompt tokens from their group's first layer on.
    let tokensPerLayer (c: VitConfig) (m: Method) (training: bool) =
        let baseTokens = int64 (VitConfig.tokenCount c)
        let inserted =
            m.Groups
            |> List.choose (fun g ->
                match g.Insertion with
                | PromptTokens _ -> Some(List.min (PromptGroup.layers c.Depth g), int64 (chosenPerSample training g * g.Length))
                | PrefixTokens _ -> None)
        [| for l in 0 .. c.Depth - 1 ->
               baseTokens + (inserted |> List.sumBy (fun (first, n) -> if l >= first then n else 0L)) |]

    /// Key/value prefix tokens each block's attention sees.
    let prefixPerLayer (c: VitConfig) (m: Method) (training: bool) =
        [| for l in 0 .. c.Depth - 1 ->
               m.Groups
               |> List.sumBy (fun g ->
                   match g.Insertion with
                   | PrefixTokens _ when List.contains l (PromptGroup.layers c.Depth g) ->
                       int64 (chosenPerSample training g * PromptGroup.storedLength g / 2)
                   | _ -> 0L) |]

    /// One block's products for `tokens` tokens and `prefix` key/value prefix tokens.
    /// `inputGrad`: the incoming tokens require grad; `trainsWeights`: the block's matmul weights
    /// train; `trainsAny`: some parameter of the block trains (norms and biases included).
    let block (c: VitConfig) (layer: int) (tokens: int64) (prefix: int64) (inputGrad: bool)
              (trainsWeights: bool) (trainsAny: bool) (adapterWidth: int option) =
        let d, hidden, heads = int64 c.Width, int64 c.MlpHidden, int64 c.Heads
        let hd = d / heads
        let keys = tokens + prefix
        let hasPrefix = prefix > 0L
        let inner = inputGrad || trainsAny
        let attended = inner || hasPrefix
        let afterAttention = inputGrad || hasPrefix || trainsAny
        let op name m n k count left right =
            { Name = sprintf "block%d.%s" layer name; M = m; N = n; K = k; Count = count; LeftGrad = left; RightGrad = right }
        [ op "qkv" tokens (3L * d) d 1L inner trainsWeights
          op "q@k" tokens keys hd heads inner attended
          op "attn@v" tokens hd keys heads attended attended
          op "proj" tokens d d 1L attended trainsWeights
          op "fc1" tokens hidden d 1L afterAttention trainsWeights
          op "fc2" tokens d hidden 1L afterAttention trainsWeights
          match adapterWidth with
          | Some b ->
              op "adapter.down" tokens (int64 b) d 1L afterAttention true
              op "adapter.up" tokens d (int64 b) 1L true true
          | None -> () ]

    /// The patch embedding as a product (G² × C·p²) · (C·p² × D); images never need gradients.
    let patchEmbed (c: VitConfig) (trainsWeights: bool) =
        { Name = "patch_embed"; M = int64 (VitConfig.patchCount c); N = int64 c.Width
          K = int64 (c.InChannels * c.PatchSize * c.PatchSize); Count = 1L; LeftGrad = false; RightGrad = trainsWeights }

    /// The un-prompted, gradient-free query pass (no head: the query is the final-norm CLS) after
    /// the blocks it shares with the prompted pass: those (and the patch embedding before them) are
    /// computed once and counted in the prompted forward. Without sharing the query pass has its own
    /// patch embedding, as the reference code computes it. Every block counts all its tokens, the
    /// last one included (the hot path computes only the class token's row there; the count is the
    /// reference computation's, so that work skipped shows as MFU, not as fewer FLOPs).
    let queryOps (c: VitConfig) (m: Method) =
        let shared = Method.sharedBlocks c.Depth m
        [ if shared = 0 then yield { patchEmbed c false with Name = "query.patch_embed" }
          for l in shared .. Method.queryDepth c.Depth m - 1 do
              for op in block c l (int64 (VitConfig.tokenCount c)) 0L false false false None do
                  yield { op with Name = "query." + op.Name; LeftGrad = false; RightGrad = false } ]

    /// Products of the prompt sources (selection and mixing), per image.
    let sourceOps (c: VitConfig) (m: Method) (layout: TaskLayout) (task: int) =
        let d = int64 c.Width
        [ for g in m.Groups do
              let layers = PromptGroup.layers c.Depth g
              let stored = int64 (PromptGroup.storedLength g)
              let op name n k left = { Name = sprintf "%s.%s" g.Name name; M = 1L; N = n; K = k; Count = 1L; LeftGrad = left; RightGrad = true }
              match g.Source with
              | Static -> ()
              | Keyed k ->
                  // cos(q, keys): the query is detached, the keys train.
                  let sets = if k.KeysPerLayer then layers.Length else 1
                  for _ in 1 .. sets do yield op "cosine" (int64 k.PoolSize) d false
              | Components a ->
                  let perTask = a.Components / TaskLayout.tasks layout
                  let visible = int64 (perTask * (min task (TaskLayout.tasks layout - 1) + 1))
                  for _ in layers do
                      // α = Σ_d (q ⊙ A)_n · K_n (a contraction), then α · P.
                      yield op "alpha" visible d true
                      yield op "mix" (stored * d) visible true
              | Quantised q ->
                  for _ in layers do
                      yield op "similarity" (int64 q.PoolSize) d false
                      yield op "mix" (stored * d) (int64 q.PoolSize) true ]

    /// Every product of one training (or inference) pass per image, in execution order.
    let ops (c: VitConfig) (m: Method) (layout: TaskLayout) (task: int) (training: bool) =
        let d = int64 c.Width
        let tokens = tokensPerLayer c m training
        let prefix = prefixPerLayer c m training
        let tokenStart =
            m.Groups
            |> List.choose (fun g -> match g.Insertion with PromptTokens _ -> Some(List.min (PromptGroup.layers c.Depth g)) | _ -> None)
            |> List.tryHead
        let blockTrains l =
            match m.Backbone with
            | Frozen -> false, false
            | FullBackbone -> true, true
            | LastBlocks k -> (l >= c.Depth - k), (l >= c.Depth - k)
            | BiasTerms -> false, true
        let embedTrains = match m.Backbone with FullBackbone -> true | _ -> false
        let embedGrad = match m.Backbone with FullBackbone | BiasTerms -> true | _ -> false
        let adapterWidth =
            m.AdapterReduction
            |> Option.map (fun r -> max 1 (c.Width / r))
            |> Option.orElse (m.ParallelAdapter |> Option.map (fun a -> a.Bottleneck))
        let mutable streamGrad = embedGrad
        let blocks =
            [ for l in 0 .. c.Depth - 1 do
                  let inputGrad = streamGrad || (tokenStart |> Option.exists (fun first -> l >= first))
                  let weights, any = blockTrains l
                  yield! block c l tokens[l] prefix[l] inputGrad weights any adapterWidth
                  streamGrad <- inputGrad || prefix[l] > 0L || any || adapterWidth.IsSome ]
        let finalNormTrains = match m.Backbone with Frozen -> false | _ -> true
        let headInputGrad = streamGrad || finalNormTrains
        let headOps =
            match m.Head with
            | PrototypeHead -> [ { Name = "head.prototypes"; M = 1L; N = int64 (TaskLayout.total layout); K = d; Count = 1L; LeftGrad = false; RightGrad = false } ]
            | LinearHead
            | CosineHead -> [ { Name = "head.fc"; M = 1L; N = int64 (TaskLayout.total layout); K = d; Count = 1L; LeftGrad = headInputGrad; RightGrad = true } ]
            | MlpHead k ->
                [ for i in 0 .. k - 1 -> { Name = sprintf "head.hidden%d" i; M = 1L; N = d; K = d; Count = 1L; LeftGrad = (i > 0 || headInputGrad); RightGrad = true }
                  yield { Name = "head.fc"; M = 1L; N = int64 (TaskLayout.total layout); K = d; Count = 1L; LeftGrad = true; RightGrad = true } ]
        [ yield patchEmbed c embedTrains
          yield! sourceOps c m layout task
          yield! blocks
          yield! headOps ]

    /// FLOPs per image of a training step (training = true) or an inference pass.
    let count (c: VitConfig) (m: Method) (layout: TaskLayout) (task: int) (training: bool) =
        let executed = ops c m layout task training
        let query = if Method.readsQuery m then queryOps c m |> List.sumBy MatmulOp.forward else 0L
        { Query = query
          Forward = executed |> List.sumBy MatmulOp.forward
          Backward = if training then executed |> List.sumBy MatmulOp.backward else 0L }
