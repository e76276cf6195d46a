namespace Prompting.Pretrain

open System
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Vit

/// The pretraining images decoded once into one byte tensor (N, 3, S, S), so each step is a
/// gather and a few tensor operations instead of per-image managed decoding.
[<Sealed>]
type ImageBank(pixels: torch.Tensor, count: int, size: int) =
    member _.Count = count
    member _.Size = size

    /// The images at `indices`, as floats normalised like `run` feeds them ((v / 255 − 0.5) / 0.5).
    member _.Batch(indices: int[], device: torch.Device) =
        use index = torch.tensor (indices |> Array.map int64)
        use bytes = pixels.index_select (0L, index)
        use onDevice = bytes.``to`` device
        let scaled = onDevice.to_type torch.float32
        scaled.div_(127.5.ToScalar()).sub_ (1.0.ToScalar()) |> ignore
        scaled

    interface IDisposable with
        member _.Dispose() = pixels.Dispose()

module ImageBank =
    /// Decodes every image, resized to size × size (bicubic) when it is not already that size.
    let ofImages (size: int) (loads: (unit -> RgbImage)[]) =
        let plane = size * size
        let bytes = Array.zeroCreate<byte> (loads.Length * 3 * plane)
        loads
        |> Array.iteri (fun i load ->
            let image = load ()
            let image = if image.Width = size && image.Height = size then image else Images.resizeBicubic size size image
            let start = i * 3 * plane
            for k in 0 .. plane - 1 do
                bytes[start + k] <- image.Pixels[k * 3]
                bytes[start + plane + k] <- image.Pixels[k * 3 + 1]
                bytes[start + 2 * plane + k] <- image.Pixels[k * 3 + 2])
        new ImageBank(torch.tensor (bytes, ReadOnlySpan<int64> [| int64 loads.Length; 3L; int64 size; int64 size |]), loads.Length, size)

/// Random views of a batch on the tensor side: a RandomResizedCrop (area fraction and log-uniform
/// aspect ratio as torchvision draws them, bilinear resampling) and a mirror, per image.
module Views =
    /// The affine map (2 × 3, normalised coordinates) of one crop: w × h of the image (fractions)
    /// centred at (cx, cy), mirrored when `flip`.
    let cropTheta (w: float) (h: float) (cx: float) (cy: float) (flip: bool) =
        [| (if flip then -w else w); 0.0; cx; 0.0; h; cy |]

    /// Draws one crop: area in [scaleMin, 1], aspect ratio in [3/4, 4/3], inside the image.
    let drawCrop (rng: Random) (scaleMin: float) (flip: bool) =
        let area = scaleMin + (1.0 - scaleMin) * rng.NextDouble()
        let ratio = exp (log (3.0 / 4.0) + (log (4.0 / 3.0) - log (3.0 / 4.0)) * rng.NextDouble())
        let w = min 1.0 (sqrt (area * ratio))
        let h = min 1.0 (sqrt (area / ratio))
        let cx = (1.0 - w) * (2.0 * rng.NextDouble() - 1.0)
        let cy = (1.0 - h) * (2.0 * rng.NextDouble() - 1.0)
        cropTheta w h cx cy (flip && rng.NextDouble() < 0.5)

    /// One random view of every image in the batch (B, C, S, S).
    let random (rng: Random) (scaleMin: float) (flip: bool) (images: torch.Tensor) =
        let b = int images.shape[0]
        let thetas = Array.init b (fun _ -> drawCrop rng scaleMin flip) |> Array.concat |> Array.map float32
        use theta = torch.tensor (thetas, ReadOnlySpan<int64> [| int64 b; 2L; 3L |])
        use onDevice = theta.``to`` images.device
        use grid = torch.nn.functional.affine_grid (onDevice, images.shape, false)
        torch.nn.functional.grid_sample (images, grid, torch.GridSampleMode.Bilinear, torch.GridSamplePaddingMode.Border, false)
