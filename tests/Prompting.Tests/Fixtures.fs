/// Paths and comparisons shared by the tests.
module Prompting.Tests.Fixtures

open System
open System.IO
open TorchSharp
open Prompting.Tensors

/// The repository root: the first ancestor of the test binary that holds Prompting.sln.
let root =
    let rec up (dir: DirectoryInfo) =
        if isNull dir then failwith "Prompting.sln not found above the test binary"
        elif File.Exists(Path.Combine(dir.FullName, "Prompting.sln")) then dir.FullName
        else up dir.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

let fixture name = Path.Combine(root, "tests", "fixtures", name)

/// ../shared beside the repository, when present.
let shared = Path.GetFullPath(Path.Combine(root, "..", "shared"))
let sharedFile (relative: string) =
    let path = Path.Combine(shared, relative)
    if File.Exists path then Some path else None

/// A fresh temporary directory for one test.
let tempDir () =
    let dir = Path.Combine(Path.GetTempPath(), "prompting-tests", Guid.NewGuid().ToString "N")
    Directory.CreateDirectory dir |> ignore
    dir

/// Runs `dotnet ARGS` (a script through `fsi`, a built tool): exit code, standard output and error.
let runDotnet (args: string list) =
    let psi = Diagnostics.ProcessStartInfo("dotnet", args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    use p = Diagnostics.Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out, err.Result

/// Max |a - b| divided by the output scale max(1, max |b|).
let relativeError (actual: float32[]) (expected: float32[]) =
    if actual.Length <> expected.Length then infinity
    else
        let scale = expected |> Array.fold (fun m v -> max m (abs (float v))) 1.0
        let diff = Array.fold2 (fun m (a: float32) (b: float32) -> max m (abs (float a - float b))) 0.0 actual expected
        diff / scale

let host (t: torch.Tensor) = HostTensor.ofTensor t

let tensorOf (path: string) = HostTensor.toTensor (Npy.read path)

/// A CPU float32 tensor from values and a shape.
let tensorOf2 (values: float32[]) (shape: int64[]) = torch.tensor (values, System.ReadOnlySpan<int64> shape)

/// Same shape and identical values.
let sameValues (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && (a.eq b).all().item<bool> ()
