namespace Prompting

open System
open System.Globalization
open Spectre.Console

/// Live progress with ETA: a Spectre.Console progress bar on an interactive terminal, plain
/// timestamped, rate-limited log lines otherwise (see PlainProgress).
module Progress =
    let defaultInterval = PlainProgress.defaultInterval

    /// Whether standard output is an interactive terminal that can show a live progress bar.
    let isInteractive () =
        not Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive

    let runPlain out clock interval title total (work: IProgressReporter -> 'a) : 'a = PlainProgress.runPlain out clock interval title total work

    let private runLive (title: string) (total: int64) (work: IProgressReporter -> 'a) : 'a =
        let progress =
            AnsiConsole
                .Progress()
                .AutoClear(false)
                .HideCompleted(false)
                .Columns(
                    [| TaskDescriptionColumn() :> ProgressColumn
                       ProgressBarColumn()
                       PercentageColumn()
                       ElapsedTimeColumn()
                       RemainingTimeColumn()
                       SpinnerColumn() |]
                )
        progress.Start(
            Func<ProgressContext, 'a>(fun ctx ->
                let task = ctx.AddTask(Markup.Escape title, true, (if total > 0L then float total else 1.0))
                task.IsIndeterminate <- total <= 0L
                let reporter =
                    { new IProgressReporter with
                        member _.Advance n = task.Increment(float n)
                        member _.Status text = task.Description <- Markup.Escape(title + " · " + text)
                        member _.Message text =
                            AnsiConsole.MarkupLine(
                                sprintf "[grey]%s[/] %s" (DateTime.Now.ToString("HH:mm:ss", CultureInfo.InvariantCulture)) (Markup.Escape text)
                            ) }
                let result = work reporter
                task.StopTask()
                result)
        )

    /// Runs `work` (which reports `total` units; 0 when unknown) with live progress on a terminal
    /// and plain log lines on standard output otherwise.
    let run (title: string) (total: int64) (work: IProgressReporter -> 'a) : 'a =
        if isInteractive () then runLive title total work
        else runPlain Console.Out (fun () -> DateTime.Now) defaultInterval title total work

    /// The console host: a live bar on a terminal, plain lines otherwise.
    let host =
        { new IProgressHost with
            member _.Run(title, total, work) = run title total work }
