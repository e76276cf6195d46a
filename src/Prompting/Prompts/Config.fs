namespace Prompting.Prompts

open Prompting

/// How a prefix prompt is split into attention keys and values.
type PrefixConvention =
    /// Original L2P/DualPrompt (JAX): a key prefix and a value prefix, each of the prompt length.
    | SeparateKeyValue
    /// CODA-Prompt/VQ-Prompt code: one prompt of length L, first L/2 tokens keys, last L/2 values.
    | SplitHalves

/// Where prompt tokens enter the sequence (prompt-tuning).
type TokenPlacement =
    /// [CLS, P, patches]: VPT and the L2P PyTorch port.
    | AfterClassToken
    /// [P, CLS, patches]: the original (JAX) L2P.
    | BeforeClassToken

/// How prompts enter a block.
type Insertion =
    /// Prompt-tuning: tokens inserted into the sequence at the group's first layer; at each later
    /// layer of the group the previous prompt outputs are replaced by that layer's prompts (VPT-deep).
    | PromptTokens of placement: TokenPlacement * withClassPosition: bool
    /// Prefix-tuning: keys and values prepended inside attention, sequence length unchanged.
    | PrefixTokens of PrefixConvention

/// The pull (key-matching surrogate) loss of keyed pools; q and keys are L2-normalised.
type PullLoss =
    /// −Σ_{b,k} cos(q_b, key_k) / B (L2P and DualPrompt PyTorch ports).
    | NegativeCosine
    /// Σ_{b,k} (1 − cos(q_b, key_k)) / B.
    | OneMinusCosine
    /// Σ_{b,k} (1 − cos(q_b, key_k)) over the batch without averaging (CODA-Prompt repository).
    | OneMinusCosineSummed
    /// The CODA repository's L2P++ quirk (1 − cos[:, idx]).sum(): every sample pulled to every other
    /// sample's selected keys, a (B, B, k) sum. Only for reproducing that code.
    | CrossSampleQuirk

/// A pool of prompts with learned keys, chosen by cosine similarity to the query.
type KeyedPool =
    { PoolSize: int
      TopK: int
      /// One key set per layer with independent choices (CODA repository DualPrompt), or one key set
      /// whose choice serves every layer of the group (original L2P and DualPrompt).
      KeysPerLayer: bool
      /// Use the N ids most frequent in the batch for every sample (L2P port); leaks batch
      /// statistics at test time, so off by default.
      BatchwiseSelection: bool
      /// DualPrompt: while training, prompt = the true task's entry (pool size = number of tasks).
      TrainWithTaskId: bool
      /// DualPrompt (JAX): when task t begins, its entry starts as a copy of entry t−1.
      CopyPreviousAtTaskStart: bool
      PullLoss: PullLoss
      PullWeight: float }

/// CODA-Prompt's decomposed components with attention (α = cos(q ⊙ A_k, K_k), no softmax).
type ComponentAttention =
    { Components: int
      /// Weight μ of the orthogonality penalty mean((X Xᵀ − I)²) over K, A and flattened P.
      OrthogonalityWeight: float }

/// VQ-Prompt's vector-quantised pool with a straight-through estimator.
type VectorQuantised =
    { PoolSize: int
      Temperature: float
      /// Weight of ‖p′ − sg(p)‖² (the official code's vq_coef, 0.4).
      ContinuousWeight: float
      /// Weight of ‖p − sg(p′)‖² (the official code's comit_coef, 0.1).
      DiscreteWeight: float }

/// Where a group's prompts come from.
type PromptSource =
    /// One learned prompt per layer, shared by all samples and tasks (VPT, DualPrompt's G-prompt).
    | Static
    | Keyed of KeyedPool
    | Components of ComponentAttention
    | Quantised of VectorQuantised

type PromptInit =
    /// U(low, high) for prompts and keys.
    | Uniform of low: float * high: float
    /// VPT: U(±sqrt(6 / (3·p² + D))) with p the patch size.
    | VptUniform
    /// CODA: rows of the task being started by Gram–Schmidt from normal vectors, others zero.
    | GramSchmidt

