namespace Prompting

open System
open System.IO
open System.Threading
open TorchSharp

/// How many threads libtorch's kernels may use. Its kernels split work over all cores and wait
/// for every part; when other processes hold the cores, each of the thousands of small kernels
/// per step waits for a descheduled thread. Measured on a shared 2-core machine: an MAE step took
/// 5 times as long with 2 threads as with 1. So all cores only when they are idle.
module CpuThreads =
    /// Idle share of all CPUs from two /proc/stat samples `interval` apart; None off Linux.
    let idleShare (interval: TimeSpan) =
        let sample () =
            let fields = File.ReadLines("/proc/stat") |> Seq.head |> fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            let values = fields |> Array.skip 1 |> Array.map int64
            // idle + iowait, and the total of every state
            values[3] + (if values.Length > 4 then values[4] else 0L), Array.sum values
        try
            if not (File.Exists "/proc/stat") then None
            else
                let idle0, total0 = sample ()
                Thread.Sleep interval
                let idle1, total1 = sample ()
                if total1 <= total0 then None else Some(float (idle1 - idle0) / float (total1 - total0))
        with _ -> None

    /// All cores when at least three quarters of the CPU time was idle (or unknown), else one.
    let choose (cores: int) (idle: float option) =
        match idle with
        | Some share when share < 0.75 -> 1
        | _ -> max 1 cores

    /// Sets libtorch's threads: `requested`, or by `choose` from a half-second sample; logs why.
    let configure (requested: int option) (log: string -> unit) =
        let threads =
            match requested with
            | Some n when n < 1 -> Errors.fail "--threads %d: must be at least 1" n
            | Some n -> n
            | None ->
                let idle = idleShare (TimeSpan.FromMilliseconds 500.0)
                let n = choose Environment.ProcessorCount idle
                let share = idle |> Option.map (fun i -> sprintf "%.0f%% of the CPU idle" (100.0 * i)) |> Option.defaultValue "CPU load unknown"
                log (sprintf "threads: %d for libtorch (%s; --threads to choose)" n share)
                n
        torch.set_num_threads threads
        threads
