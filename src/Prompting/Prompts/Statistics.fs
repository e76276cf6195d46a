namespace Prompting.Prompts

open System.Collections.Generic
open TorchSharp
open Prompting
open Prompting.Tensors

/// Per-class running mean and diagonal variance of features (float64 accumulators on the CPU).
type ClassStatistics() =
    let sums = Dictionary<int, float[]>()
    let squares = Dictionary<int, float[]>()
    let counts = Dictionary<int, int>()

    /// Adds features (N, D) with integer labels (N).
    member _.Add(features: torch.Tensor, labels: torch.Tensor) =
        use f = features.detach().cpu().to_type (torch.float64)
        let values = f.data<double>().ToArray()
        let ids = labels.cpu().to_type(torch.int64).data<int64>().ToArray()
        let d = int f.shape[1]
        ids |> Array.iteri (fun i label ->
            let c = int label
            if not (sums.ContainsKey c) then
                sums[c] <- Array.zeroCreate d
                squares[c] <- Array.zeroCreate d
                counts[c] <- 0
            let s, q = sums[c], squares[c]
            for j in 0 .. d - 1 do
                let v = values[i * d + j]
                s[j] <- s[j] + v
                q[j] <- q[j] + v * v
            counts[c] <- counts[c] + 1)

    member _.Classes = counts.Keys |> Seq.sort |> List.ofSeq

    /// The raw accumulators (class, count, sums, squares), for persisting a run.
    member _.Export() =
        [ for c in counts.Keys |> Seq.sort -> c, counts[c], Array.copy sums[c], Array.copy squares[c] ]

    /// Restores accumulators written by Export.
    member _.Import(entries: (int * int * float[] * float[]) list) =
        for c, n, s, q in entries do
            counts[c] <- n
            sums[c] <- Array.copy s
            squares[c] <- Array.copy q
    member _.Count(c: int) = counts[c]

    /// Forgets every class (a part restoring saved state starts from here).
    member _.Clear() =
        sums.Clear()
        squares.Clear()
        counts.Clear()

    /// The accumulators as exact tensors: classes and counts (C), sums and squares (C, D).
    member this.ToExact() : (string * ExactTensor) list =
        let entries = this.Export()
        let c = int64 entries.Length
        let d = match entries with [] -> 0L | (_, _, s, _) :: _ -> int64 s.Length
        [ "classes", { Shape = [| c |]; Values = [| for k, _, _, _ in entries -> float k |] }
          "counts", { Shape = [| c |]; Values = [| for _, n, _, _ in entries -> float n |] }
          "sums", { Shape = [| c; d |]; Values = [| for _, _, s, _ in entries do yield! s |] }
          "squares", { Shape = [| c; d |]; Values = [| for _, _, _, q in entries do yield! q |] } ]

    /// Replaces the accumulators with those of ToExact.
    member this.LoadExact(state: (string * ExactTensor) list) =
        this.Clear()
        let table = Map.ofList state
        match table.TryFind "classes", table.TryFind "counts", table.TryFind "sums", table.TryFind "squares" with
        | None, None, None, None -> ()
        | Some classes, Some n, Some s, Some q when classes.Shape.Length = 1 && s.Shape.Length = 2 && s.Shape[0] = classes.Shape[0] ->
            let d = int s.Shape[1]
            this.Import
                [ for i in 0 .. classes.Values.Length - 1 ->
                      int classes.Values[i], int n.Values[i], Array.sub s.Values (i * d) d, Array.sub q.Values (i * d) d ]
        | _ -> Errors.fail "class statistics: saved state needs classes, counts, sums and squares of matching sizes"
    member _.Mean(c: int) = sums[c] |> Array.map (fun s -> s / float counts[c])
    /// Population variance (the statistic the reference stores).
    member this.Variance(c: int) =
        let mean = this.Mean c
        Array.map2 (fun q m -> max 0.0 (q / float counts[c] - m * m)) squares[c] mean
