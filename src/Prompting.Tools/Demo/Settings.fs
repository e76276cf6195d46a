namespace Prompting.Demo

open Prompting.Prompts
open Prompting.Pretrain

/// The demo as data: the backbone's pretraining and the runs that compare methods on it.
type DemoSettings =
    { Backbone: MaeConfig
      /// Methods in table order.
      Methods: string list
      /// The baseline the prompt methods are measured against.
      Baseline: string
      Tasks: int
      TrainPerClass: int
      TestPerClass: int
      Epochs: int
      BatchSize: int
      /// Learning rates that replace the method's recipe on this small backbone.
      LearningRates: Map<string, float>
      /// Replaces the aligned head of methods that have one (VQ-Prompt).
      Alignment: ClassAlignment option
      Seed: int }

module DemoSettings =
    /// Class-incremental Fashion-MNIST, 5 tasks of 2 classes, on the MAE backbone; sizes chosen to
    /// fit the budget on 2 CPU cores (docs/demo.md).
    let standard =
        { Backbone = MaeConfig.demo
          Methods = [ "dualprompt"; "vq-prompt"; "sequential" ]
          Baseline = "sequential"
          Tasks = 5
          TrainPerClass = 300
          TestPerClass = 100
          Epochs = 3
          BatchSize = 32
          LearningRates = Map.ofList [ "dualprompt", 0.2 ]
          // The reference's rates (1e-5 to 1e-6, for ViT-B features) leave this small head as it
          // was; these let the alignment rebalance the classes of all tasks. Batches of the demo's
          // 32, as its training.
          Alignment = Some { Method.vqAlignment with LearningRate = 1e-3; RateSchedule = CosinePerStep 1e-4; BatchSize = 32 }
          Seed = 0 }
