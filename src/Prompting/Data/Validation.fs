namespace Prompting.Data

open System
open Prompting

/// A validation split held out of the training data, so that choosing hyperparameters never
/// looks at the test set (the VPT protocol: choose on a held-out part, then train on everything).
[<RequireQualifiedAccess>]
module Validation =
    /// Checks a held-out fraction: strictly between 0 and 1.
    let check (fraction: float) =
        if Double.IsNaN fraction || fraction <= 0.0 || fraction >= 1.0 then
            Errors.fail "--validation %g: the held-out fraction must be between 0 and 1 (exclusive)" fraction

    /// Splits training samples per class into (kept, held out): round(fraction × n) of each class's n
    /// samples, at least one when the class has two or more and never all of them, drawn with a
    /// generator of its own per (seed, class); both parts keep the original order.
    let split (fraction: float) (seed: int) (samples: Sample[]) : Sample[] * Sample[] =
        check fraction
        let held = Collections.Generic.HashSet<int>()
        for label, members in samples |> Array.indexed |> Array.groupBy (fun (_, s) -> s.Label) do
            let n = members.Length
            let count = if n < 2 then 0 else min (n - 1) (max 1 (int (Math.Round(fraction * float n))))
            let order = Seed.permutation (Seed.random seed [ 2; label ]) n
            for k in 0 .. count - 1 do
                held.Add(fst members[order[k]]) |> ignore
        let indexed = samples |> Array.indexed
        indexed |> Array.filter (fun (i, _) -> not (held.Contains i)) |> Array.map snd,
        indexed |> Array.filter (fun (i, _) -> held.Contains i) |> Array.map snd

    /// With Some fraction: the dataset to train and evaluate on when that fraction of each class's
    /// training data is held out: train on the rest and evaluate on the held-out samples, in place
    /// of the test split, which is not used at all. None: the dataset as it is.
    let holdOut (fraction: float option) (seed: int) (d: Dataset) : Dataset =
        match fraction with
        | None -> d
        | Some f ->
            let train, validation = split f seed d.Train
            { d with
                Name = sprintf "%s[validation %g, seed %d]" d.Name f seed
                Train = train
                Test = validation }
