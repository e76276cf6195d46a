namespace Prompting.Bench

open System
open System.Globalization
open System.IO
open System.Text
open Prompting
open Prompting.Engine

/// The bench's one table: rows from both sides' results, as text, markdown, CSV and JSON.
[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module BenchReport =
    let private inv = CultureInfo.InvariantCulture

    /// A table row from the two sides' results, the analytic FLOPs and the matmul peak.
    let row (methodName: string) (flops: FlopCount) (peakGflops: float)
            (ours: Result<SideResult, string>) (peer: Result<SideResult, string>) : BenchRow =
        let ok r = match r with Ok v -> Some v | Error _ -> None
        let error r = match r with Error e -> Some e | Ok _ -> None
        let train (s: SideResult option) = s |> Option.map (fun s -> Stats.throughput s.ImagesPerRepeat s.TrainSeconds) |> Option.defaultValue nan
        let infer (s: SideResult option) = s |> Option.map (fun s -> Stats.throughput s.ImagesPerRepeat s.InferSeconds) |> Option.defaultValue nan
        let mfu (flopsPerImage: int64) (imagesPerSecond: float) =
            if Double.IsNaN imagesPerSecond || peakGflops <= 0.0 then nan
            else float flopsPerImage * imagesPerSecond / (peakGflops * 1e9)
        let o, p = ok ours, ok peer
        let cpuRatio (pick: SideResult -> float list) =
            match o, p with
            | Some a, Some b -> Stats.ratio (Stats.median (pick b) / float b.ImagesPerRepeat) (Stats.median (pick a) / float a.ImagesPerRepeat)
            | _ -> nan
        let ot, pt, oi, pi = train o, train p, infer o, infer p
        { Method = methodName
          Ours = o
          Peer = p
          OursError = error ours
          PeerError = error peer
          Flops = flops
          OursTrainImagesPerSecond = ot
          PeerTrainImagesPerSecond = pt
          TrainRatio = Stats.ratio ot pt
          OursInferImagesPerSecond = oi
          PeerInferImagesPerSecond = pi
          InferRatio = Stats.ratio oi pi
          TrainCpuRatio = cpuRatio (fun s -> s.TrainCpuSeconds)
          InferCpuRatio = cpuRatio (fun s -> s.InferCpuSeconds)
          OursTrainMfu = mfu (FlopCount.training flops) ot
          OursInferMfu = mfu (FlopCount.inference flops) oi
          PeerTrainMfu = mfu (FlopCount.training flops) pt }

    /// Images per second: 3 significant figures-ish, "n/a" when missing.
    let rate (v: float) =
        if Double.IsNaN v then "n/a"
        elif v >= 100.0 then v.ToString("F0", inv)
        elif v >= 10.0 then v.ToString("F1", inv)
        else v.ToString("F2", inv)

    let ratioText (v: float) = if Double.IsNaN v then "n/a" else v.ToString("F2", inv) + "x"
    let percent (v: float) = if Double.IsNaN v then "n/a" else (100.0 * v).ToString("F1", inv) + "%"
    let gflops (flops: int64) = (float flops / 1e9).ToString("F2", inv)
    let mib (bytes: int64) = (float bytes / 1048576.0).ToString("F0", inv)

    let private sideMemory (s: SideResult option) (pick: SideResult -> int64 option) =
        match s |> Option.bind pick with
        | Some b -> mib b
        | None -> "n/a"

    let private withCuda (report: BenchReport) =
        report.Rows |> List.exists (fun r -> r.Ours |> Option.exists (fun s -> s.CudaUsedBytes.IsSome) || r.Peer |> Option.exists (fun s -> s.CudaUsedBytes.IsSome))

    let headers (report: BenchReport) =
        [ "method"; "ours train img/s"; "PyTorch train img/s"; "ratio"; "ours infer img/s"; "PyTorch infer img/s"; "ratio"
          "peak RSS MiB ours / PyTorch"
          if withCuda report then "CUDA MiB ours / PyTorch"
          "GFLOPs/img train"; "MFU ours train" ]

    let cells (report: BenchReport) (r: BenchRow) =
        [ r.Method
          rate r.OursTrainImagesPerSecond; rate r.PeerTrainImagesPerSecond; ratioText r.TrainRatio
          rate r.OursInferImagesPerSecond; rate r.PeerInferImagesPerSecond; ratioText r.InferRatio
          sprintf "%s / %s" (sideMemory r.Ours (fun s -> Some s.PeakRssBytes)) (sideMemory r.Peer (fun s -> Some s.PeakRssBytes))
          if withCuda report then
              sprintf "%s / %s" (sideMemory r.Ours (fun s -> s.CudaUsedBytes)) (sideMemory r.Peer (fun s -> s.CudaUsedBytes))
          gflops (FlopCount.training r.Flops); percent r.OursTrainMfu ]

    /// One line describing the configuration, for every output.
    let summary (report: BenchReport) =
        let peer =
            match report.PeerMatmulPeakGflops, report.PeerLibrary with
            | Some p, Some lib -> sprintf "; peer %s, matmul peak %.1f GFLOP/s" lib p
            | _ -> "; no PyTorch peer"
        let queryDepth =
            match report.QueryDepth with
            | Some k -> sprintf ", query depth %d (methods with a query pass)" k
            | None -> ""
        sprintf "%s, %d threads, %s, %s at %d px, batch %d, task %d of %d (%d classes)%s, warm-up %d, %d repeats x %d steps (medians); matmul peak %.1f GFLOP/s (libtorch)%s"
            report.Device report.Threads report.Checkpoint report.Architecture report.ImageSize report.BatchSize report.Task report.Tasks report.Classes
            queryDepth report.Warmup report.Repeats report.Steps report.MatmulPeakGflops peer

    /// A plain aligned table for the terminal.
    let text (report: BenchReport) =
        let rows = headers report :: (report.Rows |> List.map (cells report))
        let widths = List.init (headers report).Length (fun i -> rows |> List.map (fun r -> r[i].Length) |> List.max)
        let line (r: string list) =
            r |> List.mapi (fun i c -> if i = 0 then c.PadRight widths[i] else c.PadLeft widths[i]) |> String.concat "  "
        let sb = StringBuilder()
        sb.AppendLine(summary report) |> ignore
        for i, r in List.indexed rows do
            sb.AppendLine(line r) |> ignore
            if i = 0 then sb.AppendLine(String('-', (line r).Length)) |> ignore
        for r in report.Rows do
            r.OursError |> Option.iter (fun e -> sb.AppendLine(sprintf "%s: ours: %s" r.Method e) |> ignore)
            r.PeerError |> Option.iter (fun e -> sb.AppendLine(sprintf "%s: PyTorch: %s" r.Method e) |> ignore)
        sb.ToString()

    /// The phases of one training step on both sides (medians, ms), when the run profiled.
    let phases (report: BenchReport) =
        let profiled = report.Rows |> List.filter (fun r -> r.Ours |> Option.exists (fun s -> not s.Phases.IsEmpty))
        if profiled.IsEmpty then ""
        else
            let sb = StringBuilder()
            let names = profiled.Head.Ours.Value.Phases |> List.map (fun p -> p.Name)
            sb.AppendLine("| method | side | " + String.concat " | " names + " | total |") |> ignore
            sb.AppendLine("|" + String.replicate (names.Length + 3) "---|") |> ignore
            for r in report.Rows do
                for side, result in [ "ours", r.Ours; "PyTorch", r.Peer ] do
                    match result with
                    | Some s when not s.Phases.IsEmpty ->
                        let ms = s.Phases |> List.map (fun p -> p.Milliseconds)
                        // "prompted forward" is the forward's time less the query pass's, so the
                        // phases add up to the step.
                        let total = List.sum ms
                        let show (v: float) = if Double.IsNaN v then "n/a" else v.ToString("F0", inv)
                        sb.AppendLine(sprintf "| %s | %s | %s | %s |" r.Method side (ms |> List.map show |> String.concat " | ") (show total)) |> ignore
                    | _ -> ()
            sb.ToString()

    /// The markdown table (with the configuration above it), as docs/performance.md quotes it.
    let markdown (report: BenchReport) =
        let sb = StringBuilder()
        let commit = report.Commit |> Option.map (sprintf ", commit %s") |> Option.defaultValue ""
        sb.AppendLine(sprintf "Measured %s%s. %s." report.Date commit (summary report)) |> ignore
        sb.AppendLine() |> ignore
        let hs = headers report
        sb.AppendLine("| " + String.concat " | " hs + " |") |> ignore
        sb.AppendLine("|" + String.replicate hs.Length "---|") |> ignore
        for r in report.Rows do
            sb.AppendLine("| " + String.concat " | " (cells report r) + " |") |> ignore
        let errors =
            [ for r in report.Rows do
                  match r.OursError with Some e -> yield sprintf "- %s, ours: %s" r.Method e | None -> ()
                  match r.PeerError with Some e -> yield sprintf "- %s, PyTorch: %s" r.Method e | None -> () ]
        if not errors.IsEmpty then
            sb.AppendLine() |> ignore
            for e in errors do sb.AppendLine e |> ignore
        let cpu = report.Rows |> List.filter (fun r -> not (Double.IsNaN r.TrainCpuRatio && Double.IsNaN r.InferCpuRatio))
        if not cpu.IsEmpty then
            sb.AppendLine().AppendLine("CPU-time ratios (PyTorch's process CPU seconds per image ÷ ours, medians: the work each side does, less disturbed by other processes than wall time):").AppendLine() |> ignore
            sb.AppendLine("| method | train | infer |").AppendLine("|---|---|---|") |> ignore
            for r in cpu do
                sb.AppendLine(sprintf "| %s | %s | %s |" r.Method (ratioText r.TrainCpuRatio) (ratioText r.InferCpuRatio)) |> ignore
        let profile = phases report
        if profile <> "" then
            sb.AppendLine().AppendLine("Phases of one training step (ms, medians; the query pass is timed alone and subtracted from the forward):").AppendLine().Append(profile) |> ignore
        sb.ToString()

    let private csvField (s: string) =
        if s.IndexOfAny([| ','; '"'; '\n' |]) >= 0 then "\"" + s.Replace("\"", "\"\"") + "\"" else s

    let private number (v: float) = if Double.IsNaN v then "" else v.ToString("R", inv)

    /// One CSV line per method with the raw numbers (empty where missing).
    let csv (report: BenchReport) =
        let header =
            [ "method"; "ours_train_img_s"; "pytorch_train_img_s"; "train_ratio"; "ours_infer_img_s"; "pytorch_infer_img_s"
              "infer_ratio"; "ours_peak_rss_bytes"; "pytorch_peak_rss_bytes"; "ours_cuda_used_bytes"; "pytorch_cuda_used_bytes"
              "query_gflops_img"; "forward_gflops_img"; "backward_gflops_img"; "train_gflops_img"; "infer_gflops_img"
              "ours_train_mfu"; "ours_infer_mfu"; "pytorch_train_mfu"; "train_cpu_ratio"; "infer_cpu_ratio"; "ours_error"; "pytorch_error" ]
        let bytes (s: SideResult option) (pick: SideResult -> int64 option) =
            match s |> Option.bind pick with
            | Some b -> string b
            | None -> ""
        let g (f: int64) = number (float f / 1e9)
        let lines =
            [ for r in report.Rows ->
                  [ r.Method; number r.OursTrainImagesPerSecond; number r.PeerTrainImagesPerSecond; number r.TrainRatio
                    number r.OursInferImagesPerSecond; number r.PeerInferImagesPerSecond; number r.InferRatio
                    bytes r.Ours (fun s -> Some s.PeakRssBytes); bytes r.Peer (fun s -> Some s.PeakRssBytes)
                    bytes r.Ours (fun s -> s.CudaUsedBytes); bytes r.Peer (fun s -> s.CudaUsedBytes)
                    g r.Flops.Query; g r.Flops.Forward; g r.Flops.Backward; g (FlopCount.training r.Flops); g (FlopCount.inference r.Flops)
                    number r.OursTrainMfu; number r.OursInferMfu; number r.PeerTrainMfu; number r.TrainCpuRatio; number r.InferCpuRatio
                    defaultArg r.OursError ""; defaultArg r.PeerError "" ] ]
        (header :: lines) |> List.map (List.map csvField >> String.concat ",") |> String.concat "\n" |> fun s -> s + "\n"

    /// bench.md, bench.json and bench.csv in `dir`, each written atomically.
    let write (dir: string) (report: BenchReport) =
        let put name (text: string) = Files.writeAtomic (Path.Combine(dir, name)) (fun tmp -> File.WriteAllText(tmp, text))
        put "bench.md" (markdown report)
        put "bench.json" (Json.serialize report)
        put "bench.csv" (csv report)
