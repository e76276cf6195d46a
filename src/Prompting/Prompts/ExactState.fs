namespace Prompting.Prompts

open TorchSharp
open Prompting.Tensors

/// Tensors as exact lifecycle state: float32 (or float64) values held as float64, and back.
module ExactState =
    let ofTensor (t: torch.Tensor) : ExactTensor =
        use host = t.cpu().to_type torch.float64
        { Shape = t.shape; Values = host.data<double>().ToArray() }

    /// A float32 tensor on `device`, outside every dispose scope (state kept across tasks).
    let toFloat32 (device: torch.Device) (t: ExactTensor) =
        torch.tensor(t.Values |> Array.map float32, System.ReadOnlySpan<int64> t.Shape).``to``(device).DetachFromDisposeScope()
