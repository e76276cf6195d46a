namespace Prompting.Cli

// Argu's Rest attribute (the sweep's `-- RUN-OPTIONS`) is marked obsolete but is the one way to take
// every remaining argument verbatim.
#nowarn "44"

open Argu

type PredictArgs =
    | [<AltCommandLine("-c")>] Checkpoint of path: string
    | Run of dir: string
    | [<AltCommandLine("-i")>] Input of npy: string
    | Images of paths: string list
    | [<Mandatory; AltCommandLine("-o")>] Output of path: string
    | Features
    | Image_Size of pixels: int
    | Heads of count: int
    | Batch_Size of count: int
    | Device of name: string
    | Crop_Pct of fraction: float
    | Mean of r: float * g: float * b: float
    | Std of r: float * g: float * b: float

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Checkpoint _ -> "ViT checkpoint: safetensors with timm key names, or Google .npz (with --run: the run's checkpoint, moved)."
            | Run _ -> "a trained run directory: its model after the last task, its image size, normalisation and evaluation transform; CSV names its classes."
            | Input _ -> "float32 .npy of shape [N,3,H,W], already normalised; OUT is an .npy of logits or features."
            | Images _ -> "JPEG/PNG files or directories; OUT is a CSV file,top1..top5 in sorted file order."
            | Output _ -> "output file (.npy for --input, .csv for --images); written only on success."
            | Features -> "write pre-logits (final-norm class token, [N,D]) instead of logits."
            | Image_Size _ -> "input resolution; position embeddings are resampled when it differs (default: the checkpoint's, or the .npy's)."
            | Heads _ -> "attention heads (default: width / 64)."
            | Batch_Size _ -> "images per forward pass (default 32)."
            | Device _ -> "cpu or cuda[:N] (default: cuda when available)."
            | Crop_Pct _ -> "--images: resize the shorter side to size / crop_pct before the center crop (default 0.9)."
            | Mean _ -> "--images: per-channel mean (default 0.5 0.5 0.5)."
            | Std _ -> "--images: per-channel std (default 0.5 0.5 0.5)."

type InfoArgs =
    | [<MainCommand; Mandatory>] Checkpoint of path: string
    | Heads of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Checkpoint _ -> "checkpoint to describe."
            | Heads _ -> "attention heads (default: width / 64)."

type ConvertArgs =
    | [<Mandatory; AltCommandLine("-c")>] Checkpoint of path: string
    | [<Mandatory; AltCommandLine("-o")>] Output of path: string
    | Image_Size of pixels: int
    | Heads of count: int
    | Classes of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Checkpoint _ -> "source checkpoint (safetensors or Google .npz)."
            | Output _ -> "destination safetensors file with timm key names."
            | Image_Size _ -> "resample position embeddings to this resolution."
            | Heads _ -> "attention heads (default: width / 64), recorded in the output's metadata."
            | Classes _ -> "replace the head with a fresh one of this many classes."

type CreateArgs =
    | Arch of name: string
    | Image_Size of pixels: int
    | Patch_Size of pixels: int
    | Depth of blocks: int
    | Width of dim: int
    | Heads of count: int
    | Classes of count: int
    | Seed of seed: int
    | [<Mandatory; AltCommandLine("-o")>] Output of path: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Arch _ -> "preset (vit-tiny, vit-small, vit-base, vit-large) or custom (default)."
            | Image_Size _ -> "input resolution."
            | Patch_Size _ -> "patch size (custom)."
            | Depth _ -> "number of blocks (custom)."
            | Width _ -> "embedding width (custom)."
            | Heads _ -> "attention heads (custom)."
            | Classes _ -> "classes of the head (0 for none; default 1000)."
            | Seed _ -> "random seed (default 0)."
            | Output _ -> "destination safetensors file."

