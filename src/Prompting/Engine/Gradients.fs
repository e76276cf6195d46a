namespace Prompting.Engine

open TorchSharp

/// Gradient clipping that stays on the device.
module Gradients =
    /// Scales the gradients so that their joint L2 norm is at most `maxNorm`, as PyTorch's
    /// clip_grad_norm_ does (coefficient maxNorm / (norm + 1e-6), clamped to 1) but without reading
    /// the norm back: TorchSharp's clip_grad_norm_ returns it as a double, a host read every step.
    let clipNorm (parameters: Modules.Parameter list) (maxNorm: float) =
        use _ = torch.no_grad ()
        let grads = [| for p in parameters do match p.grad with null -> () | g -> yield g |]
        if grads.Length > 0 then
            let norms = grads |> Array.map (fun g -> g.norm ())
            use stacked = torch.stack norms
            use total = stacked.norm ()
            use denominator = total + 1e-6
            use limit = torch.full_like (denominator, maxNorm.ToScalar())
            use coefficient = limit / denominator
            use clamped = coefficient.clamp_max (1.0.ToScalar())
            for g in grads do g.mul_ clamped |> ignore
            for n in norms do n.Dispose()
        for g in grads do g.Dispose()
