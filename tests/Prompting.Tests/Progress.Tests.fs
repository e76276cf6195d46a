/// Plain (non-interactive) progress lines: format, rate limit, ETA, failures.
module Prompting.Tests.Progress

open System
open System.IO
open Expecto
open Prompting

/// A clock that moves only when told.
type private FakeClock(start: DateTime) =
    let mutable now = start
    member _.Now() = now
    member _.Tick(seconds: float) = now <- now.AddSeconds seconds

let private lines (writer: StringWriter) =
    writer.ToString().Replace("\r\n", "\n").TrimEnd('\n').Split('\n') |> List.ofArray

let private start = DateTime(2026, 1, 2, 3, 4, 5)

[<Tests>]
let tests =
    testList
        "metrics.progress"
        [ testCase "plain mode: timestamped, rate-limited lines with ETA; messages always shown"
          <| fun () ->
              let clock = FakeClock start
              use out = new StringWriter()
              let result =
                  Progress.runPlain out clock.Now (TimeSpan.FromSeconds 5.0) "train" 100L (fun report ->
                      report.Message "task 1/2 started"
                      clock.Tick 1.0
                      report.Advance 10 // 1 s after the last line: quiet
                      report.Status "epoch 1/1"
                      clock.Tick 5.0
                      report.Advance 20 // 6 s: a progress line
                      clock.Tick 1.0
                      report.Advance 10 // quiet
                      report.Message "task 1/2 finished"
                      clock.Tick 3.0
                      report.Advance 60 // 4 s after the last progress line: quiet
                      42)
              Expect.equal result 42 "result passed through"
              Expect.equal
                  (lines out)
                  [ "2026-01-02 03:04:05 [train] started, 100 steps in all"
                    "2026-01-02 03:04:05 [train] task 1/2 started"
                    "2026-01-02 03:04:11 [train] 30/100 steps (30.0%), 5.0 steps/s, elapsed 00:00:06, ETA 00:00:14 | epoch 1/1"
                    "2026-01-02 03:04:12 [train] task 1/2 finished"
                    "2026-01-02 03:04:15 [train] finished 100 steps in 00:00:10" ]
                  "lines"

          testCase "plain mode: messages more often than the interval do not hold back progress lines"
          <| fun () ->
              let clock = FakeClock start
              use out = new StringWriter()
              Progress.runPlain out clock.Now (TimeSpan.FromSeconds 5.0) "train" 6L (fun report ->
                  for epoch in 1..6 do
                      clock.Tick 2.0
                      report.Message(sprintf "epoch %d/6 done" epoch)
                      report.Status(sprintf "task 1/1 · epoch %d/6" epoch)
                      report.Advance 1)
              let progressLines = lines out |> List.filter (fun l -> l.Contains "steps (")
              // At 6 s (6 ≥ 5 after the start) and at 12 s (6 after the previous one).
              Expect.equal
                  progressLines
                  [ "2026-01-02 03:04:11 [train] 3/6 steps (50.0%), 0.5 steps/s, elapsed 00:00:06, ETA 00:00:06 | task 1/1 · epoch 3/6"
                    "2026-01-02 03:04:17 [train] 6/6 steps (100.0%), 0.5 steps/s, elapsed 00:00:12, ETA 00:00:00 | task 1/1 · epoch 6/6" ]
                  "two progress lines among six messages"

          testCase "plain mode: unknown total shows count and rate only"
          <| fun () ->
              let clock = FakeClock start
              use out = new StringWriter()
              Progress.runPlain out clock.Now (TimeSpan.FromSeconds 2.0) "eval" 0L (fun report ->
                  clock.Tick 4.0
                  report.Advance 10)
              Expect.equal
                  (lines out)
                  [ "2026-01-02 03:04:05 [eval] started"
                    "2026-01-02 03:04:09 [eval] 10 steps, 2.5 steps/s, elapsed 00:00:04"
                    "2026-01-02 03:04:09 [eval] finished 10 steps in 00:00:04" ]
                  "lines"

          testCase "plain mode: a failure is logged and re-raised"
          <| fun () ->
              let clock = FakeClock start
              use out = new StringWriter()
              Expect.throwsT<InvalidOperationException>
                  (fun () ->
                      Progress.runPlain out clock.Now (TimeSpan.FromSeconds 5.0) "train" 10L (fun report ->
                          report.Advance 3
                          clock.Tick 2.0
                          raise (InvalidOperationException "out of\nmemory")))
                  "re-raised"
              Expect.equal (List.last (lines out)) "2026-01-02 03:04:07 [train] stopped after 00:00:02, 3 of 10 steps done: out of memory" "failure line" ]