/// The blocks a group injects into.
type LayerSet =
    | Only of int list
    /// Every block of the backbone, whatever its depth (VPT-deep).
    | AllLayers

/// One set of prompts: where they go, how long they are and where they come from.
type PromptGroup =
    { Name: string
      Layers: LayerSet
      Length: int
      Insertion: Insertion
      Source: PromptSource
      Init: PromptInit
      /// Dropout applied to prompt tokens while training (VPT).
      Dropout: float }

module PromptGroup =
    /// The blocks a group injects into, for a backbone of `depth` blocks.
    let layers (depth: int) (g: PromptGroup) =
        match g.Layers with
        | AllLayers -> [ 0 .. depth - 1 ]
        | Only ls -> ls

    /// Tokens stored per prompt: separate key and value prefixes store 2L.
    let storedLength (g: PromptGroup) =
        match g.Insertion with
        | PrefixTokens SeparateKeyValue -> 2 * g.Length
        | _ -> g.Length

/// What the classifier reads.
type HeadInput =
    | ClassToken
    /// Mean of the prompt tokens' outputs after the final norm (L2P).
    | PromptMean

type HeadKind =
    | LinearHead
    /// k hidden layers of width D with ReLU, then the classifier (VPT's Mlp-k baseline).
    | MlpHead of hiddenLayers: int
    /// SimpleCIL: rows are class-mean features, cosine similarity as logits; no training.
    | PrototypeHead
    /// APER's and RanPAC's first-session head: σ · cos(x, w_c) with rows w_c drawn from U(±1/√D)
    /// and a learnable scale σ that starts at 1.
    | CosineHead

/// Which backbone parameters train.
type BackboneTraining =
    | Frozen
    | FullBackbone
    /// The last k blocks and the final norm (VPT's Partial-k).
    | LastBlocks of int
    /// Every bias term (BitFit).
    | BiasTerms

/// Which logits the training loss sees (evaluation always uses the classes seen so far).
type TrainingLogits =
    /// Only the current task's classes; the rest are −inf (L2P, DualPrompt, CODA, VQ).
    | CurrentTaskClasses
    /// Every class seen so far (sequential fine-tuning, joint training).
    | SeenClasses

/// RanPAC's head: a fixed random projection of the features with ReLU, and a ridge regression on
/// it over every image seen, its regulariser chosen on the current task as the official code does.
type RidgeRegression =
    { /// M: the projection's width (10,000 in RanPAC).
      ProjectionSize: int
      /// The candidate regularisers are 10^k for these k (RanPAC: −8..8).
      RidgeExponents: int list
      /// The share of the current task's features (in a seeded shuffled order) that fits each
      /// candidate; the rest scores it by mean squared error (RanPAC: 0.8).
      FitFraction: float }

/// How an aligned head keeps the Gaussian of each class's features.
type FeatureCovariance =
    /// SLCA: the full covariance (unbiased, as torch.cov) plus `ridge`·I, from float64 sums.
    | FullCovariance of ridge: float
    /// VQ-Prompt's kind: the per-dimension (population) variance plus `floor`.
    | DiagonalCovariance of floor: float

/// The optimiser that re-trains an aligned head (created afresh at each alignment).
type AlignmentOptimiser =
    /// SGD with this momentum (SLCA: 0.9).
    | AlignmentSgd of momentum: float
    /// AdamW, β (0.9, 0.999), ε 1e-8 (VQ-Prompt).
    | AlignmentAdamW

/// How an aligned head's rate falls over its epochs.
type AlignmentRate =
    /// PyTorch's CosineAnnealingLR over the epochs, stepped once per epoch, to 0 (SLCA).
    | CosinePerEpoch
    /// At step k of K: final + ½(rate − final)(1 + cos(πk/K)) (VQ-Prompt's CosineSchedulerIter).
    | CosinePerStep of final: float
    /// VQ-Prompt's code as it runs: the first step at `first` (the parameter group's own rate,
    /// `ca_lr`, which the scheduler's initial step fails to replace: it is undone when the
    /// scheduler resets its step count), then step k ≥ 1 at CosinePerStep's rate of step k − 1.
    /// A quirk, named so that the official numbers can be reproduced.
    | CosinePerStepQuirk of first: float * final: float

