namespace Prompting

/// What a report needs to know about one finished run; plain data, independent of the engine.
type RunSummary =
    { Method: string
      Seed: int
      Metrics: RunMetrics
      TrainSeconds: float
      PeakMemoryBytes: int64
      TrainableParameters: int64
      /// The pretrained checkpoint's name (file name or hub id).
      Checkpoint: string
      CheckpointSha256: string
      /// The run's configuration as JSON (shown pretty-printed).
      ConfigJson: string
      /// One readable line of the settings: method, head, backbone, image size, epochs, batch, rate, seed.
      Settings: string
      /// The class names of each task in the run's order (empty for runs that did not record them).
      TaskClasses: string list list
      /// The mean training loss of each epoch, per task (NaN for an epoch without gradient steps).
      EpochLosses: float list list
      /// What makes the results doubtful (Engine.Warnings), as recorded in progress.json.
      Warnings: string list }