type MethodsArgs =
    | Checkpoint of path: string
    | Arch of name: string
    | Tasks of count: int
    | Classes of count: int
    | Heads of count: int
    | Details

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Details -> "instead of parameter counts: each method's head, what predicts, when it adapts, and its recipe."
            | Checkpoint _ -> "count for the architecture of this checkpoint."
            | Arch _ -> "count for a preset architecture (default vit-base-patch16-224)."
            | Tasks _ -> "number of tasks (default 10); sets pool sizes that equal it."
            | Classes _ -> "number of classes (default 100)."
            | Heads _ -> "attention heads when reading a checkpoint."

type ForwardArgs =
    | [<Mandatory; AltCommandLine("-m")>] Method of name: string
    | [<Mandatory; AltCommandLine("-c")>] Checkpoint of path: string
    | State of path: string
    | [<Mandatory; AltCommandLine("-i")>] Input of npy: string
    | Labels of npy: string
    | Task of index: int
    | Tasks of count: int
    | Classes of count: int
    | Train
    | Heads of count: int
    | Seed of seed: int
    | Device of name: string
    | [<Mandatory; AltCommandLine("-o")>] Output of path: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Method _ -> "method name (see `prompting methods`)."
            | Checkpoint _ -> "backbone checkpoint."
            | State _ -> "trainable state (safetensors with the documented names); random init otherwise."
            | Input _ -> "float32 .npy [N,3,S,S], already normalised."
            | Labels _ -> ".npy of N integer labels: the output then holds the training loss."
            | Task _ -> "current task index (default: the state's, else 0)."
            | Tasks _ -> "number of tasks (default 10)."
            | Classes _ -> "number of classes (default: the state's head, else 100)."
            | Train -> "training-mode forward (task-id conditioning, auxiliary losses)."
            | Heads _ -> "attention heads (default width / 64)."
            | Seed _ -> "seed for parameters the state does not provide (default 0)."
            | Device _ -> "cpu or cuda[:N] (default: cuda when available)."
            | Output _ -> ".npz with features, logits, aux_loss, loss (with --labels) and chosen."

type RunArgs =
    | [<AltCommandLine("-m")>] Method of name: string
    | [<AltCommandLine("-b")>] Benchmark of name: string
    | Data of path: string
    | [<AltCommandLine("-c")>] Checkpoint of path: string
    | Tasks of count: int
    | Epochs of count: int
    | Batch_Size of count: int
    | Lr of rate: float
    | Image_Size of pixels: int
    | Seed of seed: int
    | Device of name: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Train_Per_Class of count: int
    | Test_Per_Class of count: int
    | Config of path: string
    | Scenario of kind: string
    | Split of name: string
    | Class_Order of order: string
    | Heads of count: int
    | Skip_Corrupt
    | Unit_Range
    | Query_Depth of blocks: int
    | Head of kind: string
    | Adapt of schedule: string
    | Bf16
    | Accept_Recipe_Change
    | Validation of fraction: float

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Head _ -> "what predicts: linear (the trained head), prototype (class means), ridge or ridge:M (a random projection to M = 10000, or M, + ridge regression, RanPAC) or aligned (head re-trained on sampled class statistics: the method's own alignment, else SLCA's); the loss still trains the method's own head."
            | Adapt _ -> "when the trainable parts learn: every-task (default), first-task (frozen after it, as APER and RanPAC) or slow-learner (every task, all but the head at 1/100 of the head's rate, as SLCA)."
            | Accept_Recipe_Change -> "resume although --lr, --epochs, --batch-size or --bf16 differ from the run's recipe (recorded in config.json and the log)."
            | Method _ -> "prompt method or baseline (see `prompting methods`)."
            | Benchmark _ -> "a registered benchmark: imagenet-r, cifar100, domainnet, ... (see `prompting benchmarks`)."
            | Data _ -> "the benchmark's data (`prompting benchmarks NAME` says what goes where)."
            | Checkpoint _ -> "pretrained ViT checkpoint (safetensors or npz)."
            | Tasks _ -> "number of tasks (default: the benchmark's)."
            | Epochs _ -> "epochs per task (default: the method's recipe)."
            | Batch_Size _ -> "batch size (default: the method's recipe, 128)."
            | Lr _ -> "base learning rate (default: the method's recipe)."
            | Image_Size _ -> "input resolution (default: the checkpoint's); lower is faster on a CPU."
            | Seed _ -> "seed for class order, subsets, initialisation and shuffling (default 0)."
            | Device _ -> "cpu or cuda[:N] (default: cuda when available)."
            | Out _ -> "run directory (default runs/<method>-<benchmark>-s<seed>); an existing one is resumed."
            | Train_Per_Class _ -> "seeded subset: training images per class."
            | Test_Per_Class _ -> "seeded subset: test images per class."
            | Config _ -> "run configuration JSON (as written to a run's config.json); flags override it."
            | Scenario _ -> "class (default), task, domain (benchmark domains) or joint."
            | Split _ -> "a named train/test split of the benchmark, e.g. coda or seeded for imagenet-r (default: the benchmark's)."
            | Class_Order _ -> "natural, seed:K (default seed:<seed>), pilot-K (LAMDA-PILOT's, e.g. pilot-1993), coda-K, numpy:K, python:K, or a file of class indices."
            | Heads _ -> "attention heads of the checkpoint (default width / 64)."
            | Skip_Corrupt -> "skip unreadable or non-image files (listed in the log) instead of stopping."
            | Unit_Range -> "feed pixels in [0, 1] without normalisation (the CODA-Prompt code's convention)."
            | Query_Depth _ -> "query from the un-prompted class token after this many blocks (default: all; fewer is faster)."
            | Bf16 -> "run the frozen backbone in bfloat16 (prompts and head stay float32); meant for CUDA."
            | Validation _ -> "hold out this seeded fraction of each class's training data and evaluate on it, never on the test set (to choose hyperparameters)."

