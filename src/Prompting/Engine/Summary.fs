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
      ConfigJson: string }
