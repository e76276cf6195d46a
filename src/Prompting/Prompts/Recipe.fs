namespace Prompting.Prompts

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
    /// The CODA-Prompt repository's CosineSchedule (also InfLoRA's): at epoch e of K,
    /// rate · cos(99π·e / (200·(K − 1))), a quarter cosine that ends near 1.6 % of the rate, never 0.
    | QuarterCosine
    /// PyTorch's MultiStepLR: the rate times `factor` for every milestone epoch reached (SLCA:
    /// ×0.1 from epoch 18 of 20). Milestones count epochs, whatever the schedule unit.
    | MultiStep of milestones: int list * factor: float

type ScheduleUnit =
    | PerEpoch
    | PerIteration

/// How a method trains: part of the method's definition, so a method composed anywhere (a script,
/// a JSON configuration) trains with its own recipe. Command-line flags override single fields.
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
      /// Leave out each epoch's last incomplete batch (the CODA-Prompt loaders' drop_last). A task
      /// with fewer images than one batch keeps its one batch, so that it trains at all.
      DropLast: bool
      /// Mixed precision: the frozen backbone computes in bfloat16, prompts and head in float32
      /// (TorchSharp has no autocast, so the casts are explicit; meant for CUDA, works on the CPU).
      Bf16: bool }

module Training =
    /// Adam at 1e-3, constant, 5 epochs of batch 128: what a method states only where it differs.
    let defaults =
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
          DropLast = false
          Bf16 = false }

    /// The base rate, scaled by batch / 256 when the recipe says so.
    let baseRate (t: Training) =
        if t.ScaleByBatch then t.LearningRate * float t.BatchSize / 256.0 else t.LearningRate

    /// Optimiser steps of an epoch over `count` images.
    let batchesPerEpoch (t: Training) (count: int) =
        let full = count / t.BatchSize
        if t.DropLast && full > 0 then full else (count + t.BatchSize - 1) / t.BatchSize
