namespace Prompting.Bench

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices
open TorchSharp
open Prompting

/// Small statistics over repeated timings.
module Stats =
    /// The median (mean of the two middle values for an even count); NaN for no values.
    let median (values: float seq) =
        let sorted = values |> Seq.filter (Double.IsNaN >> not) |> Seq.sort |> Array.ofSeq
        match sorted.Length with
        | 0 -> nan
        | n when n % 2 = 1 -> sorted[n / 2]
        | n -> (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0

    /// Images per second of repeats of `images` images each: from the median repeat time.
    let throughput (images: int) (seconds: float seq) =
        let m = median seconds
        if Double.IsNaN m || m <= 0.0 then nan else float images / m

    /// ours ÷ theirs, NaN when either is missing.
    let ratio (ours: float) (theirs: float) =
        if Double.IsNaN ours || Double.IsNaN theirs || theirs <= 0.0 then nan else ours / theirs

/// Process memory from /proc/self/status (Linux): what the kernel counts as resident.
module Memory =
    /// A "Key:   N kB" field of /proc/<pid>/status text, in bytes.
    let statusField (text: string) (key: string) =
        text.Split('\n')
        |> Array.tryPick (fun line ->
            if line.StartsWith(key + ":") then
                let parts = line.Substring(key.Length + 1).Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries)
                match parts with
                | [| n; "kB" |] -> Some(Int64.Parse n * 1024L)
                | [| n |] -> Some(Int64.Parse n)
                | _ -> None
            else None)

    let private read key =
        try statusField (File.ReadAllText "/proc/self/status") key |> Option.defaultValue 0L
        with :? IOException | :? UnauthorizedAccessException -> 0L

    /// Current resident set (VmRSS).
    let residentBytes () = read "VmRSS"
    /// Peak resident set since the process started (VmHWM).
    let peakResidentBytes () = read "VmHWM"

/// Device memory in use on the current CUDA device, through the driver's cuMemGetInfo (TorchSharp
/// exposes no allocator statistics): total − free, which counts the caching allocator's reserve.
module CudaMemory =
    [<DllImport("libcuda.so.1", EntryPoint = "cuMemGetInfo_v2")>]
    extern int private cuMemGetInfo(unativeint& free, unativeint& total)

    /// Bytes in use on the device, or None where the driver cannot be asked.
    let usedBytes () =
        try
            let mutable free = 0un
            let mutable total = 0un
            if cuMemGetInfo (&free, &total) = 0 then Some(int64 total - int64 free) else None
        with
        | :? DllNotFoundException
        | :? EntryPointNotFoundException -> None

/// Thread counts and the device's measured dense-matmul peak.
module Compute =
    /// Intra-op threads for libtorch (the interop pool is left as it is).
    let setThreads (threads: int) =
        if threads < 1 then Errors.fail "--threads %d: must be at least 1" threads
        torch.set_num_threads threads

    let synchronize (device: torch.Device) =
        if device.``type`` = DeviceType.CUDA then torch.cuda.synchronize device

    /// Best GFLOP/s of `repeats` float32 products of two size × size matrices (after one warm-up
    /// product): the dense-matmul peak the bench divides by.
    let matmulPeak (device: torch.Device) (size: int) (repeats: int) =
        use scope = torch.NewDisposeScope()
        let n = int64 size
        let a = torch.randn ([| n; n |], device = device)
        let b = torch.randn ([| n; n |], device = device)
        let product () =
            use c = torch.mm (a, b)
            synchronize device
        product ()
        let best =
            [ for _ in 1 .. max 1 repeats ->
                  let clock = Stopwatch.StartNew()
                  product ()
                  clock.Elapsed.TotalSeconds ]
            |> List.min
        2.0 * float n * float n * float n / best / 1e9

/// The synthetic batch both sides compute on: the same values without sharing a file.
/// Pixel i (flat, NCHW) is ((i · 2654435761) mod 2³²) / 2³² · 2 − 1, in [−1, 1) as images
/// normalised with mean = std = 0.5 are; label j is first + j mod count (the task's classes).
module Synthetic =
    let pixels (count: int) (size: int) =
        let n = int64 count * 3L * int64 size * int64 size
        Array.init (int n) (fun i -> float32 (float ((int64 i * 2654435761L) % 4294967296L) / 4294967296.0 * 2.0 - 1.0))

    let labels (count: int) (first: int) (classes: int) =
        Array.init count (fun j -> int64 (first + j % classes))
