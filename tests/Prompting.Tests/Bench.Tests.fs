/// The bench harness: analytic FLOPs (by hand and against the profiler's count of the peer's
/// executed products), statistics and formatting, the child-process protocol, the PyTorch peer
/// and the command's errors.
module Prompting.Tests.Bench

open System
open System.Diagnostics
open System.IO
open Expecto
open Prompting
open Prompting.Vit
open Prompting.Prompts
open Prompting.Engine
open Prompting.Bench
open Prompting.Tests.Fixtures
open Prompting.Tests.TestSupport

/// Image 16, patch 8 (4 patches, 5 tokens), width 8, 2 heads (hd 4), MLP 32, depth 2; C·p² = 192.
let private tiny = VitConfig.custom 16 8 2 8 2 0
/// The same blocks, depth 4.
let private tiny4 = VitConfig.custom 16 8 4 8 2 0
/// Two tasks of two classes: the head has 4 outputs.
let private tinyLayout = TaskLayout.uniform 2 4

let private prefixGroup source =
    { Name = "p"; Layers = Only [ 0 ]; Length = 4; Insertion = PrefixTokens SplitHalves; Source = source
      Init = Uniform(0.0, 1.0); Dropout = 0.0 }

let private withGroups name groups = { Methods.linear with Name = name; Groups = groups }

/// A keyed pool of `size` entries choosing one.
let private keyedPool size =
    Keyed { PoolSize = size; TopK = 1; KeysPerLayer = false; BatchwiseSelection = false; TrainWithTaskId = false
            CopyPreviousAtTaskStart = false; PullLoss = NegativeCosine; PullWeight = 0.1 }

let private python = "/usr/bin/python3"
let private peerScript = Path.Combine(root, "bench", "peer.py")

let private pythonHasTorch =
    lazy
        (try
            let psi = ProcessStartInfo(python, [ "-c"; "import torch" ], RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false)
            use p = Process.Start psi
            p.WaitForExit()
            p.ExitCode = 0
         with _ -> false)

let private requirePeer () =
    if not pythonHasTorch.Value then skiptest "/usr/bin/python3 cannot import torch (apt-get install python3-torch libopenblas0-pthread)"

