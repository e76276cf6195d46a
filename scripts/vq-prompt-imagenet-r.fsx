// VQ-Prompt on Split ImageNet-R: as on CIFAR-100 (AdamW prompts 0.0125 / head 0.0025, per-iteration
// cosine to 1e-6 over 20 epochs, head recalibration) with batch 64; pixels in [0, 1].
// Split ImageNet-R, 10 tasks of 20 classes (class order shuffled with --seed), class-incremental.
// --data: either DIR/{train,test}/<class>/<image>, or the released single-folder tree
// (imagenet-r/<class>/<image>, from https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar),
// which is split 80/20 per class deterministically (see Datasets.imagenetRSplit in Protocol.fsx;
// --split-seed K picks another split) into symbolic links under the run directory.
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/vq-prompt-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "vq-prompt-imagenet-r" [ { Name = "split-seed"; TakesValue = true; Help = "seed of the 80/20 ImageNet-R split of a single-folder tree (default 0)" } ] (fun o ->
    { Name = "vq-prompt-imagenet-r"
      Method = Methods.vqPrompt
      Benchmark = "imagefolder"
      Tasks = 10
      Scenario = ClassIncremental
      Training = { Reference.vqPrompt with BatchSize = 64 }
      Normalisation = UnitRange
      PrepareData = Datasets.imagenetRSplit (o.Int("split-seed", 0)) })
