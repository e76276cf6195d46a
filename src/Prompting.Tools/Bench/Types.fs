namespace Prompting.Bench

/// What one measurement process (ours or the PyTorch peer) is asked to do: one method, one side.
/// Written as JSON by the parent and read by the child; pure data.
type MeasureRequest =
    { Method: string
      Checkpoint: string
      Heads: int
      ImageSize: int
      BatchSize: int
      Threads: int
      /// Untimed steps before the timed repeats (at least 1: the first step allocates).
      Warmup: int
      /// Steps (batches) per timed repeat.
      Steps: int
      Repeats: int
      Device: string
      /// The task layout: `Tasks` tasks sharing `Classes` classes; the step trains task `Task`.
      Tasks: int
      Classes: int
      Task: int
      /// Also time the phases of the training step (and, on the peer, an op-level profile).
      Profile: bool
      Seed: int
      /// Mixed precision: the frozen backbone in bfloat16 (ours: the engine's --bf16; the peer:
      /// torch.autocast to bfloat16 around the forward passes and the loss).
      Bf16: bool
      /// Blocks the query pass runs (the method's QueryDepth); None: all of them. Methods without
      /// a query pass ignore it.
      QueryDepth: int option }

/// One timed phase of a training step: the median over the profiled steps.
type Phase = { Name: string; Milliseconds: float }

/// What a measurement process reports (the peer writes the same JSON shape).
type SideResult =
    { Side: string
      Method: string
      /// Seconds per timed repeat of `Steps` training steps.
      TrainSeconds: float list
      /// Seconds per timed repeat of `Steps` inference batches.
      InferSeconds: float list
      /// Process CPU seconds (user + system, all threads) per training repeat: the work done,
      /// which other processes on a shared machine disturb less than the wall-clock time.
      TrainCpuSeconds: float list
      /// The same per inference repeat.
      InferCpuSeconds: float list
      ImagesPerRepeat: int
      TrainableParameters: int64
      /// VmRSS once the runtime and libtorch are loaded, before the weights are read.
      BaselineRssBytes: int64
      /// VmHWM at the end: the peak resident set of the whole process.
      PeakRssBytes: int64
      /// Device memory in use at the end minus before loading (CUDA only).
      CudaUsedBytes: int64 option
      /// The allocator's own peak (the peer on CUDA only: TorchSharp exposes no allocator statistics).
      CudaAllocatedPeakBytes: int64 option
      /// Mean training loss of the timed steps (a sanity check that both sides train).
      Loss: float
      Phases: Phase list
      /// The library that ran it, e.g. "TorchSharp 0.107 / libtorch 2.10" or "PyTorch 1.13.1".
      Library: string }

/// One table row: both sides of one method plus the analytic FLOPs.
type BenchRow =
    { Method: string
      Ours: SideResult option
      Peer: SideResult option
      /// Why a side has no result (a failed child, no peer, an unsupported method).
      OursError: string option
      PeerError: string option
      Flops: FlopCount
      OursTrainImagesPerSecond: float
      PeerTrainImagesPerSecond: float
      TrainRatio: float
      OursInferImagesPerSecond: float
      PeerInferImagesPerSecond: float
      InferRatio: float
      /// FLOPs/img × img/s ÷ the measured matmul peak.
      /// PyTorch's CPU seconds per repeat ÷ ours (medians): the ratio of work done, robust to load.
      TrainCpuRatio: float
      InferCpuRatio: float
      OursTrainMfu: float
      OursInferMfu: float
      PeerTrainMfu: float }

/// The run as a whole, as written to bench.json.
type BenchReport =
    { Date: string
      Commit: string option
      Device: string
      Threads: int
      Checkpoint: string
      Architecture: string
      ImageSize: int
      BatchSize: int
      Warmup: int
      Steps: int
      Repeats: int
      Tasks: int
      Classes: int
      Task: int
      /// The query depth every method with a query pass ran with; None: the whole backbone.
      QueryDepth: int option
      /// Best float32 matmul GFLOP/s measured by our side (libtorch) in this run.
      MatmulPeakGflops: float
      /// The same measured by the peer (its BLAS), when it ran.
      PeerMatmulPeakGflops: float option
      PeerLibrary: string option
      Rows: BenchRow list }