/// How many batches an alignment epoch runs.
type AlignmentEpoch =
    /// Every sample drawn for the epoch.
    | EverySample
    /// VQ-Prompt's code (inherited from HiDe-Prompt's): as many batches as there are classes of
    /// earlier tasks, so that the rest of the drawn (shuffled) samples go unused. A quirk, named
    /// so that the official numbers can be reproduced.
    | BatchPerEarlierClass

/// Classifier alignment (SLCA) and its instance, VQ-Prompt's classifier-bias mitigation: after each
/// task from the second on, the head alone is re-trained on features sampled from the class-wise
/// Gaussians of every class seen (statistics taken once, when a class's task ends). Each epoch draws
/// `SamplesPerClass` per class, class by class, shuffles them and steps through them in batches of
/// `BatchSize`.
type ClassAlignment =
    { Covariance: FeatureCovariance
      SamplesPerClass: int
      BatchSize: int
      Epochs: int
      /// What an epoch runs through: every drawn sample, or VQ-Prompt's shorter epochs.
      EpochLength: AlignmentEpoch
      Optimiser: AlignmentOptimiser
      LearningRate: float
      RateSchedule: AlignmentRate
      WeightDecay: float
      /// The official code's rule (not in the paper): the mean of a class of task k is scaled by
      /// 0.9 + 0.1·(k + 1)/(t + 1) when task t is aligned; the current task's means are kept.
      ShrinkOlderMeans: bool
      /// Logit normalisation with temperature τ (SLCA 0.1): CE(z / (n·τ)) with n the mean over
      /// tasks of the L2 norm of each task's block of logits; None: plain cross-entropy.
      LogitNormalisation: float option
      /// SLCA's `fc.recall()`: the aligned head predicts after task t, but task t + 1 trains from
      /// the head as it was before the alignment.
      RestoreBeforeNextTask: bool
      /// SLCA's per-task heads: the rows of classes not yet seen are drawn afresh when a task
      /// begins, and the rows of earlier tasks are put back after training to their values at the
      /// task's start (only the current task's head learns; weight decay would shrink the rest).
      FreezeEarlierHeads: bool }

/// What predicts once a task has ended: the head the loss trained, or a head calibrated from the
/// features of every class seen, whatever trained the features.
type Calibration =
    | TrainedHead
    /// Cosine similarity to each class's mean feature (SimpleCIL's and APER's rule).
    | ClassMeans
    | RandomProjectionRidge of RidgeRegression
    /// The trained head, re-trained on sampled class statistics at each task's end (SLCA).
    | AlignedHead of ClassAlignment

/// AdaptFormer's parallel adapter (APER, RanPAC): per block, the output is
/// x_a + mlp(norm2 x_a) + Scale · up(dropout(relu(down x_a))) with x_a the attention residual.
type ParallelAdapter =
    { /// The bottleneck's width (64 in APER and RanPAC).
      Bottleneck: int
      /// The constant the adapter's output is multiplied by (0.1).
      Scale: float
      /// Dropout on the bottleneck in training (0.1).
      Dropout: float }

/// SSF: a per-channel scale γ and shift β after the patch projection, after each block's norm1,
/// qkv, attention projection, norm2, fc1 (before GELU) and fc2, and after the final norm.
type ScaleShift =
    { /// γ starts from N(1, InitStd²) and β from N(0, InitStd²) (0.02 in SSF and APER).
      InitStd: float }

/// What a calibrated head (class means, ridge, alignment) reads.
type HeadFeatures =
    /// The adapted model's class token after the final norm.
    | AdaptedFeatures
    /// [f_PTM(x); g(x)]: the frozen pretrained model's features, then the adapted model's (APER).
    | PretrainedAndAdapted

/// When the trainable parts learn.
type Adaptation =
    | EveryTask
    /// On the first task only; frozen afterwards (APER, RanPAC's first-session adaptation).
    | FirstTaskOnly

