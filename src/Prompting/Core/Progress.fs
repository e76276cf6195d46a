namespace Prompting

open System
open System.Globalization
open System.IO

/// Receives the progress of long work (training, evaluation).
type IProgressReporter =
    /// Counts `n` more units done.
    abstract Advance: n: int -> unit
    /// Sets the current status shown with the progress, e.g. "task 2/10 · epoch 3/5 · loss 0.52".
    abstract Status: text: string -> unit
    /// Logs a notable event, such as the start or end of a task or an epoch: always shown at once.
    abstract Message: text: string -> unit

/// Plain, timestamped log lines for non-interactive output (files, CI): a start line, a progress
/// line at most once per `interval` (steps done of all, percentage, steps/s, elapsed, ETA, and the
/// status in the caller's terms: task, epoch, step, images/s), every Message, and a final line.
/// The units counted are steps. `clock` is injectable for tests.
type PlainProgress(out: TextWriter, clock: unit -> DateTime, interval: TimeSpan, title: string, total: int64) =
    let gate = obj ()
    let started = clock ()
    let mutable completed = 0L
    let mutable status = ""
    // The last progress line (or the start): messages do not delay the next one, so a run whose
    // epochs are shorter than the interval still shows where it stands.
    let mutable lastProgress = started

    static let duration (t: TimeSpan) =
        let t = TimeSpan.FromSeconds(Math.Round(max 0.0 t.TotalSeconds))
        if t.Days > 0 then sprintf "%dd %02d:%02d:%02d" t.Days t.Hours t.Minutes t.Seconds
        else sprintf "%02d:%02d:%02d" t.Hours t.Minutes t.Seconds

    let write (now: DateTime) (text: string) =
        out.WriteLine(sprintf "%s [%s] %s" (now.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)) title text)
        out.Flush()

    let progressText (now: DateTime) =
        let elapsed = now - started
        let rate = if elapsed.TotalSeconds > 0.0 then float completed / elapsed.TotalSeconds else 0.0
        let rateText = sprintf "%s steps/s" (rate.ToString("F1", CultureInfo.InvariantCulture))
        let counts =
            if total > 0L then
                let percent = 100.0 * float completed / float total
                let eta =
                    if completed >= total then "00:00:00"
                    elif rate > 0.0 then duration (TimeSpan.FromSeconds(float (total - completed) / rate))
                    else "?"
                sprintf "%d/%d steps (%s%%), %s, elapsed %s, ETA %s" completed total (percent.ToString("F1", CultureInfo.InvariantCulture)) rateText (duration elapsed) eta
            else
                sprintf "%d steps, %s, elapsed %s" completed rateText (duration elapsed)
        if status = "" then counts else counts + " | " + status

    do
        let size = if total > 0L then sprintf ", %d steps in all" total else ""
        write started ("started" + size)

    member _.Completed = lock gate (fun () -> completed)

    /// Writes the final line: the count and the time it took.
    member _.Finish() =
        lock gate (fun () ->
            let now = clock ()
            write now (sprintf "finished %d steps in %s" completed (duration (now - started))))

    /// Writes a failure line (the work raised).
    member _.Fail(message: string) =
        lock gate (fun () ->
            let now = clock ()
            let counted = if total > 0L then sprintf "%d of %d steps done" completed total else sprintf "%d steps done" completed
            write now (sprintf "stopped after %s, %s: %s" (duration (now - started)) counted (message.ReplaceLineEndings " ")))

    interface IProgressReporter with
        member _.Advance n =
            lock gate (fun () ->
                completed <- completed + int64 n
                let now = clock ()
                if now - lastProgress >= interval then
                    write now (progressText now)
                    lastProgress <- now)

        member _.Status text = lock gate (fun () -> status <- text)

        member _.Message text = lock gate (fun () -> write (clock ()) text)

/// Runs work that reports progress; front ends choose how it is shown (a live bar, log lines).
type IProgressHost =
    abstract Run<'a> : title: string * total: int64 * work: (IProgressReporter -> 'a) -> 'a

module PlainProgress =
    /// The least time between two plain progress lines.
    let defaultInterval = TimeSpan.FromSeconds 5.0

    /// Runs `work` with a plain reporter writing to `out`; writes a final line, or a failure line
    /// and re-raises when `work` raises.
    let runPlain (out: TextWriter) (clock: unit -> DateTime) (interval: TimeSpan) (title: string) (total: int64) (work: IProgressReporter -> 'a) : 'a =
        let reporter = PlainProgress(out, clock, interval, title, total)
        let result =
            try work reporter
            with e ->
                reporter.Fail e.Message
                reraise ()
        reporter.Finish()
        result

    /// Plain log lines on standard output: what non-interactive front ends (the C# facade, scripts) use.
    let host =
        { new IProgressHost with
            member _.Run(title, total, work) = runPlain Console.Out (fun () -> DateTime.Now) defaultInterval title total work }
