namespace Prompting.Engine

open System
open System.IO
open Prompting

/// One process at a time per run directory: an exclusive advisory lock (flock) on DIR/run.lock,
/// released by the kernel when its process ends however it ends, so a stale lock never blocks a
/// resume; DIR/run.pid names the holder for the refusal message.
[<Sealed>]
type RunLock private (stream: FileStream, pidFile: string) =
    static member LockFile(dir: string) = Path.Combine(dir, "run.lock")
    static member PidFile(dir: string) = Path.Combine(dir, "run.pid")

    /// Takes the lock of `dir` (created if needed) or fails with one line naming the holder.
    static member Acquire(dir: string) =
        Directory.CreateDirectory dir |> ignore
        let lockFile = RunLock.LockFile dir
        let stream =
            try new FileStream(lockFile, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            with :? IOException ->
                let holder =
                    try
                        match Int32.TryParse(File.ReadAllText(RunLock.PidFile dir).Trim()) with
                        | true, pid -> sprintf "process %d" pid
                        | _ -> "another process"
                    with _ -> "another process"
                Errors.fail "%s: the run directory is in use by %s (another prompting run); wait for it or use another --out" dir holder
        let pidFile = RunLock.PidFile dir
        try File.WriteAllText(pidFile, string Environment.ProcessId)
        with :? IOException | :? UnauthorizedAccessException -> ()
        new RunLock(stream, pidFile)

    interface IDisposable with
        member _.Dispose() =
            try File.Delete pidFile with _ -> ()
            stream.Dispose()
