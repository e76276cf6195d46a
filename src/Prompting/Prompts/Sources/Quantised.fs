namespace Prompting.Prompts

open TorchSharp
open Prompting

/// VQ-Prompt: per layer a pool P (M, S, D) and keys K (M, D), shared by all tasks.
/// α = softmax(q · normalise(K)ᵀ / T) (q not normalised); p′ = Σ α_k P_k; p = P_{k*} with
/// k* = argmin ‖p′ − P_j‖² over the whole prompt; forward value exactly p, gradient through p′
/// (straight-through); loss w₁·mse(p′, sg p) + w₂·mse(p, sg p′) per layer.
type QuantisedSource(shape: SourceShape) as this =
    inherit PromptSourceModule("QuantisedSource")
    let config =
        match shape.Group.Source with
        | Quantised c -> c
        | other -> invalidArg "shape" (sprintf "QuantisedSource cannot serve %A" other)
    let m, d, s = int64 config.PoolSize, int64 shape.Width, int64 shape.StoredLength
    let layers = [ for l in shape.Layers -> l, new ParameterSet(Sources.layerName l) ]
    do
        if config.PoolSize <= 0 then Errors.fail "prompt group %s: pool size must be positive" shape.Group.Name
        if config.Temperature <= 0.0 then Errors.fail "prompt group %s: temperature must be positive" shape.Group.Name
        for l, set in layers do
            set.Add("prompt", Sources.initial shape [| m; s; d |])
            set.Add("keys", Sources.initial shape [| m; d |])
            this.register_module (Sources.layerName l, set)

    override _.NeedsQuery = true

    override _.Prepare(ctx) =
        let q = Sources.requireQuery shape.Group.Name ctx
        let outputs =
            [ for l, set in layers ->
                  let pool, keys = set["prompt"], set["keys"]
                  use kn = torch.nn.functional.normalize (keys, dim = 1L)
                  use knt = kn.t ()
                  use similarity = torch.mm (q, knt)
                  use scaled = similarity / config.Temperature
                  use alpha = torch.softmax (scaled, 1)
                  use flat = pool.reshape (m, -1L)
                  use mixedFlat = torch.mm (alpha, flat)
                  let continuous = mixedFlat.reshape (ctx.Batch, s, d)
                  use diff = continuous.unsqueeze 1 - pool.unsqueeze 0
                  use distance = diff.square().sum (dim = [| 2L; 3L |])
                  let chosen = distance.argmin (dim = 1L)
                  let discrete = pool.index_select (0L, chosen)
                  let loss =
                      if ctx.Training then
                          use continuousTerm = torch.nn.functional.mse_loss (continuous, discrete.detach ())
                          use discreteTerm = torch.nn.functional.mse_loss (discrete, continuous.detach ())
                          Some(continuousTerm * config.ContinuousWeight + discreteTerm * config.DiscreteWeight)
                      else None
                  // Straight-through p′ + sg(p − p′), written as sg(p) + (p′ − sg p′): the same
                  // gradient (identity to p′, none to p), but the value is exactly p, since
                  // p′ − sg p′ is exactly zero whereas p′ + (p − p′) rounds in float32.
                  use continuousValue = continuous.detach ()
                  use zero = continuous - continuousValue
                  use discreteValue = discrete.detach ()
                  let straightThrough = discreteValue + zero
                  l, straightThrough.unsqueeze 1, loss, chosen.unsqueeze 1 ]
        { At = Sources.perLayer [ for l, p, _, _ in outputs -> l, p ]
          AuxLoss = Sources.sumLosses (outputs |> List.choose (fun (_, _, loss, _) -> loss))
          Chosen = outputs |> List.tryHead |> Option.map (fun (_, _, _, c) -> c) }
