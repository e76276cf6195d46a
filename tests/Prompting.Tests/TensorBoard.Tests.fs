/// TensorBoard event files, parsed back with a reader written here from the formats themselves:
/// TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C of the data) and
/// the Event / Summary / Summary.Value protocol buffers TensorBoard reads.
module Prompting.Tests.TensorBoardFiles

open System
open System.IO
open System.Text
open Expecto
open Prompting
open Prompting.Engine
open Prompting.Tests.TestSupport

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).
let private crc32c (bytes: byte[]) =
    let table =
        Array.init 256 (fun n ->
            let mutable c = uint32 n
            for _ in 0 .. 7 do c <- if c &&& 1u <> 0u then 0x82F63B78u ^^^ (c >>> 1) else c >>> 1
            c)
    let mutable crc = 0xFFFFFFFFu
    for b in bytes do crc <- table[int ((crc ^^^ uint32 b) &&& 0xFFu)] ^^^ (crc >>> 8)
    ~~~crc

/// TFRecord's masked CRC.
let private masked (bytes: byte[]) =
    let c = crc32c bytes
    ((c >>> 15) ||| (c <<< 17)) + 0xa282ead8u

/// The records of a TFRecord file; fails on a bad length or data checksum.
let readRecords (path: string) =
    let bytes = File.ReadAllBytes path
    let mutable at = 0
    [ while at < bytes.Length do
          let lengthBytes = bytes[at .. at + 7]
          let length = int (BitConverter.ToUInt64(lengthBytes, 0))
          if BitConverter.ToUInt32(bytes, at + 8) <> masked lengthBytes then failwithf "%s: bad length CRC at %d" path at
          let data = bytes[at + 12 .. at + 12 + length - 1]
          if BitConverter.ToUInt32(bytes, at + 12 + length) <> masked data then failwithf "%s: bad data CRC at %d" path at
          yield data
          at <- at + 12 + length + 4 ]

type private Field =
    | Varint of uint64
    | Fixed64 of byte[]
    | Bytes of byte[]
    | Fixed32 of byte[]

/// The (field number, value) pairs of one protocol-buffer message.
let private fields (message: byte[]) =
    let mutable at = 0
    let varint () =
        let mutable result = 0UL
        let mutable shift = 0
        let mutable go = true
        while go do
            let b = message[at]
            at <- at + 1
            result <- result ||| (uint64 (b &&& 0x7Fuy) <<< shift)
            shift <- shift + 7
            go <- b &&& 0x80uy <> 0uy
        result
    [ while at < message.Length do
          let key = varint ()
          let number = int (key >>> 3)
          match int (key &&& 7UL) with
          | 0 -> yield number, Varint(varint ())
          | 1 ->
              yield number, Fixed64 message[at .. at + 7]
              at <- at + 8
          | 2 ->
              let n = int (varint ())
              yield number, Bytes message[at .. at + n - 1]
              at <- at + n
          | 5 ->
              yield number, Fixed32 message[at .. at + 3]
              at <- at + 4
          | wire -> failwithf "wire type %d" wire ]

/// An event: its file_version (the header event) or its scalar values (tag, step, value).
type Event =
    { FileVersion: string option
      WallTime: float
      Scalars: (string * int64 * float32) list }

/// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5 };
/// Summary { repeated Value value = 1 }; Value { string tag = 1; float simple_value = 2 }.
let parseEvent (record: byte[]) =
    let fs = fields record
    let step = fs |> List.tryPick (function 2, Varint v -> Some(int64 v) | _ -> None) |> Option.defaultValue 0L
    let wall = fs |> List.tryPick (function 1, Fixed64 b -> Some(BitConverter.ToDouble(b, 0)) | _ -> None) |> Option.defaultValue 0.0
    let version = fs |> List.tryPick (function 3, Bytes b -> Some(Encoding.UTF8.GetString b) | _ -> None)
    let scalars =
        [ for n, f in fs do
              match n, f with
              | 5, Bytes summary ->
                  for vn, v in fields summary do
                      match vn, v with
                      | 1, Bytes value ->
                          let vf = fields value
                          let tag = vf |> List.pick (function 1, Bytes b -> Some(Encoding.UTF8.GetString b) | _ -> None)
                          match vf |> List.tryPick (function 2, Fixed32 b -> Some(BitConverter.ToSingle(b, 0)) | _ -> None) with
                          | Some x -> yield tag, step, x
                          | None -> ()
                      | _ -> ()
              | _ -> () ]
    { FileVersion = version; WallTime = wall; Scalars = scalars }

