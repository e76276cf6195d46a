namespace Prompting.Cli

open Argu

/// `prompting bench`: training and inference throughput, peak memory and MFU per method, beside
/// the PyTorch eager peer (bench/peer.py).
type BenchArgs =
    | Methods of names: string list
    | [<AltCommandLine("-c")>] Checkpoint of path: string
    | Arch of name: string
    | Heads of count: int
    | Image_Size of pixels: int
    | Batch_Size of count: int
    | Threads of count: int
    | Warmup of steps: int
    | Steps of count: int
    | Repeats of count: int
    | Device of name: string
    | Tasks of count: int
    | Classes of count: int
    | Task of index: int
    | No_Peer
    | Python of path: string
    | Peer_Script of path: string
    | Profile
    | Bf16
    | Matmul_Size of n: int
    | Query_Depth of blocks: int
    | Seed of seed: int
    | [<AltCommandLine("-o")>] Output of dir: string
    /// The child-process protocol: measure one method described by a request file.
    | [<Hidden>] Child of request: string
    | [<Hidden>] Child_Output of result: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Methods _ -> "methods to measure (default: every prompt method plus linear, full and adapter)."
            | Checkpoint _ -> "ViT weights both sides load (default: ../shared's ViT-Ti, else random --arch weights)."
            | Arch _ -> "preset for random weights when no checkpoint is given (default vit-tiny)."
            | Heads _ -> "attention heads of the checkpoint (default: recorded, else width / 64)."
            | Image_Size _ -> "input resolution (default: the checkpoint's, 224)."
            | Batch_Size _ -> "images per step (default 32; use 64 for ViT-B on a GPU)."
            | Threads _ -> "intra-op threads on both sides (default: all cores)."
            | Warmup _ -> "untimed steps before timing, at least 1 (default 1)."
            | Steps _ -> "steps per timed repeat (default 1)."
            | Repeats _ -> "timed repeats; the table shows medians (default 3)."
            | Device _ -> "cpu (default) or cuda[:N]."
            | Tasks _ -> "tasks of the class split (default 10); the step trains task --task."
            | Classes _ -> "classes of the split (default 100)."
            | Task _ -> "the task being trained (default 0)."
            | No_Peer -> "skip the PyTorch peer."
            | Python _ -> "interpreter for the peer (default /usr/bin/python3)."
            | Peer_Script _ -> "the peer script (default bench/peer.py of the repository)."
            | Profile -> "also time the phases of one training step (and write torch.profiler tables to --output)."
            | Bf16 -> "bfloat16 mixed precision on both sides: our frozen backbone in bf16, the peer under torch.autocast (for CUDA)."
            | Matmul_Size _ -> "side of the matrices of the matmul peak (default 2048 on the CPU, 8192 on CUDA)."
            | Query_Depth _ -> "query from the un-prompted class token after this many blocks, 1 to the backbone's depth (default: all), on both sides; methods without a query pass are unaffected."
            | Seed _ -> "seed of prompt initialisation and random weights (default 0)."
            | Output _ -> "directory for bench.md, bench.json and bench.csv."
            | Child _ -> "internal: measure the request in this file (one method, our side)."
            | Child_Output _ -> "internal: where the child writes its result."
