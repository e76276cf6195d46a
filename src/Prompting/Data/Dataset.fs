namespace Prompting.Data

open Prompting

/// Operations on whole datasets.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Dataset =
    /// Per-class counts of a split, indexed by label.
    let classCounts (classes: int) (samples: Sample[]) =
        let counts = Array.zeroCreate<int> classes
        for s in samples do
            if s.Label >= 0 && s.Label < classes then counts[s.Label] <- counts[s.Label] + 1
        counts

    /// The first `perClass` samples of each class after a seeded shuffle of that class, kept in
    /// their original order. Classes with fewer samples keep all of theirs. Each class draws from a
    /// generator of its own (seed, split, label), so the choice for one class does not depend on the
    /// others, and a larger perClass only adds samples to a smaller one's choice.
    let subsetSplit (seed: int) (split: int) (perClass: int) (samples: Sample[]) =
        if perClass < 0 then Errors.fail "subset: samples per class must be non-negative, got %d" perClass
        let byClass = samples |> Array.indexed |> Array.groupBy (fun (_, s) -> s.Label)
        let keep = System.Collections.Generic.HashSet<int>()
        for label, members in byClass do
            let order = Seed.permutation (Seed.random seed [ split; label ]) members.Length
            for k in 0 .. min perClass members.Length - 1 do
                keep.Add(fst members[order[k]]) |> ignore
        samples |> Array.indexed |> Array.filter (fun (i, _) -> keep.Contains i) |> Array.map snd

    /// A seeded per-class subset of both splits: `trainPerClass` training and `testPerClass` test
    /// samples of each class (deterministic for a given seed).
    let subset (seed: int) (trainPerClass: int) (testPerClass: int) (d: Dataset) =
        { d with
            Name = sprintf "%s[%d/%d per class, seed %d]" d.Name trainPerClass testPerClass seed
            Train = subsetSplit seed 0 trainPerClass d.Train
            Test = subsetSplit seed 1 testPerClass d.Test }

    /// Only the samples of the given classes (labels unchanged): a task's slice of a class-incremental stream.
    let ofClasses (labels: int seq) (d: Dataset) =
        let wanted = Set.ofSeq labels
        { d with
            Train = d.Train |> Array.filter (fun s -> wanted.Contains s.Label)
            Test = d.Test |> Array.filter (fun s -> wanted.Contains s.Label) }
