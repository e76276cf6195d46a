namespace Prompting.Data

open System

/// Train/test splits made from a single-folder release, by a seeded rule that anyone can rerun.
module Splits =
    /// Per class (samples in their ordinal path order), shuffle with Random(seed) and put the first
    /// round(fraction · n) into train, the rest into test: the rule of the ImageNet-R protocol scripts.
    let perClass (fraction: float) (seed: int) (name: string) (classNames: string[]) (samples: Sample[]) : Dataset =
        let train = ResizeArray<Sample>()
        let test = ResizeArray<Sample>()
        for label in 0 .. classNames.Length - 1 do
            let ofClass = samples |> Array.filter (fun s -> s.Label = label) |> Array.sortWith (fun a b -> String.CompareOrdinal(a.Source, b.Source))
            let rng = Random seed
            rng.Shuffle ofClass
            let trainCount = int (Math.Round(fraction * float ofClass.Length))
            ofClass |> Array.iteri (fun i s -> if i < trainCount then train.Add s else test.Add s)
        { Name = name; ClassNames = classNames; Train = train.ToArray(); Test = test.ToArray() }