type EvalArgs =
    | [<Mandatory>] Run of dir: string
    | Device of name: string
    | Checkpoint of path: string
    | Data of path: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Run _ -> "run directory to evaluate again from its saved per-task state."
            | Device _ -> "cpu or cuda[:N]."
            | Checkpoint _ -> "the run's checkpoint, moved (its SHA-256 must be the one the run recorded)."
            | Data _ -> "the run's data, moved (its index must be the one the run recorded in scenario.json)."

type BenchmarksArgs =
    | [<MainCommand>] Name of name: string
    | Names_Only
    | Data of path: string
    | Split of name: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Name _ -> "one benchmark: which files to put where; with --data, check them."
            | Names_Only -> "print only the benchmark names."
            | Data _ -> "the data to check (as `run --data` takes it)."
            | Split _ -> "the split to check (default: the benchmark's)."

type ReportArgs =
    | [<MainCommand; Mandatory>] Runs of dirs: string list
    | [<AltCommandLine("-o")>] Output of path: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Runs _ -> "run directories to compare (methods x seeds)."
            | Output _ -> "HTML comparison report (default comparison.html)."

type PretrainArgs =
    | [<AltCommandLine("-b")>] Benchmark of name: string
    | Data of path: string
    | Image_Size of pixels: int
    | Patch_Size of pixels: int
    | Depth of blocks: int
    | Width of dim: int
    | Heads of count: int
    | Decoder_Width of dim: int
    | Decoder_Depth of blocks: int
    | Decoder_Heads of count: int
    | Mask_Ratio of fraction: float
    | Epochs of count: int
    | Batch_Size of count: int
    | Lr of rate: float
    | Images of count: int
    | Crop_Scale of fraction: float
    | No_Flip
    | Seed of seed: int
    | Cache_Dir of dir: string
    | Force
    | [<AltCommandLine("-o")>] Output of path: string
    | Device of name: string
    | Threads of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Threads _ -> "libtorch threads (default: all cores when they are idle at the start, else 1)."
            | Benchmark _ -> "whose training images to learn from, without labels (default fashion-mnist; see `prompting benchmarks`)."
            | Data _ -> "the benchmark's data (as for `run`)."
            | Image_Size _ -> "input resolution of the backbone (default 28)."
            | Patch_Size _ -> "patch size (default 4)."
            | Depth _ -> "encoder blocks (default 5)."
            | Width _ -> "encoder width, a multiple of 4 (default 96)."
            | Heads _ -> "encoder attention heads (default 3)."
            | Decoder_Width _ -> "decoder width, a multiple of 4 (default 64)."
            | Decoder_Depth _ -> "decoder blocks (default 2)."
            | Decoder_Heads _ -> "decoder attention heads (default 2)."
            | Mask_Ratio _ -> "share of patches hidden from the encoder (default 0.75)."
            | Epochs _ -> "passes over the images (default 3)."
            | Batch_Size _ -> "images per step (default 128)."
            | Lr _ -> "peak AdamW learning rate after warm-up, cosine to 0 (default 0.0015)."
            | Images _ -> "use at most this many training images, a seeded subset (default 20000)."
            | Crop_Scale _ -> "smallest RandomResizedCrop area fraction (default 0.2; 1 = whole image)."
            | No_Flip -> "no random horizontal flips."
            | Seed _ -> "seed of initialisation, shuffling, crops and masks (default 0)."
            | Cache_Dir _ -> "backbone cache (default $XDG_CACHE_HOME/prompting/backbones or ~/.cache/prompting/backbones)."
            | Force -> "pretrain again even when the cache holds this configuration's backbone."
            | Output _ -> "also copy the checkpoint to this file."
            | Device _ -> "cpu or cuda[:N] (default: cuda when available)."