/// Runs the peer script; exit code and output.
let private runPeer (args: string list) =
    let psi = ProcessStartInfo(python, peerScript :: args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    psi.Environment["OMP_NUM_THREADS"] <- "1"
    use p = Process.Start psi
    let err = p.StandardError.ReadToEndAsync()
    let out = p.StandardOutput.ReadToEnd()
    p.WaitForExit()
    p.ExitCode, out + err.Result

let private depth5 = fixture "vit_depth5.safetensors"
let private depth5Config = VitConfig.custom 32 8 5 32 2 0

let private peerFlopsWith (extra: string list) (methodName: string) =
    let out = Path.Combine(tempDir (), "flops.json")
    let code, output =
        runPeer ([ "measure"; "--method"; methodName; "--checkpoint"; depth5; "--heads"; "2"; "--image-size"; "32"; "--batch-size"; "4"
                   "--threads"; "1"; "--repeats"; "1"; "--count-flops"; "--output"; out ] @ extra)
    Expect.equal code 0 output
    use doc = Text.Json.JsonDocument.Parse(File.ReadAllText out)
    doc.RootElement.GetProperty("ProfiledTrainFlops").GetInt64(), doc.RootElement.GetProperty("ProfiledInferFlops").GetInt64()

let private peerFlops = peerFlopsWith []

let private side name (train: float list) (infer: float list) rss : SideResult =
    { Side = name; Method = "l2p"; TrainSeconds = train; InferSeconds = infer; TrainCpuSeconds = train |> List.map ((*) 2.0)
      InferCpuSeconds = infer |> List.map ((*) 2.0); ImagesPerRepeat = 32; TrainableParameters = 10L
      BaselineRssBytes = 100L <<< 20; PeakRssBytes = rss; CudaUsedBytes = None; CudaAllocatedPeakBytes = None; Loss = 1.0
      Phases = []; Library = name }

let private reportOf (rows: BenchRow list) : BenchReport =
    { Date = "2026-01-01 00:00 UTC"; Commit = Some "abc1234"; Device = "CPU"; Threads = 2; Checkpoint = "w.safetensors"
      Architecture = "ViT"; ImageSize = 224; BatchSize = 32; Warmup = 1; Steps = 1; Repeats = 3; Tasks = 10; Classes = 100; Task = 0
      QueryDepth = None; MatmulPeakGflops = 50.0; PeerMatmulPeakGflops = Some 40.0; PeerLibrary = Some "PyTorch 1.13"; Rows = rows }

[<Tests>]
let tests =
    testList
        "bench"
        [ test "a peer BLAS far below libtorch's is called out, a comparable one is not" {
              // 5 GFLOP/s is what Debian's reference BLAS gives where OpenBLAS gives ~200.
              match BenchRun.peerBlasWarning 216.0 5.0 with
              | Some text ->
                  Expect.stringContains text "libopenblas0-pthread" "names the package"
                  Expect.stringContains text "2%" "says how far below"
              | None -> failtest "no warning for a peer at 2% of our peak"
              Expect.isNone (BenchRun.peerBlasWarning 216.0 197.8) "OpenBLAS at 92% of ours"
              Expect.isNone (BenchRun.peerBlasWarning 55.0 69.0) "a peer faster than ours"
          }

          // Every number below is written out from the shapes: 2·M·N·K per product.
          test "FLOPs of a linear probe by hand" {
              let f = Flops.count tiny Methods.linear tinyLayout 0 true
              // patch embedding 2·4·8·192 = 12288; a block of 5 tokens: qkv 2·5·24·8 = 1920,
              // q·kᵀ and attn·v 2·(2 heads·5·5·4) = 400 each, proj 2·5·8·8 = 640, fc1 = fc2 = 2·5·32·8 = 2560
              let block = 1920L + 400L + 400L + 640L + 2560L + 2560L
              Expect.equal block 8480L "block"
              Expect.equal f.Query 0L "no query pass"
              Expect.equal f.Forward (12288L + 2L * block + 2L * 8L * 4L) "forward: patches, 2 blocks, head 2·8·4"
              // Only the head's weight gradient: the backbone is frozen and nothing upstream needs grad.
              Expect.equal f.Backward 64L "backward"
          }

          test "FLOPs of VPT-shallow by hand: prompt tokens make every block's activations need grad" {
              let f = Flops.count tiny Methods.vptShallow tinyLayout 0 true
              // 5 + 10 = 15 tokens: qkv 2·15·24·8 = 5760, q·kᵀ = attn·v = 2·2·15·15·4 = 3600,
              // proj 2·15·64 = 1920, fc1 = fc2 = 2·15·32·8 = 7680
              let block = 5760L + 3600L + 3600L + 1920L + 7680L + 7680L
              Expect.equal f.Forward (12288L + 2L * block + 64L) "forward"
              // backward per block: input grads of the frozen linears (qkv, proj, fc1, fc2), both
              // operands of the two attention products; the head: weight and input.
              let blockBackward = 5760L + 2L * 3600L + 2L * 3600L + 1920L + 7680L + 7680L
              Expect.equal f.Backward (2L * blockBackward + 2L * 64L) "backward"
              Expect.equal (FlopCount.training f) (f.Forward + f.Backward) "no query"
          }

          test "FLOPs of a prefix at block 0 by hand: no gradient reaches the queries or qkv there" {
              let f = Flops.count tiny (withGroups "prefix" [ prefixGroup Static ]) tinyLayout 0 true
              // block 0 attends over 5 + 2 keys: q·kᵀ = attn·v = 2·2·5·7·4 = 560
              let block0 = 1920L + 560L + 560L + 640L + 2560L + 2560L
              let block1 = 8480L
              Expect.equal f.Forward (12288L + block0 + block1 + 64L) "forward"
              // block 0: q·kᵀ only for the keys (560), attn·v both (1120), proj/fc1/fc2 inputs;
              // block 1: every activation gradient (1920 + 800 + 800 + 640 + 2560 + 2560).
              let backward0 = 560L + 1120L + 640L + 2560L + 2560L
              let backward1 = 1920L + 800L + 800L + 640L + 2560L + 2560L
              Expect.equal f.Backward (backward0 + backward1 + 128L) "backward"
          }

          test "FLOPs of a keyed prefix pool add the query pass and the key similarity" {
              let pool = Keyed { PoolSize = 3; TopK = 1; KeysPerLayer = false; BatchwiseSelection = false; TrainWithTaskId = false
                                 CopyPreviousAtTaskStart = false; PullLoss = NegativeCosine; PullWeight = 0.1 }
              let keyed = Flops.count tiny (withGroups "keyed" [ prefixGroup pool ]) tinyLayout 0 true
              let plain = Flops.count tiny (withGroups "prefix" [ prefixGroup Static ]) tinyLayout 0 true
              Expect.equal keyed.Query (12288L + 2L * 8480L) "query: the un-prompted backbone without head"
              Expect.equal (keyed.Forward - plain.Forward) (2L * 8L * 3L) "cos(q, keys): 2·D·M"
              Expect.equal (keyed.Backward - plain.Backward) (2L * 8L * 3L) "gradient to the keys only"
              Expect.equal (FlopCount.inference keyed) (keyed.Query + keyed.Forward) "inference"
          }

          test "FLOPs of full fine-tuning count every weight gradient" {
              let frozen = Flops.count tiny Methods.linear tinyLayout 0 true
              let full = Flops.count tiny Methods.full tinyLayout 0 true
              // every block product once more (weight or second operand), the patch embedding's
              // weight (12288), and every activation gradient from block 0 on
              let block = 8480L
              Expect.equal full.Backward (12288L + 2L * (2L * block) + 2L * 64L) "backward"
              Expect.equal full.Forward frozen.Forward "same forward"
          }

          test "FLOPs with a query depth by hand: the query pass runs K blocks, the prompted pass is unchanged" {
              // Depth 4, the same blocks as above (8480 each); a keyed prefix at block 0 shares nothing.
              let keyed = withGroups "keyed" [ prefixGroup (keyedPool 3) ]
              let full = Flops.count tiny4 keyed tinyLayout 0 true
              Expect.equal full.Query (12288L + 4L * 8480L) "default: patch embedding and all 4 blocks (46208)"
              for k, expected in [ 1, 12288L + 8480L; 3, 12288L + 3L * 8480L; 4, 12288L + 4L * 8480L ] do
                  let f = Flops.count tiny4 { keyed with QueryDepth = Some k } tinyLayout 0 true
                  // the last query block counts all 5 tokens, as the reference computes it
                  Expect.equal f.Query expected (sprintf "query depth %d: patch embedding and %d blocks" k k)
                  Expect.equal f.Forward full.Forward (sprintf "query depth %d: same prompted forward" k)
                  Expect.equal f.Backward full.Backward (sprintf "query depth %d: same backward" k)
              // Without a query pass the depth changes nothing.
              let linear = Flops.count tiny4 Methods.linear tinyLayout 0 true
              Expect.equal (Flops.count tiny4 { Methods.linear with QueryDepth = Some 1 } tinyLayout 0 true) linear "linear"
              Expect.equal linear.Query 0L "no query pass"
          }

          test "FLOPs of blocks both passes share are counted once" {
              // A keyed prefix (pool 3, one chosen, 2 key/value tokens) at block 2 only, depth 4: the
              // frozen blocks 0 and 1 (and the patch embedding) are the same in both passes.
              let late = withGroups "late" [ { prefixGroup (keyedPool 3) with Layers = Only [ 2 ] } ]
              // Prompted forward: patches 12288, blocks 0, 1, 3 at 8480, block 2 with 2 prefix keys
              // (q·kᵀ = attn·v = 2·2·5·7·4 = 560: 1920 + 560 + 560 + 640 + 2560 + 2560 = 8800),
              // cos(q, keys) 2·8·3 = 48, head 2·8·4 = 64.
              let forward = 12288L + 3L * 8480L + 8800L + 48L + 64L
              Expect.equal forward 46640L "prompted forward"
              // Backward: block 2 as the prefix at block 0 above (560 + 1120 + 640 + 2560 + 2560 = 7440),
              // block 3 every activation gradient (9280), head weight and input (128), keys (48).
              let backward = 7440L + 9280L + 128L + 48L
              // query depth → shared blocks min(2, K) → query blocks after them, no patch embedding
              for k, query in [ None, 2L * 8480L; Some 4, 2L * 8480L; Some 3, 8480L; Some 2, 0L; Some 1, 0L ] do
                  let f = Flops.count tiny4 { late with QueryDepth = k } tinyLayout 0 true
                  let what = sprintf "query depth %A" k
                  Expect.equal f.Query query (what + ": query blocks beyond the shared ones")
                  Expect.equal f.Forward forward (what + ": forward")
                  Expect.equal f.Backward backward (what + ": backward")
                  Expect.equal (FlopCount.training f) (query + forward + backward) (what + ": each block once")
              // Nothing is shared when a backbone parameter trains or an adapter touches block 0:
              // the query pass has its own patch embedding and its 3 blocks.
              for m in [ { late with QueryDepth = Some 3; Backbone = BiasTerms }; { late with QueryDepth = Some 3; AdapterReduction = Some 2 } ] do
                  Expect.equal (Flops.count tiny4 m tinyLayout 0 true).Query (12288L + 3L * 8480L) (sprintf "%A, adapter %A" m.Backbone m.AdapterReduction)
          }

          test "FLOPs agree with the profiler's count of the peer's executed products" {
              requirePeer ()
              let layout = TaskLayout.uniform 10 100
              let d, pool = 32L, 10L
              let conv = 2L * 16L * 192L * 32L
              for name in [ "vpt-deep"; "l2p"; "l2p++"; "dualprompt"; "dualprompt-coda"; "coda-prompt"; "vq-prompt"; "dual-vq"; "vpt-deep-pool"; "adapter"; "full" ] do
                  let f = Flops.count depth5Config (Methods.find name 10) layout 0 true
                  let train, infer = peerFlops name
                  // The L2P port reads the selected keys by indexing, so its similarity product
                  // gets no backward (ours pulls through cos·gather); the profiler has no formula
                  // for the convolution's backward (full fine-tuning's patch-embedding weights).
                  let expectedDifference =
                      match name with
                      | "l2p" -> 2L * d * pool
                      | "full" -> conv
                      | _ -> 0L
                  Expect.equal (FlopCount.training f - train) expectedDifference (sprintf "%s: training FLOPs/img" name)
                  Expect.equal (FlopCount.inference f) infer (sprintf "%s: inference FLOPs/img" name)
          }

          test "the peer's query pass runs --query-depth blocks, as the analytic count has it" {
              requirePeer ()
              let layout = TaskLayout.uniform 10 100
              // depth5: 32 px, patch 8 (16 patches, 17 tokens), width 32, 2 heads, MLP 128. One
              // un-prompted block: qkv 2·17·96·32 = 104448, q·kᵀ = attn·v = 2·17·17·32 = 18496,
              // proj 2·17·32·32 = 34816, fc1 = fc2 = 2·17·128·32 = 139264; patch embedding 2·16·192·32.
              let block = 104448L + 2L * 18496L + 34816L + 2L * 139264L
              Expect.equal block 454784L "block"
              for name in [ "l2p"; "dualprompt"; "coda-prompt"; "vpt-deep-pool" ] do
                  let fullTrain, fullInfer = peerFlops name
                  let train, infer = peerFlopsWith [ "--query-depth"; "2" ] name
                  // Every one of these prompts block 0, so nothing is shared: 3 query blocks fewer.
                  Expect.equal (fullInfer - infer) (3L * block) (sprintf "%s: inference, 3 blocks fewer" name)
                  Expect.equal (fullTrain - train) (3L * block) (sprintf "%s: training, 3 blocks fewer" name)
                  let f = Flops.count depth5Config { Methods.find name 10 with QueryDepth = Some 2 } layout 0 true
                  Expect.equal f.Query (2L * 16L * 192L * 32L + 2L * block) (sprintf "%s: our query count" name)
                  Expect.equal (FlopCount.inference f) infer (sprintf "%s: inference FLOPs/img" name)
                  let pull = if name = "l2p" then 2L * 32L * 10L else 0L
                  Expect.equal (FlopCount.training f - train) pull (sprintf "%s: training FLOPs/img" name)
              // Methods without a query pass ignore it.
              Expect.equal (peerFlopsWith [ "--query-depth"; "1" ] "linear") (peerFlops "linear") "linear"
          }

          test "the peer refuses a query depth outside the backbone in one line" {
              requirePeer ()
              let code, output =
                  runPeer [ "measure"; "--method"; "l2p"; "--checkpoint"; depth5; "--heads"; "2"; "--image-size"; "32"; "--query-depth"; "6"
                            "--output"; Path.Combine(tempDir (), "x.json") ]
              Expect.equal code 1 output
              expectMessage (output.Trim()) [ "--query-depth 6"; "5 blocks" ] "peer"
          }

          test "median, throughput and ratio" {
              Expect.equal (Stats.median [ 3.0; 1.0; 2.0 ]) 2.0 "odd"
              Expect.equal (Stats.median [ 4.0; 1.0; 3.0; 2.0 ]) 2.5 "even: mean of the middle two"
              Expect.isTrue (Double.IsNaN(Stats.median [])) "empty"
              Expect.equal (Stats.throughput 32 [ 2.0; 8.0; 4.0 ]) 8.0 "32 images / median 4 s"
              Expect.equal (Stats.ratio 3.0 2.0) 1.5 "ours / theirs"
              Expect.isTrue (Double.IsNaN(Stats.ratio 3.0 nan)) "missing side"
          }

          test "repeat times come from the step stamps at repeat boundaries" {
              // warm-up 2, 3 steps per repeat, 2 repeats: stamps after steps 0..7 (ticks).
              let stamps = [| 0L; 10L; 20L; 30L; 45L; 50L; 90L; 100L |] |> Array.map (fun s -> s * Stopwatch.Frequency)
              let seconds = Ours.repeatSeconds 2 3 2 stamps
              Expect.equal seconds [ 35.0; 55.0 ] "steps 2-4 (45 - 10), then 5-7 (100 - 45)"
          }

          test "VmRSS and VmHWM are read from the status text" {
              let text = "Name:\tdotnet\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
              Expect.equal (Memory.statusField text "VmHWM") (Some(200L <<< 20)) "peak"
              Expect.equal (Memory.statusField text "VmRSS") (Some(100L <<< 20)) "resident"
              Expect.equal (Memory.statusField text "VmSwap") None "absent"
              Expect.isGreaterThan (Memory.peakResidentBytes ()) 0L "this process"
          }

          test "synthetic pixels follow the documented formula" {
              let p = Synthetic.pixels 1 2
              Expect.equal p.Length 12 "1 x 3 x 2 x 2"
              Expect.equal p[0] -1.0f "i = 0"
              Expect.equal p[1] (float32 (2654435761.0 / 4294967296.0 * 2.0 - 1.0)) "i = 1"
              Expect.equal (Synthetic.labels 5 10 2) [| 10L; 11L; 10L; 11L; 10L |] "the task's classes in turn"
          }

          test "rows, ratios and MFU of the table" {
              let flops = { Query = 1_000_000_000L; Forward = 2_000_000_000L; Backward = 1_000_000_000L }
              let ours = side "prompting" [ 2.0; 2.0; 4.0 ] [ 1.0; 1.0; 1.0 ] (500L <<< 20)
              let peer = side "pytorch" [ 4.0; 4.0; 4.0 ] [ 2.0; 2.0; 2.0 ] (600L <<< 20)
              let row = BenchReport.row "l2p" flops 50.0 (Ok ours) (Ok peer)
              Expect.equal row.OursTrainImagesPerSecond 16.0 "32 / 2 s"
              Expect.equal row.TrainRatio 2.0 "16 / 8"
              Expect.equal row.InferRatio 2.0 "32 / 16"
              // 4 GFLOP/img × 16 img/s ÷ 50 GFLOP/s
              Expect.floatClose Accuracy.high row.OursTrainMfu (4.0 * 16.0 / 50.0) "train MFU"
              Expect.floatClose Accuracy.high row.OursInferMfu (3.0 * 32.0 / 50.0) "inference MFU"
              // CPU seconds are twice the wall seconds on both sides: medians 4 vs 8 s per 32 images.
              Expect.floatClose Accuracy.high row.TrainCpuRatio 2.0 "CPU-time ratio, training"
              Expect.floatClose Accuracy.high row.InferCpuRatio 2.0 "CPU-time ratio, inference"
              let failed = BenchReport.row "l2p" flops 50.0 (Ok ours) (Error "exit code 1: boom")
              Expect.isTrue (Double.IsNaN failed.TrainRatio) "no ratio without the peer"
              Expect.equal failed.PeerError (Some "exit code 1: boom") "the reason is kept"
          }

          test "the table as text, markdown and CSV" {
              let flops = { Query = 0L; Forward = 2_000_000_000L; Backward = 500_000_000L }
              let ours = side "prompting" [ 2.0 ] [ 1.0 ] (500L <<< 20)
              let rows =
                  [ BenchReport.row "l2p" flops 50.0 (Ok ours) (Ok(side "pytorch" [ 4.0 ] [ 4.0 ] (600L <<< 20)))
                    BenchReport.row "linear" flops 50.0 (Ok ours) (Error "no PyTorch") ]
              let report = reportOf rows
              let text = BenchReport.text report
              Expect.isFalse (text.Contains "query depth") "no query depth by default"
              Expect.stringContains (BenchReport.markdown { report with QueryDepth = Some 3 }) "query depth 3" "the header states the query depth"
              Expect.stringContains text "2.00x" "train ratio 16 / 8"
              Expect.stringContains text "4.00x" "inference ratio 32 / 8"
              Expect.stringContains text "500 / 600" "peak RSS in MiB"
              Expect.stringContains text "linear: PyTorch: no PyTorch" "the missing side is explained"
              let markdown = BenchReport.markdown report
              let mainTable = markdown.Substring(0, markdown.IndexOf "CPU-time ratios")
              let md = mainTable.Split('\n') |> Array.filter (fun l -> l.StartsWith "|")
              Expect.equal md.Length 4 "header, rule, 2 rows"
              Expect.stringContains markdown "| l2p | 2.00x | 4.00x |" "CPU-time ratios below the table (CPU = 2 x wall on both sides)"
              let columns (l: string) = l.Split('|').Length
              for l in md do Expect.equal (columns l) (columns md[0]) (sprintf "same column count: %s" l)
              Expect.stringContains md[2] "| l2p | 16.0 | 8.00 | 2.00x | 32.0 | 8.00 | 4.00x | 500 / 600 | 2.50 | 80.0% |" "l2p row"
              Expect.stringContains md[3] "n/a" "missing values"
              let csv = (BenchReport.csv report).TrimEnd('\n').Split('\n')
              Expect.equal csv.Length 3 "header and 2 lines"
              let header = csv[0].Split(',')
              let l2p = csv[1].Split(',')
              Expect.equal l2p.Length header.Length "as many fields as the header"
              Expect.equal l2p[Array.IndexOf(header, "train_ratio")] "2" "raw ratio"
              Expect.equal (csv[2].Split(',')[Array.IndexOf(header, "pytorch_train_img_s")]) "" "empty when missing"
          }

          test "the peer receives the method's recipe" {
              let request method : MeasureRequest =
                  { Method = method; Checkpoint = "w"; Heads = 3; ImageSize = 224; BatchSize = 32; Threads = 2; Warmup = 1; Steps = 1
                    Repeats = 3; Device = "cpu"; Tasks = 10; Classes = 100; Task = 0; Profile = false; Seed = 0; Bf16 = false
                    QueryDepth = None }
              let args m = BenchRun.peerArguments "peer.py" (request m) "out.json" None |> String.concat " "
              // L2P: Adam 0.03 × 32 / 256, clipping at 1.
              Expect.stringContains (args "l2p") "--optimizer adam --lr 0.00375 --weight-decay 0 --clip 1" "l2p"
              Expect.stringContains (args "vq-prompt") "--optimizer adamw --lr 0.0125 --weight-decay 0 --head-lr 0.0025" "vq-prompt"
              Expect.stringContains (args "vpt-deep") "--optimizer sgd --momentum 0.9" "vpt"
              Expect.stringContains (args "L2P") "--method l2p" "canonical method name"
              Expect.isFalse ((args "l2p").Contains "--query-depth") "no query depth by default"
              let deep = BenchRun.peerArguments "peer.py" { request "l2p" with QueryDepth = Some 3 } "out.json" None |> String.concat " "
              Expect.stringContains deep "--query-depth 3" "the query depth reaches the peer"
          }

          test "the child protocol: one method measured in a fresh process" {
              let dir = tempDir ()
              let request : MeasureRequest =
                  { Method = "dualprompt"; Checkpoint = depth5; Heads = 2; ImageSize = 32; BatchSize = 4; Threads = 1; Warmup = 1
                    Steps = 2; Repeats = 3; Device = "cpu"; Tasks = 10; Classes = 100; Task = 0; Profile = true; Seed = 0; Bf16 = false
                    QueryDepth = None }
              let requestPath = Path.Combine(dir, "request.json")
              File.WriteAllText(requestPath, Json.serialize request)
              let resultPath = Path.Combine(dir, "result.json")
              let code, out, err = Cli.runCli [ "bench"; "--child"; requestPath; "--child-output"; resultPath ]
              Expect.equal code 0 (out + err)
              let r = Json.deserialize<SideResult> resultPath (File.ReadAllText resultPath)
              Expect.equal r.Method "dualprompt" "method"
              Expect.equal r.TrainSeconds.Length 3 "three training repeats"
              Expect.equal r.InferSeconds.Length 3 "three inference repeats"
              Expect.isTrue (r.TrainSeconds @ r.InferSeconds |> List.forall (fun s -> s > 0.0)) "positive times"
              Expect.equal (r.TrainCpuSeconds.Length, r.InferCpuSeconds.Length) (3, 3) "CPU seconds per repeat"
              Expect.isTrue (r.TrainCpuSeconds @ r.InferCpuSeconds |> List.forall (fun s -> s > 0.0)) "positive CPU times"
              Expect.equal r.ImagesPerRepeat 8 "2 steps of 4"
              Expect.isTrue (Double.IsFinite r.Loss && r.Loss > 0.0) "trained on a finite loss"
              Expect.isGreaterThan r.BaselineRssBytes 0L "baseline RSS"
              Expect.isGreaterThanOrEqual r.PeakRssBytes r.BaselineRssBytes "peak >= baseline"
              Expect.equal (r.Phases |> List.map (fun p -> p.Name)) [ "batch to tensor"; "query pass"; "prompted forward"; "loss"; "backward"; "optimiser (clip + step)" ] "phases"
              // DualPrompt trains G (2 layers × 10 × 32) and E (3 layers × 10 tasks × 10 × 32 + keys 10 × 32) and the head.
              Expect.equal r.TrainableParameters (2L * 320L + 3L * 3200L + 320L + 32L * 100L + 100L) "trainable parameters"
          }

          test "a child that is missing its output path is refused in one line" {
              let code, _, err = Cli.runCli [ "bench"; "--child"; "request.json" ]
              Expect.equal code 1 "exit code"
              expectMessage (err.Trim()) [ "--child-output" ] "child without output"
          }

          test "bad bench options fail in one line before any work" {
              let cases =
                  [ [ "--warmup"; "0" ], [ "--warmup 0"; "at least 1" ]
                    [ "--methods"; "nope" ], [ "method nope"; "unknown" ]
                    [ "--checkpoint"; "/nonexistent/w.safetensors" ], [ "/nonexistent/w.safetensors"; "not found" ]
                    [ "--device"; "tpu" ], [ "--device tpu" ]
                    [ "--task"; "10" ], [ "--task 10"; "0..9" ]
                    [ "--arch"; "vit-huge" ], [ "vit-huge"; "unknown preset" ]
                    [ "--classes"; "5" ], [ "--classes 5" ]
                    [ "--query-depth"; "0" ], [ "--query-depth 0"; "between 1" ]
                    // the default weights are ViT-Ti (../shared or random vit-tiny): 12 blocks
                    [ "--query-depth"; "13" ], [ "--query-depth 13"; "12 blocks" ]
                    [ "--checkpoint"; depth5; "--heads"; "2"; "--query-depth"; "6" ], [ "--query-depth 6"; "5 blocks" ] ]
              for args, fragments in cases do
                  let code, _, err = Cli.runCli ("bench" :: "--no-peer" :: args)
                  Expect.equal code 1 (sprintf "%A: exit code (%s)" args err)
                  expectMessage (err.Trim()) fragments (sprintf "%A" args)
          }

          test "the peer measures a method on a tiny configuration" {
              requirePeer ()
              let out = Path.Combine(tempDir (), "peer.json")
              let code, output =
                  runPeer [ "measure"; "--method"; "coda-prompt"; "--checkpoint"; depth5; "--heads"; "2"; "--image-size"; "32"
                            "--batch-size"; "4"; "--threads"; "1"; "--steps"; "2"; "--repeats"; "2"; "--profile"; "--output"; out ]
              Expect.equal code 0 output
              let r = Json.deserialize<SideResult> out (File.ReadAllText out)
              Expect.equal r.Side "pytorch" "side"
              Expect.equal r.TrainSeconds.Length 2 "repeats"
              Expect.equal r.TrainCpuSeconds.Length 2 "CPU seconds per repeat"
              Expect.isTrue (r.TrainSeconds @ r.InferSeconds |> List.forall (fun s -> s > 0.0)) "positive times"
              Expect.isTrue (Double.IsFinite r.Loss) "finite loss"
              Expect.equal r.Phases.Length 6 "phases"
              // Task 0 of 10 trains components 0..9 of 100 (all rows are parameters) and the head.
              Expect.equal r.TrainableParameters (5L * (100L * 8L * 32L + 2L * 100L * 32L) + 32L * 100L + 100L) "parameters"
          }

          test "scripts/bench.fsx runs the bench" {
              let args =
                  [ "fsi"; Path.Combine(root, "scripts", "bench.fsx"); "--"; "--no-peer"; "--methods"; "linear"; "--checkpoint"; depth5
                    "--heads"; "2"; "--batch-size"; "2"; "--threads"; "1"; "--repeats"; "1"; "--matmul-size"; "128" ]
              let psi = ProcessStartInfo("dotnet", args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
              use p = Process.Start psi
              let err = p.StandardError.ReadToEndAsync()
              let out = p.StandardOutput.ReadToEnd()
              p.WaitForExit()
              Expect.equal p.ExitCode 0 (out + err.Result)
              Expect.stringContains out "linear" "the table's row"
              Expect.stringContains err.Result "no PyTorch peer: --no-peer" "the missing peer is said"
          }

          test "prompting bench end to end on a tiny configuration" {
              let dir = tempDir ()
              let code, out, err =
                  Cli.runCli [ "bench"; "--checkpoint"; depth5; "--heads"; "2"; "--batch-size"; "4"; "--threads"; "1"; "--repeats"; "2"
                               "--methods"; "l2p"; "linear"; "--matmul-size"; "256"; "--output"; dir ]
              Expect.equal code 0 (out + err)
              Expect.stringContains out "ours train img/s" "the table on the terminal"
              for f in [ "bench.md"; "bench.json"; "bench.csv" ] do
                  Expect.isTrue (File.Exists(Path.Combine(dir, f))) f
              let report = Json.deserialize<BenchReport> "bench.json" (File.ReadAllText(Path.Combine(dir, "bench.json")))
              Expect.equal (report.Rows |> List.map (fun r -> r.Method)) [ "l2p"; "linear" ] "rows"
              for r in report.Rows do
                  Expect.isTrue (r.OursTrainImagesPerSecond > 0.0) (sprintf "%s: ours trained" r.Method)
                  Expect.equal r.Flops (Flops.count depth5Config (Methods.find r.Method 10) (TaskLayout.uniform 10 100) 0 true) "analytic FLOPs"
                  if pythonHasTorch.Value then
                      Expect.isTrue (r.PeerTrainImagesPerSecond > 0.0) (sprintf "%s: the peer trained (%A)" r.Method r.PeerError)
              Expect.isGreaterThan report.MatmulPeakGflops 0.0 "matmul peak"
          }

          test "prompting bench --query-depth: the report, the FLOPs and the profile follow it" {
              let dir = tempDir ()
              let code, out, err =
                  Cli.runCli [ "bench"; "--no-peer"; "--checkpoint"; depth5; "--heads"; "2"; "--batch-size"; "2"; "--threads"; "1"
                               "--repeats"; "1"; "--methods"; "l2p"; "linear"; "--query-depth"; "2"; "--profile"; "--matmul-size"; "128"
                               "--output"; dir ]
              Expect.equal code 0 (out + err)
              Expect.stringContains out "query depth 2" "the header on the terminal"
              Expect.stringContains (File.ReadAllText(Path.Combine(dir, "bench.md"))) "query depth 2" "the header in bench.md"
              let report = Json.deserialize<BenchReport> "bench.json" (File.ReadAllText(Path.Combine(dir, "bench.json")))
              Expect.equal report.QueryDepth (Some 2) "recorded"
              let row name = report.Rows |> List.find (fun r -> r.Method = name)
              // patch embedding 2·16·192·32 = 196608 and 2 blocks of 454784 (see the peer test above)
              Expect.equal (row "l2p").Flops.Query (196608L + 2L * 454784L) "l2p: a query pass of 2 blocks"
              Expect.equal (row "linear").Flops.Query 0L "linear: no query pass"
              for r in report.Rows do
                  Expect.isTrue (r.OursTrainImagesPerSecond > 0.0) (sprintf "%s: ours trained (%A)" r.Method r.OursError)
              Expect.equal ((row "l2p").Ours.Value.Phases |> List.map (fun p -> p.Name) |> List.item 1) "query pass" "profiled"
          } ]
