namespace Prompting.Bench

open System
open System.Diagnostics
open System.IO
open TorchSharp
open Prompting
open Prompting.Vit
open Prompting.Prompts
open Prompting.Engine

/// What `prompting bench` is asked for; pure data.
type BenchOptions =
    { Methods: string list
      /// A checkpoint file; None: the real ViT-Ti from ../shared when present (for vit-tiny),
      /// otherwise random weights of `Arch` written to a temporary file.
      Checkpoint: string option
      Arch: string
      Heads: int option
      /// None: the checkpoint's resolution.
      ImageSize: int option
      BatchSize: int
      Threads: int
      Warmup: int
      Steps: int
      Repeats: int
      Device: string
      Tasks: int
      Classes: int
      Task: int
      Peer: bool
      Python: string
      /// None: bench/peer.py of the repository.
      PeerScript: string option
      Output: string option
      Profile: bool
      Seed: int
      /// bfloat16 mixed precision on both sides (meant for CUDA).
      Bf16: bool
      /// Side of the square matrices of the matmul peak (default 2048 on the CPU, 8192 on CUDA).
      MatmulSize: int option
      /// Blocks the query pass of every method with one runs (QueryDepth); None: all of them.
      QueryDepth: int option }

/// How a measurement child is started: the parent's own program for our side.
type ChildLauncher = string list -> ProcessStartInfo

module BenchOptions =
    /// The prompt methods and the main baselines.
    let defaultMethods =
        [ "vpt-shallow"; "vpt-deep"; "l2p"; "l2p-jax"; "l2p++"; "dualprompt"; "dualprompt-coda"; "coda-prompt"; "vq-prompt"
          "dual-vq"; "vpt-deep-pool"; "linear"; "full"; "adapter" ]

    let defaults =
        { Methods = defaultMethods
          Checkpoint = None
          Arch = "vit-tiny"
          Heads = None
          ImageSize = None
          BatchSize = 32
          Threads = Environment.ProcessorCount
          Warmup = 1
          Steps = 1
          Repeats = 3
          Device = "cpu"
          Tasks = 10
          Classes = 100
          Task = 0
          Peer = true
          Python = "/usr/bin/python3"
          PeerScript = None
          Output = None
          Profile = false
          Seed = 0
          Bf16 = false
          MatmulSize = None
          QueryDepth = None }

    /// Everything that can be checked before any work: one-line errors naming the option.
    let validate (o: BenchOptions) =
        let atLeast name minimum v = if v < minimum then Errors.fail "--%s %d: must be at least %d" name v minimum
        atLeast "batch-size" 1 o.BatchSize
        atLeast "threads" 1 o.Threads
        atLeast "warmup" 1 o.Warmup
        atLeast "steps" 1 o.Steps
        atLeast "repeats" 1 o.Repeats
        atLeast "tasks" 1 o.Tasks
        o.ImageSize |> Option.iter (atLeast "image-size" 1)
        o.MatmulSize |> Option.iter (atLeast "matmul-size" 1)
        if o.Classes < o.Tasks then Errors.fail "--classes %d: need at least one class per task (--tasks %d)" o.Classes o.Tasks
        if o.Task < 0 || o.Task >= o.Tasks then Errors.fail "--task %d: must be in 0..%d" o.Task (o.Tasks - 1)
        if o.Methods.IsEmpty then Errors.fail "--methods: give at least one method"
        for m in o.Methods do Methods.find m o.Tasks |> ignore
        o.Checkpoint |> Option.iter (fun p -> if not (File.Exists p) then Errors.fail "%s: checkpoint not found" p)
        if o.Checkpoint.IsNone then VitConfig.preset o.Arch |> ignore
        o.QueryDepth
        |> Option.iter (fun k ->
            if k < 1 then Errors.fail "--query-depth %d: must be between 1 and the backbone's depth" k
            // The preset's depth is also that of ../shared's ViT-Ti, used only for vit-tiny.
            let depth =
                match o.Checkpoint with
                | Some path -> (Checkpoint.read path o.Heads).Config.Depth
                | None -> (VitConfig.preset o.Arch).Depth
            if k > depth then Errors.fail "--query-depth %d: must be between 1 and the backbone's %d blocks" k depth)
        let device = o.Device.Trim().ToLowerInvariant()
        if device <> "cpu" && device <> "cuda" && not (device.StartsWith "cuda:") then
            Errors.fail "--device %s: expected cpu or cuda[:N]" o.Device
        o.PeerScript |> Option.iter (fun p -> if not (File.Exists p) then Errors.fail "%s: peer script not found" p)

