// CODA-Prompt on Split ImageNet-R: 100 components of length 8 at layers 0-4, orthogonality weight 0;
// Adam lr 1e-3, batch 128, cosine decay over each task's 50 epochs; pixels in [0, 1] as the official
// loaders feed them (--normalisation backbone for the backbone's statistics).
// Split ImageNet-R, 10 tasks of 20 classes, class-incremental, on CODA-Prompt's split lists by default
// (class order: the lists' own for --seed 0, CODA-Prompt's random.seed(K) shuffle for --seed K).
// --data: the released single-folder tree (imagenet-r/<wnid>/<image>, from
// https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar) with CODA-Prompt's imagenet-r_train.yaml and
// imagenet-r_test.yaml beside the class folders (checked by SHA-256; `prompting benchmarks imagenet-r`);
// --split seeded: our own 80/20 split per class with seed 0 instead; a DIR/{train,test}/<wnid>/ tree is read
// as it is (--split folders).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/coda-prompt-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D] [--split coda|folders|seeded]
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
      Normalisation = UnitRange
      ClassOrder = None })
