// L2P on Split ImageNet-R: pool 10, length 5, top-5 at the input (PyTorch port); Adam, constant lr
// 0.03 x batch/256, batch 128, grad clip 1.0, backbone normalisation. METHODS.md states 5 epochs for
// CIFAR-100 only; the ImageNet-R comparisons (DualPrompt, CODA-Prompt papers) train 50 epochs per
// task, used here (--epochs 5 for the CIFAR setting).
// Split ImageNet-R, 10 tasks of 20 classes, class-incremental, on CODA-Prompt's split lists by default
// (class order: the lists' own for --seed 0, CODA-Prompt's random.seed(K) shuffle for --seed K).
// --data: the released single-folder tree (imagenet-r/<wnid>/<image>, from
// https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar) with CODA-Prompt's imagenet-r_train.yaml and
// imagenet-r_test.yaml beside the class folders (checked by SHA-256; `prompting benchmarks imagenet-r`);
// --split seeded: our own 80/20 split per class with seed 0 instead; a DIR/{train,test}/<wnid>/ tree is read
// as it is (--split folders).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/l2p-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D] [--split coda|folders|seeded]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "l2p-imagenet-r" [] (fun _ ->
    { Name = "l2p-imagenet-r"
      Method = Methods.l2p
      Benchmark = "imagenet-r"
      Tasks = 10
      Scenario = ClassIncremental
      Training = { Reference.l2p with Epochs = 50 }
      Normalisation = Normalised
      ClassOrder = None })