/// A method: pure configuration, no tensors, its training recipe included. `PromptedModel.build`
/// turns it into a model; the engine trains it with `Recipe`. The name is for lookup and display only.
type Method =
    { Name: string
      Description: string
      /// How the method trains (optimiser, rates, schedule, epochs, batch, clipping, drop-last).
      Recipe: Training
      Groups: PromptGroup list
      HeadInput: HeadInput
      Head: HeadKind
      /// VPT's head initialisation: Kaiming (fan-out) weights and bias −log(0.99/0.01).
      VptHeadInit: bool
      /// SLCA's head initialisation: truncated-normal weights of this standard deviation (timm's
      /// trunc_normal_, cut at ±2), bias 0. None: the linear layer's own (uniform) initialisation.
      HeadTruncatedNormal: float option
      Backbone: BackboneTraining
      /// Bottleneck adapter after each block's MLP with this reduction (VPT's Adapter baseline).
      AdapterReduction: int option
      /// AdaptFormer's parallel adapter in every block (APER-Adapter, RanPAC).
      ParallelAdapter: ParallelAdapter option
      /// SSF's per-channel scale and shift (APER-SSF).
      ScaleShift: ScaleShift option
      TrainingLogits: TrainingLogits
      /// What predicts after each task: the trained head or a calibrated one.
      Calibration: Calibration
      /// When the trainable parts learn: every task, or the first only.
      Adaptation: Adaptation
      /// What a calibrated head reads: the adapted features, or the pretrained ones beside them.
      HeadFeatures: HeadFeatures
      /// Blocks of the frozen, un-prompted backbone the query pass runs before its class token
      /// goes through the final norm: None = all of them (the reference methods). Some k makes
      /// the query pass cost k/depth of a forward pass, in training and evaluation alike; with
      /// k at most the first prompted block it costs nothing (the passes share those blocks).
      QueryDepth: int option }

