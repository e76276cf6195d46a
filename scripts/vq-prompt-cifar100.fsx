// VQ-Prompt on Split CIFAR-100: pool 10 of length 8 at layers 0-4, straight-through quantisation,
// the aligned head (diagonal class statistics, re-trained after each task); AdamW prompts 0.0125 / head 0.0025,
// weight decay 0, per-iteration cosine to 1e-6 over 20 epochs, batch 128; pixels in [0, 1] as the
// official (CODA-based) loaders feed them (--normalisation backbone for the backbone's statistics).
// Split CIFAR-100, 10 tasks of 10 classes, class-incremental; class order CODA-Prompt's rule for
// repeat K = --seed (rand_split: the natural order for 0, random.seed(K); random.shuffle otherwise).
// --data: the CIFAR-100 binary version (cifar-100-binary directory or cifar-100-binary.tar.gz).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/vq-prompt-cifar100.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "vq-prompt-cifar100" [] (fun _ ->
    { Name = "vq-prompt-cifar100"
      Method = Methods.vqPrompt
      Benchmark = "cifar100"
      Tasks = 10
      Scenario = ClassIncremental
      Training = Reference.vqPrompt
      Normalisation = UnitRange
      ClassOrder = Reference.codaOrder })