type DemoArgs =
    | [<AltCommandLine("-o")>] Out of dir: string
    | Data of dir: string
    | Cache_Dir of dir: string
    | Device of name: string
    | Threads of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Threads _ -> "libtorch threads (default: all cores when they are idle at the start, else 1)."
            | Out _ -> "where the runs and report.html go (default out/demo); each demo replaces its earlier runs there."
            | Data _ -> "a directory with the four Fashion-MNIST IDX files (default: installed, cached, or fetched)."
            | Cache_Dir _ -> "backbone cache (default $XDG_CACHE_HOME/prompting/backbones or ~/.cache/prompting/backbones)."
            | Device _ -> "cpu or cuda[:N] (default: cuda when available)."

type SweepStatusArgs =
    | [<MainCommand; Mandatory>] Dir of dir: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Dir _ -> "sweep directory."

type SweepArgs =
    | [<CliPrefix(CliPrefix.None)>] Status of ParseResults<SweepStatusArgs>
    | [<AltCommandLine("-f")>] File of path: string
    | Methods of names: string list
    | Seeds of seeds: int list
    | Grid of assignment: string
    | Executor of kind: string
    | [<AltCommandLine("-o")>] Out of dir: string
    | Parallel of count: int
    | No_Wait
    | Poll of seconds: float
    | Partition of name: string
    | Time of limit: string
    | Cpus_Per_Task of count: int
    | Mem of size: string
    | Gres of spec: string
    | Sbatch_Line of line: string
    | Select of fraction: float
    | Select_Split of name: string
    | [<Rest; CustomCommandLine("--")>] Run_Options of option: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Status _ -> "per point: pending, running, finished or failed (with the last line of its log)."
            | File _ -> "sweep file (JSON: base, run, methods, seeds, grid, select, selectSplit); flags add to it (see docs/sweeps.md)."
            | Methods _ -> "methods to run (see `prompting methods`)."
            | Seeds _ -> "seeds to run each method and grid point with."
            | Grid _ -> "FIELD=V1,V2,...: a run-configuration field by its JSON path (Method.Recipe.LearningRate, Method.Groups[0].Length) and its values; repeatable."
            | Executor _ -> "local (default) or slurm."
            | Out _ -> "sweep directory: runs/<point>/, logs/, results.{md,csv,json}, report.html."
            | Parallel _ -> "local: points at once, CPU threads split between them (default 1); slurm: the array's concurrency limit (default none)."
            | No_Wait -> "slurm: submit and return; `sweep status` shows progress, the same sweep again collects."
            | Poll _ -> "slurm: seconds between two squeue polls (default 30)."
            | Partition _ -> "slurm: --partition."
            | Time _ -> "slurm: --time limit per point (e.g. 04:00:00)."
            | Cpus_Per_Task _ -> "slurm: --cpus-per-task (also the points' libtorch threads)."
            | Mem _ -> "slurm: --mem per point (e.g. 16G)."
            | Gres _ -> "slurm: --gres (e.g. gpu:1)."
            | Sbatch_Line _ -> "slurm: an extra #SBATCH line (e.g. --qos=long); repeatable."
            | Select _ -> "choose each method's grid point on this held-out fraction of the training data (DIR/selection), then run it on all data with every seed."
            | Select_Split _ -> "choose each method's grid point on this split of the benchmark (tune: train800 vs val200, FGVC train vs val; DIR/selection), then run it on the final split with every seed (VPT's protocol)."
            | Run_Options _ -> "after --: options of `prompting run` every point shares (benchmark, data, checkpoint, tasks, epochs, ...)."

