namespace Prompting

open System
open System.IO
open StbImageSharp
open Prompting.Vit

/// An 8-bit RGB image in row-major HWC order.
[<NoEquality; NoComparison>]
type RgbImage =
    { Width: int
      Height: int
      Pixels: byte[] }

/// Decoding and timm's evaluation transform (PIL bicubic resize of the shorter side, center crop,
/// scale to [0, 1], normalise), reproduced in-process.
module Images =
    let extensions = set [ ".jpg"; ".jpeg"; ".png"; ".bmp"; ".gif"; ".tga" ]

    let isImageFile (path: string) =
        extensions.Contains(Path.GetExtension(path).ToLowerInvariant())

    /// The most pixels an image may have (8192 x 8192): checked from the header before decoding,
    /// so a tiny file that claims huge dimensions allocates nothing.
    let maxPixels = 1L <<< 26

    /// The most the longer side may exceed the shorter one (a 1 x 12,000 strip is not a photo;
    /// resizing its shorter side to the model's size would make a gigantic image).
    let maxAspect = 100L

    /// Width and height from the header, checked against the budgets.
    let private checkHeader (name: string) (bytes: byte[]) =
        let info =
            try
                use stream = new MemoryStream(bytes, false)
                ImageInfo.FromStream stream
            with e -> Errors.fail "%s: cannot decode image (%s)" name e.Message
        if not info.HasValue then Errors.fail "%s: cannot decode image (unknown format or corrupt header)" name
        let w, h = int64 info.Value.Width, int64 info.Value.Height
        if w <= 0L || h <= 0L then Errors.fail "%s: cannot decode image (invalid size %dx%d in the header)" name w h
        if w * h > maxPixels then
            Errors.fail "%s: image of %dx%d claims %d pixels, over the budget of %d" name w h (w * h) maxPixels
        if max w h > maxAspect * min w h then
            Errors.fail "%s: image of %dx%d has an extreme aspect ratio (at most %d:1 is accepted)" name w h maxAspect
        w, h

    /// Decodes strictly: the header's size within the budgets, the container complete (no
    /// truncated JPEG, PNG or BMP; see ImageContainers), then stb_image, whose errors are kept.
    let decodeBytes (name: string) (bytes: byte[]) =
        let w, h = checkHeader name bytes
        ImageContainers.problem bytes |> Option.iter (fun problem -> Errors.fail "%s: cannot decode image (%s)" name problem)
        let image =
            try ImageResult.FromMemory(bytes, ColorComponents.RedGreenBlue)
            with e -> Errors.fail "%s: cannot decode image (%s)" name e.Message
        if isNull image || image.Width <= 0 || image.Height <= 0 then Errors.fail "%s: cannot decode image" name
        if int64 image.Width <> w || int64 image.Height <> h || int64 image.Data.Length <> w * h * 3L then
            Errors.fail "%s: cannot decode image (decoded %dx%d, the header says %dx%d)" name image.Width image.Height w h
        { Width = image.Width; Height = image.Height; Pixels = image.Data }

    let decode (path: string) =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        // No image format needs more than 4 bytes a pixel (uncompressed 32-bit BMP).
        let length = FileInfo(path).Length
        if length > 4L * maxPixels + (16L <<< 20) then
            Errors.fail "%s: an image file of %d bytes is over the budget (an image has at most %d pixels)" path length maxPixels
        let bytes =
            try File.ReadAllBytes path
            with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message
        decodeBytes path bytes

    /// PIL's bicubic kernel (a = -0.5).
    let private cubic (x: float) =
        let a = -0.5
        let x = abs x
        if x < 1.0 then ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        elif x < 2.0 then (((x - 5.0) * x + 8.0) * x - 4.0) * a
        else 0.0

    /// PIL's fixed-point precision for 8-bit resampling: weights are integers scaled by 2^22.
    let private precisionBits = 22

    /// For each output index: first input index and normalised weights in PIL's fixed point. When
    /// shrinking, the kernel is stretched by the scale (antialiasing), exactly as PIL's resampling
    /// does. The arithmetic follows PIL's precompute_coeffs / normalize_coeffs_8bpc step by step
    /// (including multiplying by 1 / filterScale rather than dividing), so the results match bit
    /// for bit; double-precision accumulation instead differs by one level at some exact .5 ties.
    let private coefficients (inSize: int) (outSize: int) =
        let scale = float inSize / float outSize
        let filterScale = max scale 1.0
        let support = 2.0 * filterScale
        let invScale = 1.0 / filterScale
        let one = float (1 <<< precisionBits)
        let toFixed (v: float) = if v < 0.0 then int (-0.5 + v * one) else int (0.5 + v * one)
        Array.init outSize (fun i ->
            let center = (float i + 0.5) * scale
            let lo = max 0 (int (center - support + 0.5))
            let hi = min inSize (int (center + support + 0.5))
            let w = Array.init (hi - lo) (fun j -> cubic ((float (lo + j) - center + 0.5) * invScale))
            let total = Array.sum w
            lo, (w |> Array.map (fun v -> toFixed (if total <> 0.0 then v / total else v))))

    /// PIL's clip8: the accumulator starts at one half, so the shift rounds to nearest.
    let private clip8 (acc: int) =
        if acc >= (1 <<< precisionBits <<< 8) then 255uy
        elif acc <= 0 then 0uy
        else byte (acc >>> precisionBits)

    /// Separable bicubic resize, horizontal pass then vertical, rounding to 8 bits after each pass,
    /// in the same integer arithmetic as PIL's 8-bit resampling.
    let resizeBicubic (outWidth: int) (outHeight: int) (img: RgbImage) =
        let half = 1 <<< (precisionBits - 1)
        let horizontal =
            if outWidth = img.Width then img.Pixels
            else
                let coeffs = coefficients img.Width outWidth
                let out = Array.zeroCreate<byte> (outWidth * img.Height * 3)
                for y in 0 .. img.Height - 1 do
                    for x in 0 .. outWidth - 1 do
                        let lo, w = coeffs[x]
                        for ch in 0 .. 2 do
                            let mutable s = half
                            for j in 0 .. w.Length - 1 do
                                s <- s + w[j] * int img.Pixels[(y * img.Width + lo + j) * 3 + ch]
                            out[(y * outWidth + x) * 3 + ch] <- clip8 s
                out
        let vertical =
            if outHeight = img.Height then horizontal
            else
                let coeffs = coefficients img.Height outHeight
                let out = Array.zeroCreate<byte> (outWidth * outHeight * 3)
                for y in 0 .. outHeight - 1 do
                    let lo, w = coeffs[y]
                    for x in 0 .. outWidth - 1 do
                        for ch in 0 .. 2 do
                            let mutable s = half
                            for j in 0 .. w.Length - 1 do
                                s <- s + w[j] * int horizontal[((lo + j) * outWidth + x) * 3 + ch]
                            out[(y * outWidth + x) * 3 + ch] <- clip8 s
                out
        { Width = outWidth; Height = outHeight; Pixels = vertical }

    /// torchvision Resize(int): the shorter side becomes `size`, the longer keeps the aspect ratio.
    /// The result must fit the pixel budget (extreme aspect ratios or sizes are an error, never
    /// an overflowing buffer).
    let resizeShorter (size: int) (img: RgbImage) =
        let w, h =
            if img.Width <= img.Height then float size, Math.Floor(float size * float img.Height / float img.Width)
            else Math.Floor(float size * float img.Width / float img.Height), float size
        if w * h > float maxPixels then
            Errors.fail "image of %dx%d: resizing its shorter side to %d would make %.0fx%.0f pixels, over the budget of %d"
                img.Width img.Height size w h maxPixels
        let w, h = int w, int h
        if w = img.Width && h = img.Height then img else resizeBicubic w h img

    /// torchvision CenterCrop: offsets rounded half to even, as Python's round does.
    let centerCrop (size: int) (img: RgbImage) =
        if img.Width < size || img.Height < size then
            Errors.fail "image of %dx%d is smaller than the crop %d" img.Width img.Height size
        let top = int (Math.Round(float (img.Height - size) / 2.0, MidpointRounding.ToEven))
        let left = int (Math.Round(float (img.Width - size) / 2.0, MidpointRounding.ToEven))
        let out = Array.zeroCreate<byte> (size * size * 3)
        for y in 0 .. size - 1 do
            Buffer.BlockCopy(img.Pixels, ((top + y) * img.Width + left) * 3, out, y * size * 3, size * 3)
        { Width = size; Height = size; Pixels = out }

    /// CHW float32 values: pixel / 255, then (v - mean) / std per channel.
    let normalize (p: Preprocessing) (img: RgbImage) : float32[] =
        let plane = img.Width * img.Height
        let out = Array.zeroCreate<float32> (3 * plane)
        for i in 0 .. plane - 1 do
            for ch in 0 .. 2 do
                out[ch * plane + i] <- (float32 img.Pixels[i * 3 + ch] / 255.0f - p.Mean[ch]) / p.Std[ch]
        out

    /// The whole evaluation transform for one image: CHW float32 of imageSize².
    let preprocess (imageSize: int) (p: Preprocessing) (img: RgbImage) =
        img |> resizeShorter (Preprocessing.resizeTarget imageSize p) |> centerCrop imageSize |> normalize p

    /// Expands directories (recursively) into image files; returns (display name, path) sorted by name.
    /// Files under a directory are named relative to it; files given directly keep the given path.
    let collect (inputs: string seq) : (string * string)[] =
        [| for input in inputs do
               if Directory.Exists input then
                   let found =
                       Directory.EnumerateFiles(input, "*", SearchOption.AllDirectories)
                       |> Seq.filter isImageFile
                       |> Seq.map (fun f -> Path.GetRelativePath(input, f).Replace('\\', '/'), f)
                       |> Array.ofSeq
                   if found.Length = 0 then Errors.fail "%s: directory contains no images (%s)" input (String.Join(", ", extensions))
                   yield! found
               elif File.Exists input then yield input, input
               else Errors.fail "%s: no such file or directory" input |]
        |> Array.sortWith (fun (a, _) (b, _) -> String.CompareOrdinal(a, b))
