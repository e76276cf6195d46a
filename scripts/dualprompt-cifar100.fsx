// DualPrompt (Wang et al., ECCV 2022) on Split CIFAR-100, as the original JAX code: G-prompt layers
// 0-1, E-prompt pool (one per task) layers 2-4, separate K/V prefixes of length 5; Adam, constant
// lr 0.005 x batch/256, batch 128, 5 epochs per task, backbone normalisation.
// Split CIFAR-100, 10 tasks of 10 classes, class-incremental, in the natural class order whatever
// the seed (the PyTorch port's --shuffle False; --class-order seed:K or coda-K for others).
// --data: the CIFAR-100 binary version (cifar-100-binary directory or cifar-100-binary.tar.gz).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/dualprompt-cifar100.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "dualprompt-cifar100" [] (fun o ->
    let tasks = defaultArg o.Tasks 10
    { Name = "dualprompt-cifar100"
      Method = Methods.dualPrompt tasks
      Benchmark = "cifar100"
      Tasks = 10
      Scenario = ClassIncremental
      Training = Reference.dualPrompt
      Normalisation = Normalised
      ClassOrder = Reference.portsOrder })
