// A new method composed in a script from existing parts, with its own recipe, run on a registered
// benchmark; nothing of the core changes. docs/adding-a-method.md starts from this file and
// explains every name it uses.
//
// "g-coda": DualPrompt's general prompt (G, shared by every task, layers 0-1) in front of a
// CODA-Prompt component pool (layers 2-4), so the shallow layers get a task-shared prompt and the
// deeper ones an input-weighted mix of components.
//
// Usage: dotnet fsi scripts/compose.fsx -- --data DIR --checkpoint FILE [--out DIR] [--seed K]
//        [--components N] [--epochs N] [--batch-size N] [--image-size PX] [--train-per-class N] ...
//        (every option of the protocol scripts; --help lists them)
// Example on the shared CIFAR-10 JPEGs and ViT-Ti/16, small enough for a laptop CPU:
//   dotnet fsi scripts/compose.fsx -- --data ../shared/data/cifar10-jpeg.tar \
//     --checkpoint ../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
//     --image-size 64 --train-per-class 100 --test-per-class 50 --epochs 3 --batch-size 32
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

/// The parts, taken by name from the registered methods (Prompting.Prompts.Methods).
let generalPrompt = Methods.dualPromptCoda.Groups.Head
let componentPool = Methods.codaPrompt.Groups.Head

/// The new method: a Method value is the whole definition, its training recipe included.
/// `components`: the pool's size, shared out over the tasks (Gram-Schmidt needs at most the
/// backbone's width of them by the last task).
let gCoda components =
    { Methods.codaPrompt with
        Name = "g-coda"
        Description = sprintf "DualPrompt's G-prompt at layers 0-1, then a CODA component pool (%d) at layers 2-4" components
        Groups =
            [ generalPrompt
              { componentPool with
                  Layers = Only [ 2; 3; 4 ]
                  Source = Components { Components = components; OrthogonalityWeight = 0.0 } } ]
        // Its recipe: CODA-Prompt's (Adam 1e-3, quarter cosine, drop-last), fewer epochs, smaller batches.
        Recipe = { Methods.Recipes.codaRepository with Epochs = 5; BatchSize = 64 } }

/// An option of this script beside the protocol scripts' common ones.
let componentsOption = { Name = "components"; TakesValue = true; Help = "size of the component pool (default 50)" }

// Split CIFAR-10, 5 tasks of 2 classes, class-incremental; the command line supplies the data,
// the checkpoint and any quick-run overrides (which change only the recipe fields they name).
Protocol.main "compose" [ componentsOption ] (fun options ->
    let method = gCoda (options.Int("components", 50))
    // Refuses a composition that cannot train (for example a calibrated head with trainable parts
    // on every task) with one line, before any data is read.
    Method.checkComposition method
    printfn "%s" (Describe.methodLine method)
    { Name = method.Name
      Method = method
      Benchmark = "cifar10"
      Tasks = 5
      Scenario = ClassIncremental
      Training = method.Recipe
      Normalisation = Normalised
      ClassOrder = None })
