namespace Prompting.Sweep

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading

/// The local executor: `parallel` workers, each running points one after another as child
/// processes (DIR/point.sh), with the CPU threads split between them and, on a machine with
/// several GPUs, one GPU per worker.
module Local =
    type Options =
        { Parallel: int
          /// libtorch threads per point (OMP_NUM_THREADS / MKL_NUM_THREADS of the child).
          ThreadsPerPoint: int
          /// GPUs to spread the workers over (CUDA_VISIBLE_DEVICES); 0 or 1: leave it alone.
          Gpus: int }

    /// Threads per point: the machine's cores split evenly between the workers, at least one.
    let threadsPerPoint (cores: int) (workers: int) = max 1 (cores / max 1 workers)

    /// The environment of worker `slot`'s children.
    let environment (options: Options) (slot: int) =
        [ yield "OMP_NUM_THREADS", string options.ThreadsPerPoint
          yield "MKL_NUM_THREADS", string options.ThreadsPerPoint
          if options.Gpus > 1 then yield "CUDA_VISIBLE_DEVICES", string (slot % options.Gpus) ]

    /// Runs the named points to the end (each may finish or fail); `log` gets one line per start
    /// and per end.
    let run (dir: string) (names: string list) (options: Options) (log: string -> unit) =
        let queue = ConcurrentQueue<string>(names)
        let total = names.Length
        let mutable done' = 0
        let script = Layout.pointScript dir
        let worker (slot: int) () =
            let mutable name = null
            while queue.TryDequeue(&name) do
                log (sprintf "start %s" name)
                let psi = ProcessStartInfo("bash", [ script; name ], UseShellExecute = false)
                for k, v in environment options slot do psi.Environment[k] <- v
                use p = Process.Start psi
                p.WaitForExit()
                let n = Interlocked.Increment(&done')
                let outcome =
                    if State.finished dir name then "finished"
                    else sprintf "failed: %s" (State.lastLogLine dir name)
                log (sprintf "[%d/%d] %s %s" n total name outcome)
        let threads = [ for slot in 0 .. max 1 (min options.Parallel total) - 1 -> Thread(worker slot, IsBackground = true) ]
        for t in threads do t.Start()
        for t in threads do t.Join()
