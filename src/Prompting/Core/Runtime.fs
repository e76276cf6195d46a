namespace Prompting

open System
open System.Runtime

/// Guards against a race in TorchSharp 0.107: Scalars and Tensors hold raw native handles with
/// finalizers and are not kept alive across the native calls that use them, so a garbage
/// collection triggered by another thread (the data loader's workers allocate constantly) can
/// finalize a temporary Scalar while libtorch is still reading it ("Expected false to be true"
/// from c10::Scalar, or silent corruption). Steps run inside a no-GC region sized for what the
/// other threads may allocate meanwhile, so no collection can happen mid-call.
module Runtime =
    let private overruns = ref 0L
    let private unguarded = ref 0L

    /// Guarded regions that ended early because the step (with the loader) allocated more than the
    /// budget, so a collection could run mid-call: reported in the log and in progress.json.
    let regionOverruns () = Threading.Interlocked.Read &overruns.contents

    /// Steps that ran without a guarded region because the runtime refused to start one.
    let unguardedSteps () = Threading.Interlocked.Read &unguarded.contents

    [<Sealed>]
    type private NoCollection(started: bool) =
        interface IDisposable with
            member _.Dispose() =
                if started then
                    if GCSettings.LatencyMode = GCLatencyMode.NoGCRegion then
                        try GC.EndNoGCRegion()
                        with :? InvalidOperationException -> Threading.Interlocked.Increment &overruns.contents |> ignore
                    else
                        // The runtime left the region on its own: the budget was exceeded.
                        Threading.Interlocked.Increment &overruns.contents |> ignore

    /// Suspends garbage collection until disposed, for up to `bytes` of allocation by all threads
    /// (clamped to 16 MB .. 1 GB). Where the runtime refuses, runs unguarded and counts it.
    let noCollection (bytes: int64) : IDisposable =
        let budget = max (16L <<< 20) (min (1L <<< 30) bytes)
        let started =
            GCSettings.LatencyMode <> GCLatencyMode.NoGCRegion
            && (try GC.TryStartNoGCRegion budget with :? ArgumentOutOfRangeException | :? InvalidOperationException -> false)
        if not started then Threading.Interlocked.Increment &unguarded.contents |> ignore
        new NoCollection(started) :> IDisposable

    let private training = ref 0

    /// The guarded regions are process-wide, so two trainings in one process (two facade calls on
    /// two threads) would end each other's. The second is refused while the first runs.
    let exclusiveTraining (what: string) : IDisposable =
        if Threading.Interlocked.CompareExchange(&training.contents, 1, 0) <> 0 then
            Errors.fail "%s: another training is running in this process; run them one after another, or in separate processes" what
        { new IDisposable with
            member _.Dispose() = Threading.Volatile.Write(&training.contents, 0) }

    let private largestDecoded = ref 0L

    /// Records the pixel count of an image the loader decoded, so that step budgets follow the
    /// largest decoded image seen (a 4000 × 3000 photo costs far more than its 224² crop).
    let noteDecodedImage (width: int) (height: int) =
        let pixels = int64 width * int64 height
        let mutable seen = Threading.Interlocked.Read &largestDecoded.contents
        while pixels > seen && Threading.Interlocked.CompareExchange(&largestDecoded.contents, pixels, seen) <> seen do
            seen <- Threading.Interlocked.Read &largestDecoded.contents

    /// The largest decoded image so far (pixels), 0 before any.
    let largestDecodedImage () = Threading.Interlocked.Read &largestDecoded.contents

    /// What the loader may allocate while one step runs: `batches` batches of `batchSize` images,
    /// each decoded at `decodedPixels` (bytes, twice for the resize), output as floats at size²,
    /// with slack.
    let budgetFor (batchSize: int) (size: int) (decodedPixels: int64) (batches: int) =
        let output = int64 size * int64 size
        let decoded = max output decodedPixels
        let perImage = decoded * 3L * 2L + output * 3L * 4L + (1L <<< 20)
        int64 batchSize * perImage * int64 (batches + 1) + (64L <<< 20)

    /// budgetFor at the largest image decoded so far.
    let stepBudget (batchSize: int) (size: int) (batches: int) = budgetFor batchSize size (largestDecodedImage ()) batches
