namespace Prompting.Data

open System

/// Deterministic seed derivation. Every random choice in the data layer (subsets, shuffles,
/// augmentations) draws from a System.Random seeded from a base seed and a few integers (epoch,
/// sample index, ...), never from a shared or global generator, so results depend only on those
/// numbers: not on thread scheduling, worker count or process (unlike HashCode.Combine, which is
/// randomised per process).
module Seed =
    /// SplitMix64's finaliser: a bijective mix of 64 bits.
    let private splitMix (x: uint64) =
        let mutable z = x + 0x9E3779B97F4A7C15UL
        z <- (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
        z <- (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
        z ^^^ (z >>> 31)

    /// A non-negative int derived from the seed and the parts, in order.
    let derive (seed: int) (parts: int list) : int =
        let h = parts |> List.fold (fun h p -> splitMix (h ^^^ uint64 (uint32 p))) (splitMix (uint64 (uint32 seed)))
        int (h >>> 33)

    /// A generator of its own for (seed, parts...).
    let random (seed: int) (parts: int list) = Random(derive seed parts)

    /// A Fisher–Yates permutation of 0 .. n - 1 drawn from `rng`.
    let permutation (rng: Random) (n: int) =
        let order = Array.init n id
        for i in n - 1 .. -1 .. 1 do
            let j = rng.Next(i + 1)
            let t = order[i]
            order[i] <- order[j]
            order[j] <- t
        order
