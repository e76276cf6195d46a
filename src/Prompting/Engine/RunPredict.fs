namespace Prompting.Engine

open System
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Prompts
open Prompting.Tensors
open Prompting.Vit

/// Classifying with a trained run's model, as its class-incremental evaluation does: logits over
/// every class seen up to its last task, inputs prepared with the run's own evaluation transform.
module RunPredict =
    /// The run's evaluation transform: its image size and normalisation, timm's resize and crop.
    let transform (config: RunConfig) = Transforms.evaluation config.Normalisation Preprocessing.augreg config.ImageSize

    /// Logits over the seen classes for `count` inputs, `batchSize` at a time; `batch start n`
    /// gives the pixels of inputs start .. start + n - 1 (n × 3 × S × S floats, S the image size).
    let logits (model: PromptedModel) (device: torch.Device) (imageSize: int) (batchSize: int) (count: int) (batch: int -> int -> float32[]) =
        if batchSize < 1 then Errors.fail "batch size must be positive, got %d" batchSize
        let seen = TaskLayout.seen model.Layout model.Task
        let rows = Array.zeroCreate<float32[]> count
        use _ = torch.no_grad ()
        let mutable start = 0
        while start < count do
            let n = min batchSize (count - start)
            use scope = torch.NewDisposeScope()
            let x = torch.tensor(batch start n, ReadOnlySpan<int64> [| int64 n; 3L; int64 imageSize; int64 imageSize |]).``to`` device
            let output = model.Forward(x, false)
            let values = (Loss.evaluationLogits model.Layout model.Task output.Logits).``to``(torch.float32).cpu().contiguous().data<float32>().ToArray()
            for i in 0 .. n - 1 do rows[start + i] <- values[i * seen .. (i + 1) * seen - 1]
            start <- start + n
        rows

    /// Decodes and transforms images (in parallel on the CPU) and returns their logits.
    let onImages (model: PromptedModel) (device: torch.Device) (config: RunConfig) (batchSize: int) (files: string[]) =
        let t = transform config
        logits model device config.ImageSize batchSize files.Length (fun start n ->
            let chunk = Array.zeroCreate<float32[]> n
            try
                Threading.Tasks.Parallel.For(0, n, fun i -> chunk[i] <- t.Apply (Random 0) (Images.decode files[start + i])) |> ignore
            with :? AggregateException as e -> raise (e.Flatten().InnerExceptions[0])
            Array.concat chunk)

    /// Logits [N, seen classes] of an already-transformed (N, 3, S, S) array, S the run's image size.
    let onArray (model: PromptedModel) (device: torch.Device) (config: RunConfig) (batchSize: int) (what: string) (input: HostTensor) =
        let s = int64 config.ImageSize
        if input.Shape.Length <> 4 || input.Shape[1] <> 3L || input.Shape[2] <> s || input.Shape[3] <> s then
            Errors.fail "%s: shape %s, but the run takes [N, 3, %d, %d] (its image size, transformed as its evaluation does)"
                what (HostTensor.shapeText input.Shape) s s
        let per = 3 * config.ImageSize * config.ImageSize
        let rows = logits model device config.ImageSize batchSize (int input.Shape[0]) (fun start n -> input.Values[start * per .. (start + n) * per - 1])
        let seen = TaskLayout.seen model.Layout model.Task
        HostTensor.create [| int64 rows.Length; int64 seen |] (Array.concat rows)
