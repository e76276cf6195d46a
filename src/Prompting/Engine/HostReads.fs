namespace Prompting.Engine

open System
open TorchSharp

/// Every read of a device value back to the host in the training loop goes through here (one per
/// logging interval), so that tests can count them: a step itself never synchronises.
module HostReads =
    let private reads = ref 0L

    /// Host reads so far, over all threads.
    let count () = Threading.Interlocked.Read &reads.contents

    /// The value of a one-element tensor on the host (waits for the device on accelerators).
    let scalar (t: torch.Tensor) =
        Threading.Interlocked.Increment &reads.contents |> ignore
        use host = t.cpu ()
        float (host.item<float32> ())

    /// The values of a small tensor on the host, as float64 (one read, whatever its length).
    let values (t: torch.Tensor) =
        Threading.Interlocked.Increment &reads.contents |> ignore
        use host = t.detach().cpu().to_type torch.float64
        host.data<double>().ToArray()
