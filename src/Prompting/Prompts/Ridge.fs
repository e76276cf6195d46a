namespace Prompting.Prompts

open TorchSharp
open Prompting
open Prompting.Tensors

/// RanPAC's closed-form head, as its official code computes it (float32 on the device of the head).
module Ridge =
    /// The readout W = solve(G + λI, Q)ᵀ (C × M) of Gram matrix G (M × M) and targets Q (M × C).
    let solve (g: torch.Tensor) (q: torch.Tensor) (lambda: float) =
        // One M × M copy, its diagonal raised in place (the official G + λI adds the same float32
        // λ there and an exact 0 elsewhere); every temporary freed here, not at the caller's scope
        // end, since the λ search solves 17 times (at M = 10,000 each temporary is 400 MB).
        use scope = torch.NewDisposeScope()
        let regularised = g.clone ()
        regularised.diagonal().add_ (lambda.ToScalar()) |> ignore
        let w =
            try torch.linalg.solve (regularised, q)
            with e when e.Message.Contains "singular" ->
                Errors.fail "ridge head: G + λI is singular at λ = %g (%d x %d); the readout cannot be solved, choose regularisers of at least 1e-8 (RanPAC's 10^-8 .. 10^8)" lambda g.shape[0] g.shape[0]
        w.t().contiguous().MoveToOuterDisposeScope()

    /// RanPAC's choice of the regulariser: for each λ = 10^k, fit on the first ⌊fraction · n⌋ rows of
    /// the current task's projected features H (n × M) and one-hot targets Y (n × C), score by the
    /// mean squared error over every entry of the remaining rows; the λ of the least error, and the
    /// errors. (The official code never uses the accumulated G here.)
    let selectRegulariser (exponents: int list) (fraction: float) (h: torch.Tensor) (y: torch.Tensor) =
        use _ = torch.no_grad ()
        let n = h.shape[0]
        let fit = int64 (float n * fraction)
        if fit < 1L || fit >= n then Errors.fail "ridge head: %d features cannot be split %g / %g to choose the regulariser" n fraction (1.0 - fraction)
        use hFit = h.narrow (0, 0L, fit)
        use yFit = y.narrow (0, 0L, fit)
        use hHeld = h.narrow (0, fit, n - fit)
        use yHeld = y.narrow (0, fit, n - fit)
        use hFitT = hFit.t ()
        use g = torch.mm (hFitT, hFit)
        use q = torch.mm (hFitT, yFit)
        let errors =
            [ for k in exponents ->
                  let lambda = 10.0 ** float k
                  use w = solve g q lambda
                  use wt = w.t ()
                  use predicted = torch.mm (hHeld, wt)
                  use mse = torch.nn.functional.mse_loss (predicted, yHeld)
                  lambda, float (mse.item<float32> ()) ]
        fst (errors |> List.minBy snd), errors

