namespace Prompting.Engine

open Prompting.Data
open Prompting.Prompts

type OptimizerKind =
    | Adam
    | AdamW
    | Sgd of momentum: float

type Schedule =
    | Constant
    /// Cosine decay to `final` × the base rate.
    | Cosine of final: float
    /// Linear warm-up over `warmup` epochs, then cosine decay to `final` × the base rate.
    | WarmupCosine of warmup: int * final: float

type ScheduleUnit =
    | PerEpoch
    | PerIteration

type ScenarioKind =
    /// T tasks over disjoint classes; evaluation over every class seen so far.
    | ClassIncremental
    /// As class-incremental, but the task id is given at test time (logits of its classes only).
    | TaskIncremental
    /// Every task has all classes; tasks are domains (sub-folders of the data root).
    | DomainIncremental
    /// One task with every class (upper bound).
    | Joint

type ClassOrder =
    /// The dataset's class order.
    | Natural
    /// A permutation drawn with this seed (the papers' protocol).
    | Shuffled of seed: int
    /// An explicit order of class indices (for example read from a file).
    | Given of int list

type Training =
    { Epochs: int
      BatchSize: int
      /// Base learning rate; scaled by batch / 256 when ScaleByBatch, as the references do.
      LearningRate: float
      ScaleByBatch: bool
      /// Learning rate of the head when it differs (VQ-Prompt: prompts 0.0125, head 0.0025).
      HeadLearningRate: float option
      Optimizer: OptimizerKind
      WeightDecay: float
      Schedule: Schedule
      ScheduleUnit: ScheduleUnit
      GradientClip: float option
      /// Mixed precision: the frozen backbone computes in bfloat16, prompts and head in float32
      /// (TorchSharp has no autocast, so the casts are explicit; meant for CUDA, works on the CPU).
      Bf16: bool }

/// Everything that determines a run's results: serialised as config.json in the run directory,
/// compared on resume. The method is the full configuration value, so JSON can tweak any part.
type RunConfig =
    { Method: Method
      /// imagefolder, cifar10, cifar100, fashion-mnist
      Benchmark: string
      Data: string option
      Checkpoint: string
      Heads: int option
      ImageSize: int
      Tasks: int
      Scenario: ScenarioKind
      ClassOrder: ClassOrder
      TrainPerClass: int option
      TestPerClass: int option
      Training: Training
      /// The backbone's statistics by default; UnitRange as the CODA-Prompt/VQ-Prompt loaders feed.
      Normalisation: PixelScale
      Seed: int
      SkipCorrupt: bool
      /// Hold out this seeded fraction of each class's training data and evaluate on it instead of
      /// the test split (Data.Validation), for choosing hyperparameters; None: train on all of it.
      Validation: float option }

/// The references' training recipes, kept as data.
module Recipes =
    let private base' =
        { Epochs = 5
          BatchSize = 128
          LearningRate = 0.001
          ScaleByBatch = false
          HeadLearningRate = None
          Optimizer = Adam
          WeightDecay = 0.0
          Schedule = Constant
          ScheduleUnit = PerEpoch
          GradientClip = None
          Bf16 = false }

    /// Per method: L2P Adam 0.03 (scaled by batch/256), clip 1.0; DualPrompt Adam 0.005 (scaled);
    /// CODA Adam 1e-3 cosine; VQ AdamW prompts 0.0125 / head 0.0025 cosine per iteration;
    /// VPT SGD momentum 0.9 with warm-up and cosine; baselines Adam 1e-3 (full fine-tuning 1e-4).
    let forMethod (name: string) =
        match name with
        | "l2p" | "l2p-jax" | "l2p++" | "vpt-deep-pool" ->
            { base' with LearningRate = 0.03; ScaleByBatch = true; GradientClip = Some 1.0 }
        | "dualprompt" | "dualprompt-coda" | "dual-vq" -> { base' with LearningRate = 0.005; ScaleByBatch = true }
        | "coda-prompt" -> { base' with Epochs = 20; LearningRate = 0.001; Schedule = Cosine 0.0 }
        | "vq-prompt" ->
            { base' with
                Epochs = 20
                LearningRate = 0.0125
                HeadLearningRate = Some 0.0025
                Optimizer = AdamW
                Schedule = Cosine 0.0
                ScheduleUnit = PerIteration }
        | "vpt-shallow" | "vpt-deep" ->
            { base' with Epochs = 100; LearningRate = 0.25 * 128.0 / 256.0; Optimizer = Sgd 0.9; WeightDecay = 0.001; Schedule = WarmupCosine(10, 0.0) }
        | "full" | "sequential" | "joint" | "partial-1" -> { base' with LearningRate = 1e-4 }
        | _ -> base'
