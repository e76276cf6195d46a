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
    [<Sealed>]
    type private NoCollection(started: bool) =
        interface IDisposable with
            member _.Dispose() =
                if started && GCSettings.LatencyMode = GCLatencyMode.NoGCRegion then
                    try GC.EndNoGCRegion() with :? InvalidOperationException -> ()

    /// Suspends garbage collection until disposed, for up to `bytes` of allocation by all threads
    /// (clamped to 16 MB .. 1 GB). Falls back to doing nothing where the runtime refuses.
    let noCollection (bytes: int64) : IDisposable =
        let budget = max (16L <<< 20) (min (1L <<< 30) bytes)
        let started =
            GCSettings.LatencyMode <> GCLatencyMode.NoGCRegion
            && (try GC.TryStartNoGCRegion budget with :? ArgumentOutOfRangeException | :? InvalidOperationException -> false)
        new NoCollection(started) :> IDisposable

    /// What the loader may allocate while one step runs: `batches` batches of `batchSize` images
    /// of size² pixels (decoded bytes, resized bytes and float output), with slack.
    let stepBudget (batchSize: int) (size: int) (batches: int) =
        let perImage = int64 size * int64 size * 3L * (4L + 2L) + (1L <<< 20)
        int64 batchSize * perImage * int64 (batches + 1) + (64L <<< 20)
