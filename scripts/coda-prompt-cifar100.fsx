// CODA-Prompt (Smith et al., CVPR 2023) on Split CIFAR-100: 100 components of length 8 at layers 0-4,
// orthogonality weight 0 (current official configs); Adam lr 1e-3, batch 128, cosine decay over each
// task's 20 epochs; pixels in [0, 1] without normalisation as the official loaders feed them
// (--normalisation backbone for the backbone's statistics).
// Split CIFAR-100, 10 tasks of 10 classes, class-incremental; class order CODA-Prompt's rule for
// repeat K = --seed (rand_split: the natural order for 0, random.seed(K); random.shuffle otherwise).
// --data: the CIFAR-100 binary version (cifar-100-binary directory or cifar-100-binary.tar.gz).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/coda-prompt-cifar100.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "coda-prompt-cifar100" [] (fun _ ->
    { Name = "coda-prompt-cifar100"
      Method = Methods.codaPrompt
      Benchmark = "cifar100"
      Tasks = 10
      Scenario = ClassIncremental
      Training = Reference.codaPrompt
      Normalisation = UnitRange
      ClassOrder = Reference.codaOrder })
