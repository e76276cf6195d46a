namespace Prompting.Data

open System
open System.IO
open Prompting

/// IDX files (MNIST, Fashion-MNIST), gzipped or not: a 4-byte magic number (two zero bytes, the
/// element type, 0x08 for unsigned bytes, and the number of dimensions), the dimensions as
/// big-endian int32, then the elements in row-major order. Grey images become RGB by repeating
/// the channel.
module Idx =
    /// Grey images of one IDX file: Count images of Height × Width bytes, row-major, one after another.
    [<NoEquality; NoComparison>]
    type GreyImages =
        { Count: int
          Height: int
          Width: int
          Pixels: byte[] }

    let fashionMnistClasses =
        [| "T-shirt/top"; "Trouser"; "Pullover"; "Dress"; "Coat"; "Sandal"; "Shirt"; "Sneaker"; "Bag"; "Ankle boot" |]

    let mnistClasses = Array.init 10 string

    let private bigEndian (b: byte[]) (o: int) =
        (int b[o] <<< 24) ||| (int b[o + 1] <<< 16) ||| (int b[o + 2] <<< 8) ||| int b[o + 3]

    /// Header check: returns the dimensions and the offset of the data.
    let private header (path: string) (expectedDims: int) (bytes: byte[]) =
        if bytes.Length < 4 then Errors.fail "%s: too short for an IDX file (%d bytes)" path bytes.Length
        if bytes[0] <> 0uy || bytes[1] <> 0uy || bytes[2] <> 0x08uy || int bytes[3] <> expectedDims then
            Errors.fail "%s: bad IDX magic number 0x%02x%02x%02x%02x (expected 0x000008%02x: unsigned bytes, %d dimension(s))"
                path bytes[0] bytes[1] bytes[2] bytes[3] expectedDims expectedDims
        let offset = 4 + 4 * expectedDims
        if bytes.Length < offset then Errors.fail "%s: truncated IDX header" path
        let dims = Array.init expectedDims (fun i -> bigEndian bytes (4 + 4 * i))
        if dims |> Array.exists (fun d -> d < 0) then Errors.fail "%s: negative IDX dimension" path
        let expected = dims |> Array.fold (fun acc d -> acc * int64 d) 1L
        let actual = int64 (bytes.Length - offset)
        if actual < expected then
            Errors.fail "%s: truncated IDX file (%d data bytes for dimensions %s, expected %d)" path actual (String.Join("x", dims)) expected
        if actual > expected then
            Errors.fail "%s: %d unexpected trailing bytes after the IDX data" path (actual - expected)
        dims, offset

    let private contents (path: string) = Readers.readAllBytes path |> Readers.gunzipIfNeeded path

    /// An idx3-ubyte file of images.
    let readImages (path: string) : GreyImages =
        let bytes = contents path
        let dims, offset = header path 3 bytes
        if dims[1] = 0 || dims[2] = 0 then Errors.fail "%s: empty image size %dx%d" path dims[2] dims[1]
        { Count = dims[0]
          Height = dims[1]
          Width = dims[2]
          Pixels = bytes[offset..] }

    /// An idx1-ubyte file of labels.
    let readLabels (path: string) : byte[] =
        let bytes = contents path
        let _, offset = header path 1 bytes
        bytes[offset..]

    /// Samples pairing images and labels; labels must be below the number of classes.
    let samples (imagesPath: string) (labelsPath: string) (classes: int) : Sample[] =
        let images = readImages imagesPath
        let labels = readLabels labelsPath
        if labels.Length <> images.Count then
            Errors.fail "%s: %d labels but %s holds %d images" labelsPath labels.Length imagesPath images.Count
        let plane = images.Height * images.Width
        Array.init images.Count (fun i ->
            let label = int labels[i]
            if label >= classes then Errors.fail "%s: label %d of item %d is not below the %d classes" labelsPath label i classes
            { Source = sprintf "%s#%d" imagesPath i
              Label = label
              Load =
                fun () ->
                    let px = Array.zeroCreate<byte> (plane * 3)
                    let start = i * plane
                    for k in 0 .. plane - 1 do
                        let v = images.Pixels[start + k]
                        px[k * 3] <- v
                        px[k * 3 + 1] <- v
                        px[k * 3 + 2] <- v
                    { Width = images.Width; Height = images.Height; Pixels = px } })

    /// `dir/name` or `dir/name.gz`, whichever exists.
    let locate (dir: string) (name: string) =
        let plain = Path.Combine(dir, name)
        let gz = plain + ".gz"
        if File.Exists plain then plain
        elif File.Exists gz then gz
        else Errors.fail "%s: neither %s nor %s.gz found" dir name name

    /// The four standard files of a directory: train-images-idx3-ubyte, train-labels-idx1-ubyte,
    /// t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally gzipped.
    let read (name: string) (classNames: string[]) (dir: string) : Dataset =
        if not (Directory.Exists dir) then Errors.fail "%s: no such directory" dir
        let split prefix =
            samples (locate dir (prefix + "-images-idx3-ubyte")) (locate dir (prefix + "-labels-idx1-ubyte")) classNames.Length
        { Name = name
          ClassNames = classNames
          Train = split "train"
          Test = split "t10k" }

    let fashionMnist (dir: string) = read "Fashion-MNIST" fashionMnistClasses dir
    let mnist (dir: string) = read "MNIST" mnistClasses dir