/// The parent: resolves the weights, measures the matmul peak, runs one fresh child process per
/// (side, method), alternating which side goes first, and assembles the table.
module BenchRun =
    let sharedWeights = "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"

    /// The first ancestor of `start` holding Prompting.sln, or None.
    let repositoryRoot (start: string) =
        let rec up (dir: DirectoryInfo) =
            if isNull dir then None
            elif File.Exists(Path.Combine(dir.FullName, "Prompting.sln")) then Some dir.FullName
            else up dir.Parent
        up (DirectoryInfo(Path.GetFullPath start))

    /// The recipe's optimiser as the peer's command-line options.
    let peerOptimizer (t: Training) =
        let rate = Schedules.baseRate t
        [ match t.Optimizer with
          | Adam -> yield! [ "--optimizer"; "adam" ]
          | AdamW -> yield! [ "--optimizer"; "adamw" ]
          | Sgd momentum -> yield! [ "--optimizer"; "sgd"; "--momentum"; string momentum ]
          yield! [ "--lr"; rate.ToString "R"; "--weight-decay"; t.WeightDecay.ToString "R" ]
          match t.HeadLearningRate with
          | Some h -> yield! [ "--head-lr"; (if t.ScaleByBatch then h * float t.BatchSize / 256.0 else h).ToString "R" ]
          | None -> ()
          match t.GradientClip with
          | Some c -> yield! [ "--clip"; c.ToString "R" ]
          | None -> () ]

    /// The peer's command line for one measurement.
    let peerArguments (script: string) (r: MeasureRequest) (output: string) (profileOutput: string option) =
        let method = Methods.find r.Method r.Tasks
        let methodName = method.Name
        [ yield script
          yield "measure"
          yield! [ "--method"; methodName; "--checkpoint"; r.Checkpoint; "--heads"; string r.Heads ]
          yield! [ "--image-size"; string r.ImageSize; "--batch-size"; string r.BatchSize; "--threads"; string r.Threads ]
          yield! [ "--warmup"; string r.Warmup; "--steps"; string r.Steps; "--repeats"; string r.Repeats ]
          yield! [ "--device"; r.Device; "--tasks"; string r.Tasks; "--classes"; string r.Classes; "--task"; string r.Task ]
          yield! [ "--seed"; string r.Seed; "--output"; output ]
          yield! peerOptimizer (Ours.training r method)
          if r.Bf16 then yield "--bf16"
          match r.QueryDepth with
          | Some k -> yield! [ "--query-depth"; string k ]
          | None -> ()
          if r.Profile then
              yield "--profile"
              match profileOutput with
              | Some p -> yield! [ "--profile-output"; p ]
              | None -> () ]

    /// Runs a child to completion with the thread variables set: exit code and stderr.
    let runChild (psi: ProcessStartInfo) (threads: int) =
        psi.UseShellExecute <- false
        psi.RedirectStandardError <- true
        psi.RedirectStandardOutput <- true
        for v in [ "OMP_NUM_THREADS"; "MKL_NUM_THREADS"; "OPENBLAS_NUM_THREADS" ] do
            psi.Environment[v] <- string threads
        psi.Environment["PYTHONUNBUFFERED"] <- "1"
        use p =
            try Process.Start psi
            with :? ComponentModel.Win32Exception as e -> Errors.fail "%s: cannot start (%s)" psi.FileName e.Message
        let err = p.StandardError.ReadToEndAsync()
        let out = p.StandardOutput.ReadToEndAsync()
        p.WaitForExit()
        p.ExitCode, err.Result + out.Result

    /// The last non-empty line of a child's output, for the table's error notes.
    let lastLine (text: string) =
        text.Split('\n') |> Array.map (fun l -> l.Trim()) |> Array.filter (fun l -> l <> "") |> Array.tryLast |> Option.defaultValue "(no output)"

    let private readResult (path: string) (code: int) (output: string) =
        if code = 0 && File.Exists path then
            try Ok(Json.deserialize<SideResult> path (File.ReadAllText path))
            with PromptingError e -> Error e
        else Error(sprintf "exit code %d: %s" code (lastLine output))

    /// Our side in a fresh process: the request as JSON, `bench --child REQUEST --child-output RESULT`.
    let measureOurs (launch: ChildLauncher) (dir: string) (r: MeasureRequest) =
        let name = (Methods.find r.Method r.Tasks).Name
        let request = Path.Combine(dir, sprintf "request-%s.json" name)
        let result = Path.Combine(dir, sprintf "ours-%s.json" name)
        Files.writeAtomic request (fun tmp -> File.WriteAllText(tmp, Json.serialize r))
        let code, output = runChild (launch [ "bench"; "--child"; request; "--child-output"; result ]) r.Threads
        readResult result code output

    /// The peer in a fresh Python process.
    let measurePeer (python: string) (script: string) (dir: string) (profileDir: string option) (r: MeasureRequest) =
        let name = (Methods.find r.Method r.Tasks).Name
        let result = Path.Combine(dir, sprintf "pytorch-%s.json" name)
        let profile = profileDir |> Option.map (fun d -> Path.Combine(d, sprintf "profile-%s-pytorch.txt" name))
        let code, output = runChild (ProcessStartInfo(python, peerArguments script r result profile)) r.Threads
        readResult result code output

    /// Whether `python -c "import torch"` works.
    let peerAvailable (python: string) =
        try
            let code, _ = runChild (ProcessStartInfo(python, [ "-c"; "import torch" ])) 1
            code = 0
        with PromptingError _ -> false

    /// The peer's matmul peak and library, when it runs.
    let peerPeak (python: string) (script: string) (dir: string) (threads: int) (device: string) (size: int) =
        let path = Path.Combine(dir, "pytorch-peak.json")
        let args = [ script; "peak"; "--threads"; string threads; "--device"; device; "--size"; string size; "--repeats"; "5"; "--output"; path ]
        match runChild (ProcessStartInfo(python, args)) threads with
        | 0, _ when File.Exists path ->
            use doc = Text.Json.JsonDocument.Parse(File.ReadAllText path)
            Some(doc.RootElement.GetProperty("MatmulPeakGflops").GetDouble()), Some(doc.RootElement.GetProperty("Library").GetString())
        | _ -> None, None

    /// A warning when the peer's BLAS is far below libtorch's: Debian's PyTorch without
    /// libopenblas0-pthread falls back to the reference BLAS (about 50 times slower), and ratios
    /// against it would say nothing about our code.
    let peerBlasWarning (oursGflops: float) (peerGflops: float) =
        if peerGflops < 0.25 * oursGflops then
            Some(
                sprintf "warning: the peer's matmul peak (%.1f GFLOP/s) is %.0f%% of libtorch's (%.1f); its BLAS is not an optimised one (on Debian: apt-get install libopenblas0-pthread), so the ratios below overstate ours"
                    peerGflops (100.0 * peerGflops / oursGflops) oursGflops)
        else None

    let private commitOf (root: string option) =
        match root with
        | None -> None
        | Some dir ->
            try
                let psi = ProcessStartInfo("git", [ "-C"; dir; "rev-parse"; "--short"; "HEAD" ])
                match runChild psi 1 with
                | 0, out -> Some(out.Trim())
                | _ -> None
            with _ -> None

    /// The weights both sides load, with a description for the report.
    let resolveCheckpoint (o: BenchOptions) (root: string option) (temp: string) =
        match o.Checkpoint with
        | Some path -> Path.GetFullPath path, Path.GetFileName path
        | None ->
            let preset = VitConfig.preset o.Arch
            let shared =
                root |> Option.map (fun r -> Path.GetFullPath(Path.Combine(r, "..", "shared", "weights", sharedWeights)))
            match shared with
            | Some path when File.Exists path && preset = VitConfig.preset "vit-tiny" -> path, sharedWeights + " (../shared)"
            | _ ->
                let path = Path.Combine(temp, sprintf "random-%s.safetensors" o.Arch)
                torch.manual_seed (int64 o.Seed) |> ignore
                use model = new VisionTransformer(preset)
                Checkpoint.export path model
                path, sprintf "random %s weights (seed %d)" o.Arch o.Seed

    /// Runs the whole bench; `log` receives progress lines. Returns the report (also written to
    /// the output directory when one is given).
    let run (o: BenchOptions) (launch: ChildLauncher) (root: string option) (log: string -> unit) =
        BenchOptions.validate o
        let device = Devices.parse o.Device
        let temp = Path.Combine(Path.GetTempPath(), "prompting-bench-" + Guid.NewGuid().ToString("N").Substring(0, 8))
        Directory.CreateDirectory temp |> ignore
        try
            let checkpoint, description = resolveCheckpoint o root temp
            let config = (Checkpoint.read checkpoint o.Heads).Config
            let imageSize = defaultArg o.ImageSize config.ImageSize
            let config = VitConfig.validate { config with ImageSize = imageSize }
            let layout = TaskLayout.uniform o.Tasks o.Classes
            let script =
                o.PeerScript
                |> Option.orElse (root |> Option.map (fun r -> Path.Combine(r, "bench", "peer.py")))
                |> Option.filter File.Exists
            let peer =
                match o.Peer, script with
                | false, _ -> Error "--no-peer"
                | true, None -> Error "bench/peer.py not found (give --peer-script)"
                | true, Some _ when not (peerAvailable o.Python) -> Error(sprintf "%s cannot import torch" o.Python)
                | true, Some s -> Ok s
            Compute.setThreads o.Threads
            let matmulSize = defaultArg o.MatmulSize (if device.``type`` = DeviceType.CUDA then 8192 else 2048)
            let peak = Compute.matmulPeak device matmulSize 5
            log (sprintf "weights: %s; matmul peak (libtorch, %d threads): %.1f GFLOP/s" description o.Threads peak)
            let peerPeakGflops, peerLibrary =
                match peer with
                | Ok s -> peerPeak o.Python s temp o.Threads o.Device matmulSize
                | Error _ -> None, None
            peerPeakGflops |> Option.iter (fun p -> log (sprintf "matmul peak (%s): %.1f GFLOP/s" (defaultArg peerLibrary "PyTorch") p))
            peerPeakGflops |> Option.bind (peerBlasWarning peak) |> Option.iter log
            match peer with
            | Error why -> log (sprintf "no PyTorch peer: %s" why)
            | Ok _ -> ()
            let profileDir = if o.Profile then o.Output else None
            profileDir |> Option.iter (fun d -> Directory.CreateDirectory d |> ignore)
            let header rows =
                { Date = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'")
                  Commit = commitOf root
                  Device = (if device.``type`` = DeviceType.CUDA then "CUDA " + o.Device else "CPU")
                  Threads = o.Threads
                  Checkpoint = description
                  Architecture = sprintf "ViT (width %d, depth %d, %d heads, patch %d)" config.Width config.Depth config.Heads config.PatchSize
                  ImageSize = imageSize
                  BatchSize = o.BatchSize
                  Warmup = o.Warmup
                  Steps = o.Steps
                  Repeats = o.Repeats
                  Tasks = o.Tasks
                  Classes = o.Classes
                  Task = o.Task
                  QueryDepth = o.QueryDepth
                  MatmulPeakGflops = peak
                  PeerMatmulPeakGflops = peerPeakGflops
                  PeerLibrary = peerLibrary
                  Rows = rows }
            let finished = ResizeArray<BenchRow>()
            let rows =
                [ for i, name in List.indexed o.Methods ->
                      let methodValue = { Methods.find name o.Tasks with QueryDepth = o.QueryDepth }
                      let request =
                          { Method = methodValue.Name; Checkpoint = checkpoint; Heads = config.Heads; ImageSize = imageSize
                            BatchSize = o.BatchSize; Threads = o.Threads; Warmup = o.Warmup; Steps = o.Steps; Repeats = o.Repeats
                            Device = o.Device; Tasks = o.Tasks; Classes = o.Classes; Task = o.Task; Profile = o.Profile; Seed = o.Seed
                            Bf16 = o.Bf16; QueryDepth = o.QueryDepth }
                      let ours () = measureOurs launch temp request
                      let theirs () =
                          match peer with
                          | Ok s -> measurePeer o.Python s temp profileDir request
                          | Error why -> Error why
                      // Alternate which side runs first, so drifting load on a shared machine
                      // does not favour one side.
                      let oursResult, peerResult =
                          if i % 2 = 0 then
                              let a = ours ()
                              a, theirs ()
                          else
                              let b = theirs ()
                              ours (), b
                      let flops = Flops.count config methodValue layout o.Task true
                      let row = BenchReport.row methodValue.Name flops peak oursResult peerResult
                      log (sprintf "[%d/%d] %s: train %s vs %s img/s (%s), infer %s vs %s img/s (%s)" (i + 1) o.Methods.Length methodValue.Name
                               (BenchReport.rate row.OursTrainImagesPerSecond) (BenchReport.rate row.PeerTrainImagesPerSecond) (BenchReport.ratioText row.TrainRatio)
                               (BenchReport.rate row.OursInferImagesPerSecond) (BenchReport.rate row.PeerInferImagesPerSecond) (BenchReport.ratioText row.InferRatio))
                      // The rows so far, so a long run that is stopped keeps what it measured.
                      finished.Add row
                      o.Output |> Option.iter (fun dir -> BenchReport.write dir (header (List.ofSeq finished)))
                      row ]
            let report = header rows
            o.Output |> Option.iter (fun dir -> BenchReport.write dir report)
            report
        finally
            try Directory.Delete(temp, true) with _ -> ()

    /// The child's side of the protocol: read the request, measure, write the result atomically.
    let child (requestPath: string) (resultPath: string) =
        if not (File.Exists requestPath) then Errors.fail "%s: bench request not found" requestPath
        let request = Json.deserialize<MeasureRequest> requestPath (File.ReadAllText requestPath)
        let result = Ours.measure request
        Files.writeAtomic resultPath (fun tmp -> File.WriteAllText(tmp, Json.serialize result))
