// DualPrompt on Split ImageNet-R, as the original JAX code: G-prompt layers 0-1 (length 5), E-prompt
// pool (one per task) layers 2-4 with length 20 for ImageNet-R, separate K/V prefixes; Adam, constant
// lr 0.005 x batch/256, batch 128, 50 epochs per task, backbone normalisation.
// Split ImageNet-R, 10 tasks of 20 classes, class-incremental, on CODA-Prompt's split lists by default
// (class order: the lists' own for --seed 0, CODA-Prompt's random.seed(K) shuffle for --seed K).
// --data: the released single-folder tree (imagenet-r/<wnid>/<image>, from
// https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar) with CODA-Prompt's imagenet-r_train.yaml and
// imagenet-r_test.yaml beside the class folders (checked by SHA-256; `prompting benchmarks imagenet-r`);
// --split seeded: our own 80/20 split per class with seed 0 instead; a DIR/{train,test}/<wnid>/ tree is read
// as it is (--split folders).
// --checkpoint: the ViT-B/16 checkpoint (e.g. ImageNet-21k augreg, safetensors or npz).
// Usage: dotnet fsi scripts/dualprompt-imagenet-r.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K] [--device D] [--split coda|folders|seeded]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "dualprompt-imagenet-r" [] (fun o ->
    let dual = Methods.dualPrompt (defaultArg o.Tasks 10)
    { Name = "dualprompt-imagenet-r"
      Method = { dual with Groups = dual.Groups |> List.map (fun g -> if g.Name = "e" then { g with Length = 20 } else g) }
      Benchmark = "imagenet-r"
      Tasks = 10
      Scenario = ClassIncremental
      Training = { Reference.dualPrompt with Epochs = 50 }
      Normalisation = Normalised
      ClassOrder = None })
