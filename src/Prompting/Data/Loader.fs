namespace Prompting.Data

open System
open System.Threading
open System.Threading.Tasks
open System.Runtime.ExceptionServices
open Prompting

/// One batch: Count images stacked as (Count, 3, Size, Size) float32 in row-major order, their
/// labels, and the dataset indices they came from.
[<NoEquality; NoComparison>]
type Batch =
    { /// Position of the batch in its epoch.
      Index: int
      Count: int
      Size: int
      Pixels: float32[]
      Labels: int64[]
      Indices: int[] }

    member b.Shape = [| int64 b.Count; 3L; int64 b.Size; int64 b.Size |]

type LoaderOptions =
    { BatchSize: int
      /// Reshuffle every epoch with a permutation seeded by (Seed, epoch); otherwise dataset order.
      Shuffle: bool
      /// Seeds the shuffling and every sample's augmentation: sample i of epoch e draws from a
      /// generator seeded by (Seed, e, i) alone, so batches are identical whatever Workers is.
      Seed: int
      /// Threads decoding and transforming batches (default Environment.ProcessorCount).
      Workers: int
      /// How many batches may be ready or in progress ahead of the consumer (bounded queue).
      Prefetch: int
      /// Leave out a last batch smaller than BatchSize.
      DropLast: bool
      /// Page-locked host memory for faster copies to CUDA. Batches are managed arrays that the
      /// consumer copies into tensors itself, so on the CPU (and for now everywhere) this is a
      /// documented no-op, kept so configurations can state it.
      PinMemory: bool }

    static member Defaults =
        { BatchSize = 64
          Shuffle = false
          Seed = 0
          Workers = Environment.ProcessorCount
          Prefetch = 2 * Environment.ProcessorCount
          DropLast = false
          PinMemory = false }

/// Batches from samples and a transform, decoded and augmented in parallel on the CPU by a fixed
/// number of worker threads, prefetched a bounded number of batches ahead of the consumer.
module Loader =
    let private check (o: LoaderOptions) =
        if o.BatchSize <= 0 then Errors.fail "loader: batch size must be positive, got %d" o.BatchSize
        if o.Workers <= 0 then Errors.fail "loader: workers must be positive, got %d" o.Workers
        if o.Prefetch <= 0 then Errors.fail "loader: prefetch must be positive, got %d" o.Prefetch

    /// The order of dataset indices in an epoch.
    let order (o: LoaderOptions) (count: int) (epoch: int) =
        if o.Shuffle then Seed.permutation (Seed.random o.Seed [ 0; epoch ]) count else Array.init count id

    /// Number of batches an epoch of `count` samples yields.
    let batchCount (o: LoaderOptions) (count: int) =
        if o.DropLast then count / o.BatchSize else (count + o.BatchSize - 1) / o.BatchSize

    /// The generator of sample `index` in `epoch`: depends on nothing else.
    let sampleRandom (seed: int) (epoch: int) (index: int) = Seed.random seed [ 1; epoch; index ]

    /// Builds batch `b` of an epoch on the calling thread.
    let makeBatch (o: LoaderOptions) (transform: Transform) (samples: Sample[]) (epoch: int) (order: int[]) (b: int) =
        let start = b * o.BatchSize
        let n = min o.BatchSize (order.Length - start)
        let per = 3 * transform.Size * transform.Size
        let pixels = Array.zeroCreate<float32> (n * per)
        let labels = Array.zeroCreate<int64> n
        let indices = Array.sub order start n
        for k in 0 .. n - 1 do
            let i = indices[k]
            let s = samples[i]
            let image = s.Load()
            Runtime.noteDecodedImage image.Width image.Height
            let values =
                try transform.Apply (sampleRandom o.Seed epoch i) image
                with PromptingError m -> Errors.fail "%s: %s" s.Source m
            if values.Length <> per then
                Errors.fail "%s: transform gave %d values, expected 3x%dx%d" s.Source values.Length transform.Size transform.Size
            Array.blit values 0 pixels (k * per) per
            labels[k] <- int64 s.Label
        { Index = b; Count = n; Size = transform.Size; Pixels = pixels; Labels = labels; Indices = indices }

    /// One epoch's producers: workers claim batches in ascending order, at most Prefetch ahead of
    /// the consumer, and hand each over through its own completion slot.
    type private EpochRun(o: LoaderOptions, transform: Transform, samples: Sample[], epoch: int) =
        let order = order o samples.Length epoch
        let count = batchCount o samples.Length
        let slots = Array.init count (fun _ -> TaskCompletionSource<Batch>(TaskCreationOptions.RunContinuationsAsynchronously))
        let permits = new SemaphoreSlim(min o.Prefetch (max count 1))
        let cancel = new CancellationTokenSource()
        let mutable next = -1
        let work () =
            try
                let mutable running = true
                while running do
                    permits.Wait cancel.Token
                    let b = Interlocked.Increment &next
                    if b >= count then running <- false
                    else
                        try slots[b].TrySetResult(makeBatch o transform samples epoch order b) |> ignore
                        with e ->
                            slots[b].TrySetException e |> ignore
                            cancel.Cancel()
                            running <- false
            with :? OperationCanceledException -> ()
        let threads =
            Array.init (min o.Workers (max count 1)) (fun w ->
                let t = Thread(ThreadStart work, IsBackground = true, Name = sprintf "prompting-loader-%d" w)
                t.Start()
                t)

        member _.Count = count

        /// Waits for batch b and frees its prefetch permit; a worker's exception is rethrown as is.
        member _.Take(b: int) =
            let task = slots[b].Task
            try task.Wait()
            with :? AggregateException as e when not (isNull e.InnerException) ->
                ExceptionDispatchInfo.Capture(e.InnerException).Throw()
            permits.Release() |> ignore
            task.Result

        interface IDisposable with
            member _.Dispose() =
                cancel.Cancel()
                for t in threads do t.Join()
                permits.Dispose()
                cancel.Dispose()

    /// The batches of one epoch, in order. Enumeration starts the workers; finishing or disposing
    /// the enumerator (breaking out of a loop) stops them. A worker's PromptingError (a sample that
    /// does not decode, say) is raised on the consumer's thread when its batch is reached.
    let epoch (o: LoaderOptions) (transform: Transform) (samples: Sample[]) (epoch: int) : seq<Batch> =
        check o
        seq {
            use run = new EpochRun(o, transform, samples, epoch)
            for b in 0 .. run.Count - 1 do
                yield run.Take b
        }

    /// All batches of one epoch on the calling thread, without workers (for tests and debugging).
    let epochSequential (o: LoaderOptions) (transform: Transform) (samples: Sample[]) (epoch: int) : Batch[] =
        check o
        let order = order o samples.Length epoch
        Array.init (batchCount o samples.Length) (makeBatch o transform samples epoch order)