/// Every event of every event file in a directory, files in name order (as TensorBoard reads them).
let readDirectory (dir: string) =
    Directory.GetFiles(dir, "events.out.tfevents.*")
    |> Array.sort
    |> Array.toList
    |> List.map (fun f -> f, readRecords f |> List.map parseEvent)

let private evaluation ci til = { ClassIncremental = ci; TaskIncremental = til; PromptChoice = None }

let private progress (tasks: int) =
    { CompletedTasks = tasks
      EpochsDone = 0
      Evaluations = [ [ evaluation 90.0 95.0 ]; [ evaluation 70.0 92.0; evaluation 80.0 85.0 ] ] |> List.truncate tasks
      EpochLosses = [ [ 1.5; 1.25 ]; [ 0.75; 0.5 ] ] |> List.truncate tasks
      TrainSeconds = 1.0
      PeakMemoryBytes = 1L
      TrainableParameters = 1L
      EpochState = None
      EpochOptimizers = []
      GcRegionOverruns = None
      GcUnguardedSteps = None
      ValidationEvaluations = None
      TaskClasses = None
      Warnings = None }

[<Tests>]
let tests =
    testSequenced
    <| testList
        "tensorboard"
        [ test "event files parse back: framing checksums, the header event, every scalar once, resumed runs continue" {
              use dir = new TempDir()
              let training = { Prompting.Prompts.Methods.codaPrompt.Recipe with Epochs = 2 }
              TensorBoard.write dir.Path training (progress 1)
              TensorBoard.write dir.Path training (progress 1)
              TensorBoard.write dir.Path training (progress 2)
              let files = readDirectory (TensorBoard.directory dir.Path)
              Expect.equal files.Length 2 "one file per write with something new"
              for f, events in files do
                  Expect.equal events.Head.FileVersion (Some "brain.Event:2") (f + ": the header event")
                  Expect.isGreaterThan events.Head.WallTime 1e9 "wall time in seconds since 1970"
              let scalars = files |> List.collect (fun (_, events) -> events |> List.collect _.Scalars)
              let at tag = scalars |> List.filter (fun (t, _, _) -> t = tag) |> List.map (fun (_, s, v) -> s, v)
              Expect.equal (at "loss/train") [ 1L, 1.5f; 2L, 1.25f; 3L, 0.75f; 4L, 0.5f ] "one loss per epoch over both tasks"
              let rates = TensorBoard.epochRates training
              Expect.equal (at "lr") [ 1L, float32 rates[0]; 2L, float32 rates[1]; 3L, float32 rates[0]; 4L, float32 rates[1] ] "the schedule per epoch"
              Expect.isLessThan rates[1] rates[0] "cosine decays"
              Expect.equal (at "accuracy/class_il_average") [ 1L, 90.0f; 2L, 75.0f ] "A_i after each task"
              Expect.equal (at "accuracy/task_il_average") [ 1L, 95.0f; 2L, 88.5f ] "task-IL A_i"
              Expect.equal (at "accuracy/class_il_task_1") [ 1L, 90.0f; 2L, 70.0f ] "task 1 over time"
              Expect.equal (at "accuracy/class_il_task_2") [ 2L, 80.0f ] "task 2 once learned"
          }

          test "a `prompting run` writes event files with its losses and accuracies" {
              let run = SweepCli.singleRuns.Force()["linear-s0"]
              let scalars = readDirectory (TensorBoard.directory run) |> List.collect (fun (_, es) -> es |> List.collect _.Scalars)
              let losses = scalars |> List.filter (fun (t, _, _) -> t = "loss/train")
              use doc = Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "progress.json")))
              let expected =
                  [ for task in doc.RootElement.GetProperty("EpochLosses").EnumerateArray() do
                        for l in task.EnumerateArray() -> float32 (l.GetDouble()) ]
              Expect.equal (losses |> List.map (fun (_, _, v) -> v)) expected "the run's epoch losses"
              let final = (Metrics.readJson (Path.Combine(run, "metrics.json"))).ClassIncremental.FinalAverageAccuracy
              let averages = scalars |> List.filter (fun (t, _, _) -> t = "accuracy/class_il_average")
              Expect.equal (averages |> List.map (fun (_, s, _) -> s)) [ 1L; 2L ] "after each of the two tasks"
              let _, _, last = List.last averages
              Expect.equal last (float32 final) "A_N"
          } ]
