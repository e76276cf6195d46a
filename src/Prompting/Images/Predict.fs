namespace Prompting

open TorchSharp
open Prompting.Tensors
open Prompting.Vit

/// What prediction returns per image.
type PredictOutput =
    /// Head outputs, (N, classes).
    | Logits
    /// Pre-logits: the final-norm class token, (N, D).
    | Features

/// Batched inference over host data, one dispose scope per batch.
module Predict =
    /// Runs `model` (already on `device`, in eval mode) over `count` inputs produced batch by batch.
    let private batched (model: VisionTransformer) (device: torch.Device) (batchSize: int) (output: PredictOutput) count (makeBatch: int -> int -> float32[]) =
        let c = model.Config
        if batchSize <= 0 then Errors.fail "batch size must be positive, got %d" batchSize
        if output = Logits && c.Classes = 0 then
            Errors.fail "the checkpoint has no classification head: ask for features instead"
        let width = match output with Logits -> c.Classes | Features -> c.Width
        let result = Array.zeroCreate<float32> (count * width)
        use _ = torch.no_grad ()
        let mutable start = 0
        while start < count do
            let n = min batchSize (count - start)
            use scope = torch.NewDisposeScope()
            let batch = torch.tensor(makeBatch start n, System.ReadOnlySpan<int64> [| int64 n; 3L; int64 c.ImageSize; int64 c.ImageSize |]).``to`` device
            // Only the class token is read: the last block computes that token alone.
            let features = model.ClassFeatures batch
            let out =
                match output with
                | Logits -> model.Head.forward features
                | Features -> features
            let values = out.cpu().contiguous().data<float32>().ToArray()
            System.Array.Copy(values, 0, result, start * width, values.Length)
            start <- start + n
        HostTensor.create [| int64 count; int64 width |] result

    /// Prepares a loaded model for inference on a device.
    let prepare (device: torch.Device) (model: VisionTransformer) =
        model.``to`` device |> ignore
        model.eval ()
        model

    /// Predicts on an already-normalised (N, 3, S, S) array.
    let onArray (model: VisionTransformer) (device: torch.Device) (batchSize: int) (output: PredictOutput) (input: HostTensor) =
        model.CheckImageShape input.Shape
        let size = model.Config.ImageSize
        let per = 3 * size * size
        batched model device batchSize output (int input.Shape[0]) (fun start n -> input.Values[start * per .. (start + n) * per - 1])

    /// Decodes and preprocesses image files (in parallel on the CPU) and predicts on them.
    let onImages (model: VisionTransformer) (device: torch.Device) (batchSize: int) (output: PredictOutput) (preprocessing: Preprocessing) (files: string[]) =
        let size = model.Config.ImageSize
        batched model device batchSize output files.Length (fun start n ->
            let chunk = Array.zeroCreate<float32[]> n
            try
                System.Threading.Tasks.Parallel.For(0, n, fun i ->
                    let file = files[start + i]
                    let image = Images.decode file
                    chunk[i] <-
                        try Images.preprocess size preprocessing image
                        with PromptingError m -> Errors.fail "%s: %s" file m) |> ignore
            with :? System.AggregateException as e ->
                // Report the first failing file as a plain error, not a wrapped one.
                raise (e.Flatten().InnerExceptions[0])
            Array.concat chunk)

    /// Indices of the k largest values, largest first (ties: lower index first).
    let topK (k: int) (row: float32[]) =
        row |> Array.mapi (fun i v -> struct (v, i)) |> Array.sortWith (fun (struct (a, i)) (struct (b, j)) -> if a <> b then compare b a else compare i j)
        |> Array.truncate k |> Array.map (fun (struct (_, i)) -> i)
