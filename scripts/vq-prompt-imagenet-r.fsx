// VQ-Prompt on Split ImageNet-R: as on CIFAR-100 (AdamW prompts 0.0125 / head 0.0025, per-iteration
// cosine to 1e-6 over 20 epochs, the aligned head) with batch 64, so the alignment's samples per class and
// batch, 4 × the training batch in the official code, are 256; pixels in [0, 1].
// Split ImageNet-R, 10 tasks of 20 classes, class-incremental, on CODA-Prompt's split lists by default
// (class order: the lists' own for --seed 0, CODA-Prompt's random.seed(K) shuffle for --seed K).
// --data: the released single-folder tree (imagenet-r/<wnid>/<image>, from
// https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar) with CODA-Prompt's imagenet-r_train.yaml and
// imagenet-r_test.yaml beside the class folders (checked by SHA-256; `prompting benchmarks imagenet-r`);
// --split seeded: our own 80/20 split per class with seed 0 instead; a DIR/{train,test}/<wnid>/ tree is read
// as it is (--split folders).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/vq-prompt-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D] [--split coda|folders|seeded]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "vq-prompt-imagenet-r" [] (fun _ ->
    { Name = "vq-prompt-imagenet-r"
      Method = { Methods.vqPrompt with Calibration = AlignedHead { Method.vqAlignment with SamplesPerClass = 256; BatchSize = 256 } }
      Benchmark = "imagenet-r"
      Tasks = 10
      Scenario = ClassIncremental
      Training = { Reference.vqPrompt with BatchSize = 64 }
      Normalisation = UnitRange
      ClassOrder = None })
