namespace Prompting.Tensors

open System
open TorchSharp
open Prompting

/// A float32 array with a shape, held in managed memory: what the file readers produce before
/// anything touches libtorch, so a bad file never leaves a half-built model behind.
[<NoEquality; NoComparison>]
type HostTensor =
    { Shape: int64[]
      Values: float32[] }

module HostTensor =
    let elementCount (shape: int64[]) = Array.fold (*) 1L shape

    /// Element count of a shape read from a file: `name` is what the error message names
    /// (file and tensor). Negative dimensions and counts that overflow are PromptingErrors.
    let checkedElementCount (name: string) (shape: int64[]) =
        if shape |> Array.exists (fun d -> d < 0L) then
            Errors.fail "%s: invalid shape [%s] (negative dimension)" name (String.Join(", ", shape))
        try Array.fold (fun acc d -> Checked.(*) acc d) 1L shape
        with :? OverflowException -> Errors.fail "%s: invalid shape [%s] (too many elements)" name (String.Join(", ", shape))

    let create (shape: int64[]) (values: float32[]) =
        if elementCount shape <> int64 values.Length then
            invalidArg "values" (sprintf "shape %A needs %d values, got %d" shape (elementCount shape) values.Length)
        { Shape = shape; Values = values }

    let shapeText (shape: int64[]) =
        "[" + String.Join(", ", shape) + "]"

    /// Copies into a new CPU float32 tensor.
    let toTensor (t: HostTensor) : torch.Tensor =
        torch.tensor (t.Values, ReadOnlySpan<int64> t.Shape)

    /// Copies a tensor (any device, any float dtype) back to managed memory.
    let ofTensor (t: torch.Tensor) : HostTensor =
        // Each intermediate is bound, so none is finalized while libtorch still reads it.
        use detached = t.detach ()
        use onCpu = detached.cpu ()
        use single = onCpu.to_type torch.float32
        use cpu = single.contiguous ()
        { Shape = cpu.shape; Values = cpu.data<float32>().ToArray() }

    /// Reads IEEE half floats into float32.
    let halfToSingle (bits: uint16) = float32 (BitConverter.UInt16BitsToHalf bits)

    /// bfloat16 is the upper half of a float32.
    let bfloat16ToSingle (bits: uint16) = BitConverter.Int32BitsToSingle(int bits <<< 16)
