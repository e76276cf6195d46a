// CODA-Prompt on Split ImageNet-R: 100 components of length 8 at layers 0-4, orthogonality weight 0;
// Adam lr 1e-3, batch 128, cosine decay over each task's 50 epochs; pixels in [0, 1] as the official
// loaders feed them (--normalisation backbone for the backbone's statistics).
// Split ImageNet-R, 10 tasks of 20 classes (class order shuffled with --seed), class-incremental.
// --data: either DIR/{train,test}/<class>/<image>, or the released single-folder tree
// (imagenet-r/<class>/<image>, from https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar),
// which is split 80/20 per class deterministically (see Datasets.imagenetRSplit in Protocol.fsx;
// --split-seed K picks another split) into symbolic links under the run directory.
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/coda-prompt-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "coda-prompt-imagenet-r" [ { Name = "split-seed"; TakesValue = true; Help = "seed of the 80/20 ImageNet-R split of a single-folder tree (default 0)" } ] (fun o ->
    { Name = "coda-prompt-imagenet-r"
      Method = Methods.codaPrompt
      Benchmark = "imagefolder"
      Tasks = 10
      Scenario = ClassIncremental
      Training = { Reference.codaPrompt with Epochs = 50 }
      Normalisation = UnitRange
      PrepareData = Datasets.imagenetRSplit (o.Int("split-seed", 0)) })
