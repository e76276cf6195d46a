namespace Prompting.Engine

open System
open TorchSharp
open Prompting.Data

/// Host batches to device tensors.
module Batches =
    /// The batch's pixels on `device`: through pinned memory and a non-blocking copy on CUDA.
    let pixels (device: torch.Device) (batch: Batch) =
        let host = torch.tensor (batch.Pixels, ReadOnlySpan<int64> batch.Shape)
        if device.``type`` = DeviceType.CUDA then
            use pinned = host.pin_memory ()
            host.Dispose()
            pinned.``to`` (device, non_blocking = true)
        else host
