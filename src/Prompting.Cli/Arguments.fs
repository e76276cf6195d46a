namespace Prompting.Cli

open Argu

type PredictArgs =
    | [<Mandatory; AltCommandLine("-c")>] Checkpoint of path: string
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
            | Checkpoint _ -> "ViT checkpoint: safetensors with timm key names, or Google .npz."
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

    interface IArgParserTemplate with
        member this.Usage =
            match this with
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

[<RequireSubcommand>]
type CliArgs =
    | [<CliPrefix(CliPrefix.None)>] Predict of ParseResults<PredictArgs>
    | [<CliPrefix(CliPrefix.None)>] Info of ParseResults<InfoArgs>
    | [<CliPrefix(CliPrefix.None)>] Convert of ParseResults<ConvertArgs>
    | [<CliPrefix(CliPrefix.None)>] Create of ParseResults<CreateArgs>
    | [<CliPrefix(CliPrefix.None)>] Methods of ParseResults<MethodsArgs>
    | [<CliPrefix(CliPrefix.None)>] Forward of ParseResults<ForwardArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Predict _ -> "classify images or arrays with a ViT checkpoint, or extract features."
            | Info _ -> "print the architecture a checkpoint describes."
            | Convert _ -> "import a checkpoint (npz or safetensors) and export it as timm-named safetensors."
            | Create _ -> "write a randomly initialised ViT checkpoint (a preset or a custom size)."
            | Methods _ -> "list the prompt methods with their trainable parameter counts."
            | Forward _ -> "run a prompted model on an array: features, logits and losses (for side-by-side checks)."
