namespace Prompting.Data

open System
open Prompting
open Prompting.Vit

/// How pixel values are scaled in the float output.
type PixelScale =
    /// v / 255, then (· - mean) / std with the Preprocessing's statistics (timm's convention).
    | Normalised
    /// v / 255 only, pixels in [0, 1] (the CODA-Prompt code's convention: the backbone wrapper
    /// normalises, or the model was trained on unnormalised input).
    | UnitRange

/// A per-image transform to CHW float32 of 3 × Size × Size. Random choices are drawn from the
/// generator it is given (the loader gives each sample one of its own, seeded by seed, epoch and
/// index), never from a shared one.
[<NoEquality; NoComparison>]
type Transform =
    { Size: int
      Apply: Random -> RgbImage -> float32[] }

/// A rectangle of an image: rows Top .. Top + Height - 1, columns Left .. Left + Width - 1.
type CropBox =
    { Top: int
      Left: int
      Height: int
      Width: int }

/// Image transforms with torchvision's semantics, on 8-bit RGB images; resampling is PIL's
/// bicubic (through Images, bit-exact with PIL).
module Transforms =
    /// torchvision RandomResizedCrop defaults.
    let defaultScale = (0.08, 1.0)
    let defaultRatio = (3.0 / 4.0, 4.0 / 3.0)

    /// torchvision Resize(int): the shorter side becomes `size` (bicubic).
    let resize (size: int) (img: RgbImage) = Images.resizeShorter size img

    /// torchvision CenterCrop (offsets rounded half to even).
    let centerCrop (size: int) (img: RgbImage) = Images.centerCrop size img

    /// Cuts a rectangle that lies inside the image.
    let crop (box: CropBox) (img: RgbImage) =
        if box.Top < 0 || box.Left < 0 || box.Height <= 0 || box.Width <= 0
           || box.Top + box.Height > img.Height || box.Left + box.Width > img.Width then
            Errors.fail "crop %dx%d at (%d, %d) does not fit in an image of %dx%d" box.Width box.Height box.Left box.Top img.Width img.Height
        let out = Array.zeroCreate<byte> (box.Width * box.Height * 3)
        for y in 0 .. box.Height - 1 do
            Buffer.BlockCopy(img.Pixels, ((box.Top + y) * img.Width + box.Left) * 3, out, y * box.Width * 3, box.Width * 3)
        { Width = box.Width; Height = box.Height; Pixels = out }

    /// torchvision RandomResizedCrop.get_params: up to 10 attempts at a box of a random area
    /// fraction in `scale` and a log-uniform aspect ratio in `ratio` that fits in the image, with
    /// a random position; otherwise the whole image center-cropped to the nearest allowed ratio.
    /// Python's round (half to even) is reproduced.
    let randomResizedCropBox (rng: Random) (scale: float * float) (ratio: float * float) (width: int) (height: int) =
        let sMin, sMax = scale
        let rMin, rMax = ratio
        if sMin > sMax || rMin > rMax || sMin < 0.0 || rMin <= 0.0 then
            Errors.fail "random resized crop: invalid scale (%g, %g) or ratio (%g, %g)" sMin sMax rMin rMax
        let area = float (width * height)
        let logMin, logMax = log rMin, log rMax
        let uniform a b = a + (b - a) * rng.NextDouble()
        let round (v: float) = int (Math.Round(v, MidpointRounding.ToEven))
        let rec attempt k =
            if k = 10 then None
            else
                let target = area * uniform sMin sMax
                let aspect = exp (uniform logMin logMax)
                let w = round (sqrt (target * aspect))
                let h = round (sqrt (target / aspect))
                if 0 < w && w <= width && 0 < h && h <= height then
                    let top = rng.Next(height - h + 1)
                    let left = rng.Next(width - w + 1)
                    Some { Top = top; Left = left; Height = h; Width = w }
                else attempt (k + 1)
        match attempt 0 with
        | Some box -> box
        | None ->
            let inRatio = float width / float height
            let w, h =
                if inRatio < rMin then width, round (float width / rMin)
                elif inRatio > rMax then round (float height * rMax), height
                else width, height
            { Top = (height - h) / 2; Left = (width - w) / 2; Height = h; Width = w }

    /// RandomResizedCrop to size × size (bicubic) with the given scale and ratio ranges.
    let randomResizedCropWith (rng: Random) (scale: float * float) (ratio: float * float) (size: int) (img: RgbImage) =
        let box = randomResizedCropBox rng scale ratio img.Width img.Height
        img |> crop box |> Images.resizeBicubic size size

    /// RandomResizedCrop(size) with torchvision's defaults: scale (0.08, 1), ratio (3/4, 4/3).
    let randomResizedCrop (rng: Random) (size: int) (img: RgbImage) =
        randomResizedCropWith rng defaultScale defaultRatio size img

    /// Mirror image (left-right).
    let hflip (img: RgbImage) =
        let out = Array.zeroCreate<byte> img.Pixels.Length
        for y in 0 .. img.Height - 1 do
            let row = y * img.Width
            for x in 0 .. img.Width - 1 do
                let s = (row + x) * 3
                let d = (row + img.Width - 1 - x) * 3
                out[d] <- img.Pixels[s]
                out[d + 1] <- img.Pixels[s + 1]
                out[d + 2] <- img.Pixels[s + 2]
        { img with Pixels = out }

    /// torchvision RandomHorizontalFlip(p): flips when a uniform draw is below p.
    let randomHorizontalFlip (rng: Random) (p: float) (img: RgbImage) =
        if rng.NextDouble() < p then hflip img else img

    /// To CHW float32: v / 255, normalised with the Preprocessing's mean and std unless UnitRange.
    /// The values are exactly Images.normalize's (the same float32 expression), taken from a
    /// 256-entry table per channel built once: the partial application is the fast path.
    let toFloat (scale: PixelScale) (p: Preprocessing) : RgbImage -> float32[] =
        let p =
            match scale with
            | Normalised -> p
            | UnitRange -> { p with Mean = [| 0.0f; 0.0f; 0.0f |]; Std = [| 1.0f; 1.0f; 1.0f |] }
        if p.Mean.Length <> 3 || p.Std.Length <> 3 then
            Errors.fail "normalisation needs 3 means and 3 standard deviations, got %d and %d" p.Mean.Length p.Std.Length
        let table = Array.init 3 (fun ch -> Array.init 256 (fun v -> (float32 v / 255.0f - p.Mean[ch]) / p.Std[ch]))
        let r, g, b = table[0], table[1], table[2]
        fun img ->
            let plane = img.Width * img.Height
            let px = img.Pixels
            let out = Array.zeroCreate<float32> (3 * plane)
            for i in 0 .. plane - 1 do
                out[i] <- r[int px[i * 3]]
                out[plane + i] <- g[int px[i * 3 + 1]]
                out[2 * plane + i] <- b[int px[i * 3 + 2]]
            out

    let private checkSize (size: int) =
        if size <= 0 then Errors.fail "image size must be positive, got %d" size

    /// The training transform: RandomResizedCrop(size, bicubic), RandomHorizontalFlip(0.5), to float.
    let training (scale: PixelScale) (p: Preprocessing) (size: int) : Transform =
        checkSize size
        let toFloat = toFloat scale p
        { Size = size
          Apply = fun rng img -> img |> randomResizedCrop rng size |> randomHorizontalFlip rng 0.5 |> toFloat }

    /// timm's evaluation transform: shorter side to floor(size / crop_pct) (bicubic), center crop
    /// size, to float. With Normalised it equals Images.preprocess. Uses no randomness.
    let evaluation (scale: PixelScale) (p: Preprocessing) (size: int) : Transform =
        checkSize size
        let toFloat = toFloat scale p
        let target = Preprocessing.resizeTarget size p
        { Size = size
          Apply = fun _ img -> img |> resize target |> centerCrop size |> toFloat }