/// The ridge head's state: the fixed random projection and the readout as buffers (saved with the
/// trainable state), the Gram and target matrices over every image seen as lifecycle state.
type RidgeReadout(settings: RidgeRegression, width: int, classes: int) as this =
    inherit torch.nn.Module("RidgeReadout")
    let m = int64 settings.ProjectionSize
    do
        if settings.ProjectionSize < 1 then Errors.fail "ridge head: projection size %d must be positive" settings.ProjectionSize
        // G is M × M float32: refuse before allocating what cannot fit.
        let gramBytes = m * m * 4L
        let available = System.GC.GetGCMemoryInfo().TotalAvailableMemoryBytes
        if gramBytes > available / 2L then
            Errors.fail "ridge head: a projection of %d needs a %d x %d Gram matrix (%d MiB), more than half this machine's %d MiB"
                settings.ProjectionSize m m (gramBytes >>> 20) (available >>> 20)
        // RanPAC: W_rand ~ N(0, 1), D × M, drawn once from the (seeded) global generator.
        this.register_buffer ("projection", torch.randn (int64 width, m))
        this.register_buffer ("readout", torch.zeros (int64 classes, m))
    let mutable gram: torch.Tensor = null
    let mutable targets: torch.Tensor = null
    let pendingFeatures = ResizeArray<torch.Tensor>()
    let pendingLabels = ResizeArray<torch.Tensor>()
    let mutable chosen = nan

    member _.Settings = settings
    /// The regulariser chosen at the last task's end (NaN before any).
    member _.Regulariser = chosen

    /// h(x) = ReLU(f(x) W_rand) (B × M).
    member this.Project(features: torch.Tensor) =
        use p = torch.mm (features, this.get_buffer "projection")
        torch.nn.functional.relu p

    /// logits = h(x) W_outᵀ (B × C).
    member this.Logits(features: torch.Tensor) =
        use h = this.Project features
        use wt = (this.get_buffer "readout").t ()
        torch.mm (h, wt)

    /// Keeps a batch of the current task's features and labels for the end of the task.
    /// They outlive the caller's dispose scope (the engine's per-batch scope), so they leave it.
    member _.Observe(features: torch.Tensor, labels: torch.Tensor) =
        pendingFeatures.Add(features.detach().clone().DetachFromDisposeScope())
        pendingLabels.Add(labels.``to``(torch.int64).cpu().clone().DetachFromDisposeScope())

    /// Adds the task's features to G and Q, chooses λ on them (in a seeded shuffled order, as the
    /// official loader's), and solves for the readout over everything seen.
    member this.Fit() = this.FitFeatures true

    /// Fit with the features in the order they were observed (a side-by-side test feeding the
    /// official loader's order).
    member this.FitInObservedOrder() = this.FitFeatures false

    member private this.FitFeatures(shuffle: bool) =
        use _ = torch.no_grad ()
        if pendingFeatures.Count > 0 then
            use scope = torch.NewDisposeScope()
            let features = torch.cat (pendingFeatures.ToArray(), 0L)
            let labels = torch.cat (pendingLabels.ToArray(), 0L)
            for t in pendingFeatures do t.Dispose()
            for t in pendingLabels do t.Dispose()
            pendingFeatures.Clear()
            pendingLabels.Clear()
            let readout = this.get_buffer "readout"
            let device = readout.device
            let h = this.Project(features.``to`` device)
            let y = torch.nn.functional.one_hot(labels, readout.shape[0]).to_type(torch.float32).``to`` device
            let ht = h.t ()
            if isNull gram then
                gram <- (torch.zeros (m, m, device = device)).MoveToOuterDisposeScope()
                targets <- (torch.zeros (m, readout.shape[0], device = device)).MoveToOuterDisposeScope()
            gram.add_ (torch.mm (ht, h)) |> ignore
            targets.add_ (torch.mm (ht, y)) |> ignore
            let order = if shuffle then torch.randperm (h.shape[0], device = device) else torch.arange (h.shape[0], device = device)
            let lambda, _ = Ridge.selectRegulariser settings.RidgeExponents settings.FitFraction (h.index_select (0L, order)) (y.index_select (0L, order))
            chosen <- lambda
            readout.copy_ (Ridge.solve gram targets lambda) |> ignore

    /// G and Q (exact: float32 values in float64).
    member _.State() : (string * ExactTensor) list =
        if isNull gram then [] else [ "gram", ExactState.ofTensor gram; "targets", ExactState.ofTensor targets ]

    member this.Restore(state: (string * ExactTensor) list) =
        let table = Map.ofList state
        let device = (this.get_buffer "readout").device
        let load = ExactState.toFloat32 device
        match table.TryFind "gram", table.TryFind "targets" with
        | Some g, Some q when g.Shape = [| m; m |] && q.Shape.Length = 2 && q.Shape[0] = m ->
            gram <- load g
            targets <- load q
        | None, None -> ()
        | _ -> Errors.fail "ridge head: saved state needs a %d x %d Gram matrix and %d-row targets" m m m
