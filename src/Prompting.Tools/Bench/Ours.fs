namespace Prompting.Bench

open System
open System.Diagnostics
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Prompts
open Prompting.Engine

/// Our side of one measurement, meant to run alone in a fresh process (so VmHWM is this method's):
/// the engine's own training step (Trainer.trainTask: the method's loss, masking, optimiser and
/// clipping from its recipe) and its own evaluation loop (Evaluate.evaluateTask: query pass,
/// prompted pass, no gradients), on the synthetic batch.
module Ours =
    let library = "TorchSharp 0.107 / libtorch 2.10"

    let private batchOf (r: MeasureRequest) (pixels: float32[]) (labels: int64[]) index : Batch =
        { Index = index; Count = r.BatchSize; Size = r.ImageSize; Pixels = pixels; Labels = labels; Indices = [||] }

    /// The recipe of the method for one epoch of synthetic batches.
    let training (r: MeasureRequest) (method: Method) =
        { method.Recipe with Epochs = 1; BatchSize = r.BatchSize; Bf16 = r.Bf16 }

    /// Differences of per-step readings over each repeat: repeat i spans steps (W + i·K, W + (i+1)·K].
    let repeatDifferences (warmup: int) (steps: int) (repeats: int) (readings: float[]) =
        [ for i in 0 .. repeats - 1 -> readings[warmup + (i + 1) * steps - 1] - readings[warmup + i * steps - 1] ]

    /// Seconds per repeat from step-end timestamps (Stopwatch ticks).
    let repeatSeconds (warmup: int) (steps: int) (repeats: int) (stamps: int64[]) =
        repeatDifferences warmup steps repeats (stamps |> Array.map (fun s -> float s / float Stopwatch.Frequency))

    /// CPU seconds this process has used, all threads.
    let cpuSeconds () = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds

    /// Hand-timed phases of the trainer's step, for the profile: the same calls in the same order,
    /// with the query pass (to the method's query depth, its shared blocks included) also run
    /// alone (once more) to separate it from the prompted forward.
    let private phases (model: PromptedModel) (t: Training) (device: torch.Device) (r: MeasureRequest) (batch: Batch) (queried: bool) =
        let trainable = model.TrainableParameters()
        if trainable.IsEmpty then []
        else
            let optimizer = Schedules.optimizer t (trainable |> List.map snd) (Schedules.baseRate t)
            let parameters = trainable |> List.map snd
            model.train ()
            let samples = ResizeArray<float[]>()
            try
                for step in 0 .. r.Warmup + r.Steps * r.Repeats - 1 do
                    use _ = Runtime.noCollection (Runtime.stepBudget batch.Count batch.Size 4)
                    use scope = torch.NewDisposeScope()
                    let clock = Stopwatch.StartNew()
                    let mark () =
                        Compute.synchronize device
                        clock.Elapsed.TotalMilliseconds
                    let x = Batches.pixels device batch
                    let y = torch.tensor(batch.Labels).``to`` device
                    let t0 = mark ()
                    if queried then model.Query x |> ignore
                    let t1 = mark ()
                    let output = model.Forward(x, true)
                    let t2 = mark ()
                    let loss = Loss.total model output y
                    let t3 = mark ()
                    optimizer.zero_grad ()
                    loss.backward ()
                    let t4 = mark ()
                    t.GradientClip |> Option.iter (fun c -> torch.nn.utils.clip_grad_norm_ (parameters, c) |> ignore)
                    optimizer.step () |> ignore
                    let t5 = mark ()
                    if step >= r.Warmup then
                        samples.Add [| t0; t1 - t0; (t2 - t1) - (t1 - t0); t3 - t2; t4 - t3; t5 - t4 |]
            finally
                optimizer.Dispose()
                model.eval ()
            let names = [ "batch to tensor"; "query pass"; "prompted forward"; "loss"; "backward"; "optimiser (clip + step)" ]
            names |> List.mapi (fun i name -> { Name = name; Milliseconds = Stats.median [ for s in samples -> s[i] ] })

    /// Measures one method; the caller runs it in a fresh process and writes the result.
    let measure (r: MeasureRequest) : SideResult =
        Compute.setThreads r.Threads
        let device = Devices.parse r.Device
        let baseline = Memory.residentBytes ()
        // The CUDA context exists only after a first device allocation; the baseline is read after it,
        // as the peer reads its own after torch.cuda.init().
        let cudaBefore =
            if device.``type`` = DeviceType.CUDA then
                use _ = torch.zeros([| 1L |], device = device)
                CudaMemory.usedBytes ()
            else None
        // The bench's --query-depth (validated by the parent); methods without a query pass ignore it.
        let method = { Methods.find r.Method r.Tasks with QueryDepth = r.QueryDepth }
        let layout = TaskLayout.uniform r.Tasks r.Classes
        if r.Task < 0 || r.Task >= r.Tasks then Errors.fail "--task %d: must be in 0..%d" r.Task (r.Tasks - 1)
        torch.manual_seed (int64 r.Seed) |> ignore
        let backbone = Checkpoint.load r.Checkpoint { ImageSize = Some r.ImageSize; Heads = Some r.Heads; Classes = None }
        use model = PromptedModel.build method layout backbone
        model.``to`` device |> ignore
        if r.Bf16 then model.SetComputeType torch.bfloat16
        if r.Task > 0 then model.BeginTask r.Task
        let first = TaskLayout.offset layout r.Task
        let pixels = Synthetic.pixels r.BatchSize r.ImageSize
        let labels = Synthetic.labels r.BatchSize first (TaskLayout.count layout r.Task)
        let total = r.Warmup + r.Steps * r.Repeats
        let t = training r method
        // Training: the trainer itself, one epoch of `total` batches, stamped after every step.
        let stamps = ResizeArray<int64>()
        let cpuStamps = ResizeArray<float>()
        let mutable meanLoss = nan
        let boundary (i: int) = i >= r.Warmup - 1 && (i - (r.Warmup - 1)) % r.Steps = 0
        Trainer.trainTask model t device total (fun _ -> Seq.init total (batchOf r pixels labels)) 0 ignore
            (fun _ _ _ ->
                if boundary stamps.Count then Compute.synchronize device
                stamps.Add(Stopwatch.GetTimestamp())
                cpuStamps.Add(cpuSeconds ()))
            (fun _ loss _ -> meanLoss <- loss)
        let trainSeconds, trainCpu =
            if stamps.Count = total then
                repeatSeconds r.Warmup r.Steps r.Repeats (stamps.ToArray()), repeatDifferences r.Warmup r.Steps r.Repeats (cpuStamps.ToArray())
            else [], []
        // Inference: the evaluation loop, warm-up batches then each repeat's batches.
        let task =
            { Index = r.Task; Classes = [| first .. first + TaskLayout.count layout r.Task - 1 |]; Train = [||]; Test = [||]; Validation = [||] }
        let evaluate count =
            Evaluate.evaluateTask model device task (Seq.init count (batchOf r pixels labels)) |> ignore
        evaluate r.Warmup
        let inferSeconds, inferCpu =
            [ for _ in 1 .. r.Repeats ->
                  let cpu = cpuSeconds ()
                  let clock = Stopwatch.StartNew()
                  evaluate r.Steps
                  clock.Elapsed.TotalSeconds, cpuSeconds () - cpu ]
            |> List.unzip
        let profile =
            if r.Profile then phases model t device r (batchOf r pixels labels 0) (Method.readsQuery method) else []
        let cudaAfter = if device.``type`` = DeviceType.CUDA then CudaMemory.usedBytes () else None
        { Side = "prompting"
          Method = method.Name
          TrainSeconds = trainSeconds
          InferSeconds = inferSeconds
          TrainCpuSeconds = trainCpu
          InferCpuSeconds = inferCpu
          ImagesPerRepeat = r.Steps * r.BatchSize
          TrainableParameters = model.TrainableParameters() |> List.sumBy (fun (_, p) -> p.numel ())
          BaselineRssBytes = baseline
          PeakRssBytes = Memory.peakResidentBytes ()
          CudaUsedBytes = Option.map2 (fun after before -> after - before) cudaAfter cudaBefore
          CudaAllocatedPeakBytes = None
          Loss = meanLoss
          Phases = profile
          Library = library }
