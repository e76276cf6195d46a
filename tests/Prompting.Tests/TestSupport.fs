/// Shared helpers for the tests: fixture lookup, temporary directories, bit-exact comparison.
module Prompting.Tests.TestSupport

open System
open System.IO
open Expecto
open Prompting
open Prompting.Tensors

let fixture = Fixtures.fixture

/// A fresh directory under the system temp path, deleted when disposed.
type TempDir() =
    let path = Path.Combine(Path.GetTempPath(), "prompting-tests-" + Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.File(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() =
            try Directory.Delete(path, true) with _ -> ()

/// Bit patterns, so that NaN payloads and -0.0 count.
let bits (values: float32[]) = values |> Array.map BitConverter.SingleToInt32Bits

let expectBitExact (actual: HostTensor) (expected: HostTensor) (what: string) =
    Expect.sequenceEqual actual.Shape expected.Shape (what + ": shape")
    Expect.sequenceEqual (bits actual.Values) (bits expected.Values) (what + ": values (bit-exact)")

/// Runs f, which must raise PromptingError; returns the message.
let promptingError (what: string) (f: unit -> 'a) : string =
    let result =
        try
            f () |> ignore
            None
        with
        | PromptingError message -> Some message
        | e -> failtestf "%s: expected PromptingError, got %s: %s" what (e.GetType().Name) e.Message
    match result with
    | Some message -> message
    | None -> failtestf "%s: expected PromptingError, but it succeeded" what

/// Asserts the message is one line and contains each fragment.
let expectMessage (message: string) (fragments: string list) (what: string) =
    Expect.isFalse (message.Contains '\n' || message.Contains '\r') (sprintf "%s: message must be one line: %s" what message)
    for f in fragments do
        Expect.stringContains message f (sprintf "%s: message should mention '%s'" what f)

let le16 (v: uint16) = BitConverter.GetBytes v
let le64 (v: int64) = BitConverter.GetBytes v