[<RequireSubcommand>]
type CliArgs =
    | [<CliPrefix(CliPrefix.None)>] Predict of ParseResults<PredictArgs>
    | [<CliPrefix(CliPrefix.None)>] Info of ParseResults<InfoArgs>
    | [<CliPrefix(CliPrefix.None)>] Convert of ParseResults<ConvertArgs>
    | [<CliPrefix(CliPrefix.None)>] Create of ParseResults<CreateArgs>
    | [<CliPrefix(CliPrefix.None)>] Methods of ParseResults<MethodsArgs>
    | [<CliPrefix(CliPrefix.None)>] Forward of ParseResults<ForwardArgs>
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<RunArgs>
    | [<CliPrefix(CliPrefix.None)>] Eval of ParseResults<EvalArgs>
    | [<CliPrefix(CliPrefix.None)>] Benchmarks of ParseResults<BenchmarksArgs>
    | [<CliPrefix(CliPrefix.None)>] Report of ParseResults<ReportArgs>
    | [<CliPrefix(CliPrefix.None)>] Bench of ParseResults<BenchArgs>
    | [<CliPrefix(CliPrefix.None)>] Pretrain of ParseResults<PretrainArgs>
    | [<CliPrefix(CliPrefix.None)>] Demo of ParseResults<DemoArgs>
    | [<CliPrefix(CliPrefix.None)>] Sweep of ParseResults<SweepArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Predict _ -> "classify images or arrays with a ViT checkpoint, or extract features."
            | Info _ -> "print the architecture a checkpoint describes."
            | Convert _ -> "import a checkpoint (npz or safetensors) and export it as timm-named safetensors."
            | Create _ -> "write a randomly initialised ViT checkpoint (a preset or a custom size)."
            | Methods _ -> "list the prompt methods with their trainable parameter counts."
            | Forward _ -> "run a prompted model on an array: features, logits and losses (for side-by-side checks)."
            | Run _ -> "train and evaluate a method on a continual benchmark (resumable)."
            | Eval _ -> "evaluate a run again from its saved state."
            | Benchmarks _ -> "list the benchmarks."
            | Report _ -> "compare runs: a table and an HTML report."
            | Bench _ -> "measure training and inference speed, memory and MFU per method beside PyTorch eager."
            | Pretrain _ -> "pretrain a small ViT without labels (MAE) on a benchmark's training images; cached."
            | Sweep _ -> "run methods x seeds x a grid of configuration overrides, locally or on Slurm, and aggregate (docs/sweeps.md)."
            | Demo _ -> "the offline demo: pretrain (or reuse) a backbone, compare prompt methods with fine-tuning on Split Fashion-MNIST."
