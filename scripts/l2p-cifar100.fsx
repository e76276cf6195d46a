// L2P (Wang et al., CVPR 2022) on Split CIFAR-100: pool 10, length 5, top-5 at the input (PyTorch port);
// Adam, constant lr 0.03 x batch/256, batch 128, 5 epochs per task, grad clip 1.0, backbone normalisation.
// Split CIFAR-100, 10 tasks of 10 classes, class-incremental, in the natural class order whatever
// the seed (the PyTorch port's --shuffle False; --class-order seed:K or coda-K for others).
// --data: the CIFAR-100 binary version (cifar-100-binary directory or cifar-100-binary.tar.gz).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/l2p-cifar100.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "l2p-cifar100" [] (fun _ ->
    { Name = "l2p-cifar100"
      Method = Methods.l2p
      Benchmark = "cifar100"
      Tasks = 10
      Scenario = ClassIncremental
      Training = Reference.l2p
      Normalisation = Normalised
      ClassOrder = Reference.portsOrder })
