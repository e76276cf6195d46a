namespace Prompting.Prompts

open TorchSharp
open Prompting

/// CODA-Prompt: per layer, components P (M, S, D), keys K (M, D) and attention vectors A (M, D).
/// α_{b,k} = cos(q_b ⊙ A_k, K_k); prompt = Σ_k α_{b,k} P_k. Task t owns rows [t·M/T, (t+1)·M/T);
/// earlier rows are used but detached while training, later rows are unused (and zero).
type ComponentSource(shape: SourceShape) as this =
    inherit PromptSourceModule("ComponentSource")
    let config =
        match shape.Group.Source with
        | Components c -> c
        | other -> invalidArg "shape" (sprintf "ComponentSource cannot serve %A" other)
    let m, d, s = int64 config.Components, int64 shape.Width, int64 shape.StoredLength
    let perTask = config.Components / shape.Tasks
    let layers = [ for l in shape.Layers -> l, new ParameterSet(Sources.layerName l) ]
    do
        if perTask < 1 then
            Errors.fail "prompt group %s: %d components cannot be shared among %d tasks" shape.Group.Name config.Components shape.Tasks
        for l, set in layers do
            set.Add("prompt", torch.zeros (m, s, d))
            set.Add("keys", torch.zeros (m, d))
            set.Add("attention", torch.zeros (m, d))
            this.register_module (Sources.layerName l, set)

    /// Rows [task·perTask, (task+1)·perTask) by Gram–Schmidt from normal vectors against all
    /// earlier rows (the reference's classical projection), normalised; later rows zero.
    static member GramSchmidt(rows: torch.Tensor, first: int, last: int) =
        use _ = torch.no_grad ()
        use flat = rows.reshape(rows.shape[0], -1L).clone ()
        if int64 last > flat.shape[1] then
            Errors.fail "Gram-Schmidt: %d rows cannot be orthogonal in %d dimensions (use fewer components or a wider model)" last flat.shape[1]
        use basis = torch.zeros_like flat
        if first > 0 then
            use earlier = basis.narrow (0, 0L, int64 first)
            use source = flat.narrow (0, 0L, int64 first)
            earlier.copy_ source |> ignore
        // u_j · u_j of each finished row, computed once instead of for every later row (the same
        // arithmetic on the same values, so the result is unchanged, only faster).
        let squaredNorm (j: int) =
            use u = basis.select (0, int64 j)
            use uu = u * u
            use total = uu.sum ()
            total.item<float32> ()
        let denominators = ResizeArray<float32>([ for j in 0 .. first - 1 -> squaredNorm j ])
        for k in first .. last - 1 do
            let mutable finished = false
            let mutable attempts = 0
            while not finished do
                attempts <- attempts + 1
                if attempts > 100 then Errors.fail "Gram-Schmidt: row %d stays degenerate after 100 draws" k
                use template = flat.select (0, int64 k)
                use v = torch.randn_like template
                if not (denominators |> Seq.exists (fun d -> d < 1e-8f)) then
                    let mutable projection = torch.zeros_like v
                    for j in 0 .. k - 1 do
                        use u = basis.select (0, int64 j)
                        use vu = v * u
                        use dot = vu.sum ()
                        use coefficient = dot / denominators[j]
                        use term = coefficient * u
                        let next = projection + term
                        projection.Dispose()
                        projection <- next
                    use target = basis.select (0, int64 k)
                    use orthogonal = v - projection
                    target.copy_ orthogonal |> ignore
                    projection.Dispose()
                    denominators.Add(squaredNorm k)
                    finished <- true
        for k in first .. last - 1 do
            use target = basis.select (0, int64 k)
            use row = target.clone ()
            use norm = row.norm ()
            use unit = row / norm
            target.copy_ unit |> ignore
        basis.reshape rows.shape

    override _.NeedsQuery = true

    override _.BeginTask(task) =
        if task < shape.Tasks then
            use _ = torch.no_grad ()
            for _, set in layers do
                for name in [ "prompt"; "keys"; "attention" ] do
                    let p = set[name]
                    use fresh = ComponentSource.GramSchmidt(p, task * perTask, (task + 1) * perTask)
                    p.copy_ fresh |> ignore

    override _.Prepare(ctx) =
        let q = Sources.requireQuery shape.Group.Name ctx
        let start, stop = int64 (ctx.Task * perTask), int64 ((min ctx.Task (shape.Tasks - 1) + 1) * perTask)
        let visible (p: torch.Tensor) =
            if ctx.Training && start > 0L then
                use earlier = p.narrow(0, 0L, start).detach ()
                use current = p.narrow (0, start, stop - start)
                torch.cat ([| earlier; current |], 0L)
            elif ctx.Training then p.narrow (0, start, stop - start)
            else p.narrow (0, 0L, stop)
        let outputs =
            [ for l, set in layers ->
                  let k, a, p = visible set["keys"], visible set["attention"], visible set["prompt"]
                  use attended = q.unsqueeze 1 * a.unsqueeze 0
                  use qn = torch.nn.functional.normalize (attended, dim = 2L)
                  use kn = torch.nn.functional.normalize (k, dim = 1L)
                  use alpha = (qn * kn.unsqueeze 0).sum (dim = 2L)
                  use flat = p.reshape (p.shape[0], -1L)
                  use mixed = torch.mm (alpha, flat)
                  let prompt = mixed.reshape (ctx.Batch, 1L, s, d)
                  let penalty =
                      if ctx.Training && config.OrthogonalityWeight > 0.0 then
                          let ortho (x: torch.Tensor) =
                              use gram = torch.mm (x, x.t ())
                              use eye = torch.eye (x.shape[0], device = x.device)
                              (gram - eye).square().mean ()
                          Some((ortho k + ortho a + ortho flat) * config.OrthogonalityWeight)
                      else None
                  l, prompt, penalty ]
        { At = Sources.perLayer [ for l, p, _ in outputs -> l, p ]
          AuxLoss = Sources.sumLosses (outputs |> List.choose (fun (_, _, pen) -> pen))
          Chosen = None }
