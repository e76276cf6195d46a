// VPT (Jia et al., ECCV 2022) on one image-folder transfer task (joint scenario, every class in one
// task): VPT-deep (10 fresh prompts per layer, prompt dropout 0.1) or with --shallow VPT-shallow;
// SGD momentum 0.9, 10 warm-up epochs then cosine over 100, batch 128, lr = base x batch/256,
// backbone normalisation. The paper searches base in {50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05},
// weight decay in {0.01, 1e-3, 1e-4, 0} and the prompt length in {1, 5, 10, 50, 100, 200}: pass
// --base-lr, --weight-decay and --prompt-length (defaults 0.25, 1e-3, 10).
// --data: DIR/{train,test}/<class>/<image> (or a .tar of one); or with --benchmark a registered
// transfer task, fgvc-<set> (VPT's train/val/test.json) or vtab1k-<task> (train800.txt, val200.txt,
// train800val200.txt, test.txt), with --split tune (train on train/train800, test on val/val200: the
// choice of rate and weight decay) or final (the default: train+val/train800val200 against test).
// This runs one point. The whole protocol (the grid on tune, the chosen point on final with three
// seeds, mean ± sd) is one sweep per data set: `prompting sweep --file scripts/vpt-transfer.sweep.json
// --out DIR -- --benchmark vtab1k-cifar --data vtab-1k/cifar --checkpoint FILE` (docs/sweeps.md).
// Usage: dotnet fsi scripts/vpt-transfer.fsx -- --data DIR --checkpoint FILE [--benchmark NAME] [--split tune|final] [--shallow] [--out DIR] [--seed K] [--device D]
#load "Protocol.fsx"
open Prompting.Data
open Prompting.Engine
open Prompting.Prompts
open Protocol

Protocol.main "vpt-transfer"
    [ { Name = "shallow"; TakesValue = false; Help = "VPT-shallow (prompts at the input only) instead of VPT-deep" }
      { Name = "base-lr"; TakesValue = true; Help = "base learning rate before x batch/256 (default 0.25)" }
      { Name = "weight-decay"; TakesValue = true; Help = "weight decay (default 1e-3)" }
      { Name = "prompt-length"; TakesValue = true; Help = "prompt tokens per layer (default 10)" }
      { Name = "benchmark"; TakesValue = true; Help = "imagefolder (default), fgvc-<set> or vtab1k-<task> (see `prompting benchmarks`)" } ]
    (fun o ->
        let vpt = if o.Flag "shallow" then Methods.vptShallow else Methods.vptDeep
        let length = o.Int("prompt-length", 10)
        { Name = vpt.Name + "-transfer"
          Method = { vpt with Groups = vpt.Groups |> List.map (fun g -> { g with Length = length }) }
          Benchmark = o.Extra.TryFind "benchmark" |> Option.defaultValue "imagefolder"
          Tasks = 1
          Scenario = Joint
          Training = Reference.vpt (o.Float("base-lr", 0.25)) (o.Float("weight-decay", 1e-3))
          Normalisation = Normalised
          ClassOrder = None })