module Method =
    /// RanPAC's ridge head: M = 10,000, regularisers 10^−8 .. 10^8, fitted on 80 % of the task.
    let ranpacRidge = { ProjectionSize = 10_000; RidgeExponents = [ -8 .. 8 ]; FitFraction = 0.8 }

    /// Whether the method adds trainable modules inside the blocks (adapters, SSF).
    let addsBlockModules (m: Method) = m.AdapterReduction.IsSome || m.ParallelAdapter.IsSome || m.ScaleShift.IsSome

    /// SLCA's classifier alignment as its official code runs it (`slca_cifar.json`, `ca_epochs` 5,
    /// `ca_with_logit_norm` 0.1): full covariance + 1e-4·I, 256 samples per class, SGD 0.01
    /// momentum 0.9 weight decay 5e-4, the shrink of older means, the stage-1 head restored.
    let slcaAlignment =
        { Covariance = FullCovariance 1e-4
          SamplesPerClass = 256
          BatchSize = 256
          Epochs = 5
          EpochLength = EverySample
          Optimiser = AlignmentSgd 0.9
          LearningRate = 0.01
          RateSchedule = CosinePerEpoch
          WeightDecay = 5e-4
          ShrinkOlderMeans = true
          LogitNormalisation = Some 0.1
          RestoreBeforeNextTask = true
          FreezeEarlierHeads = true }

    /// VQ-Prompt's classifier-bias mitigation as its official code runs it (`trainer.py`,
    /// `train_task_adaptive_prediction`, with `run.py`'s defaults: one centroid per class, 10
    /// epochs, AdamW from a tenth of `ca_lr` 1e-4 to 1e-6 per step, weight decay 5e-4, samples per
    /// class and batch both 4 × the training batch of 128): the diagonal (population) variance +
    /// 1e-4, plain cross-entropy, no shrink, nothing restored. Every drawn sample is used and the
    /// rate follows the cosine from the first step; the official code runs shorter epochs
    /// (EpochLength = BatchPerEarlierClass) and a first step at 1e-4 (CosinePerStepQuirk(1e-4, 1e-6)).
    let vqAlignment =
        { Covariance = DiagonalCovariance 1e-4
          SamplesPerClass = 512
          BatchSize = 512
          Epochs = 10
          EpochLength = EverySample
          Optimiser = AlignmentAdamW
          LearningRate = 1e-5
          RateSchedule = CosinePerStep 1e-6
          WeightDecay = 5e-4
          ShrinkOlderMeans = false
          LogitNormalisation = None
          RestoreBeforeNextTask = false
          FreezeEarlierHeads = false }

    /// Whether training changes the features the head reads (prompts, adapters, backbone weights).
    let trainsFeatures (m: Method) = not m.Groups.IsEmpty || addsBlockModules m || m.Backbone <> Frozen

    /// The width of what a calibrated head reads: D, or 2·D with the pretrained features beside.
    let calibrationWidth (width: int) (m: Method) =
        match m.HeadFeatures with
        | AdaptedFeatures -> width
        | PretrainedAndAdapted -> 2 * width

    /// Whether the trainable parts learn on task `task`.
    let learnsOn (task: int) (m: Method) = m.Adaptation = EveryTask || task = 0

    /// Refuses compositions that cannot work, with the reason.
    let checkComposition (m: Method) =
        match m.Calibration, m.Adaptation with
        | RandomProjectionRidge _, EveryTask when trainsFeatures m ->
            Errors.fail "method %s: a ridge head sums a Gram matrix over every task's features, but this method's features change on every task (its prompts, adapters or backbone train), so earlier tasks' sums would no longer match; adapt on the first task only (--adapt first-task)" m.Name
        | _ -> ()
        if m.Head = PrototypeHead && m.Calibration <> TrainedHead then
            Errors.fail "method %s: predicts with class prototypes already; a calibrated head is for methods that train a head" m.Name
        if m.Head <> PrototypeHead && m.Calibration = TrainedHead && m.Adaptation = FirstTaskOnly then
            Errors.fail "method %s: its trained head would learn on the first task only (first-task adaptation freezes everything after it), so later tasks' classes would never be learned; give it a calibrated head (--head prototype, ridge or aligned) or adapt on every task" m.Name
        if m.AdapterReduction.IsSome && m.ParallelAdapter.IsSome then
            Errors.fail "method %s: a block takes one MLP adapter; choose the sequential adapter (AdapterReduction) or the parallel one (ParallelAdapter)" m.Name
        match m.HeadFeatures, m.Calibration with
        | PretrainedAndAdapted, (TrainedHead | AlignedHead _) ->
            Errors.fail "method %s: the pretrained features beside the adapted ones are read by a calibrated head (class means, ridge), but this method predicts with its trained head" m.Name
        | _ -> ()
        match m.Calibration with
        | AlignedHead a when a.SamplesPerClass < 1 || a.BatchSize < 1 || a.Epochs < 0 ->
            Errors.fail "method %s: the aligned head needs positive samples per class and batch size, and epochs >= 0 (got %d, %d, %d)" m.Name a.SamplesPerClass a.BatchSize a.Epochs
        | _ -> ()

    /// Whether the method's prompt choices can be scored against tasks (one pool entry per task,
    /// trained with the task id): the prompt-choice accuracy is reported for these.
    let choosesPerTask (m: Method) =
        m.Groups |> List.exists (fun g -> match g.Source with Keyed k -> k.TrainWithTaskId | _ -> false)

    /// Whether some prompt source reads the query (everything but static prompts).
    let readsQuery (m: Method) =
        m.Groups |> List.exists (fun g -> match g.Source with Static -> false | _ -> true)

    /// Blocks of the un-prompted backbone the query pass runs: QueryDepth, else all `depth`.
    let queryDepth (depth: int) (m: Method) = defaultArg m.QueryDepth depth

    /// Leading blocks the query pass and the prompted pass can share, computed once: those before
    /// the first block a prompt group or adapter touches, up to the query depth, when a source reads
    /// the query and no backbone parameter trains (0 otherwise).
    let sharedBlocks (depth: int) (m: Method) =
        if not (readsQuery m) || m.Backbone <> Frozen then 0
        else
            let firstTouched =
                if addsBlockModules m then 0
                else m.Groups |> List.collect (PromptGroup.layers depth) |> List.fold min depth
            min firstTouched (queryDepth depth m)
