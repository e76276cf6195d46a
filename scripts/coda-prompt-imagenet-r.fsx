// CODA-Prompt on Split ImageNet-R: 100 components of length 8 at layers 0-4, orthogonality weight 0;
// Adam lr 1e-3, batch 128, cosine decay over each task's 50 epochs; pixels in [0, 1] as the official
// loaders feed them (--normalisation backbone for the backbone's statistics).
// Split ImageNet-R, 10 tasks of 20 classes (class order shuffled with --seed), class-incremental.
// --data: either DIR/{train,test}/<class>/<image>, or the released single-folder tree
// (imagenet-r/<class>/<image>, from https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar),
// which the registered imagenet-r benchmark splits 80/20 per class with seed 0 (Data/Splits.fs).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/coda-prompt-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "coda-prompt-imagenet-r" [] (fun _ ->
    { Name = "coda-prompt-imagenet-r"
      Method = Methods.codaPrompt
      Benchmark = "imagenet-r"
      Tasks = 10
      Scenario = ClassIncremental
      Training = { Reference.codaPrompt with Epochs = 50 }
      Normalisation = UnitRange })
