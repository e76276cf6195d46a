namespace Prompting.Demo

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
      Seed: int }

module DemoSettings =
    /// Class-incremental Fashion-MNIST, 5 tasks of 2 classes, on the MAE backbone; sizes chosen to
    /// fit the budget on 2 CPU cores (docs/demo.md).
    let standard =
        { Backbone = MaeConfig.demo
          Methods = [ "dualprompt"; "coda-prompt"; "sequential" ]
          Baseline = "sequential"
          Tasks = 5
          TrainPerClass = 200
          TestPerClass = 100
          Epochs = 2
          BatchSize = 64
          LearningRates = Map.empty
          Seed = 0 }
