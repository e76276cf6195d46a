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

    /// Reads up to `count` bytes (fewer only at the end of the stream).
    let private readUpTo (stream: Stream) (count: int) =
        let bytes = Array.zeroCreate<byte> count
        let mutable read = 0
        let mutable finished = false
        while read < count && not finished do
            let n = stream.Read(bytes, read, count - read)
            if n <= 0 then finished <- true else read <- read + n
        bytes[.. read - 1]

    /// The dimensions and the data of an IDX file, gzipped or not (by content). The header is
    /// read and checked first; the data is allocated only once its size, the product of the
    /// dimensions, is known to fit the budget (the file's size, or the decompression budget).
    let private contents (path: string) (expectedDims: int) : int[] * byte[] =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        try
            use file = File.OpenRead path
            let gzipped = file.Length >= 2L && file.ReadByte() = 0x1f && file.ReadByte() = 0x8b
            file.Position <- 0L
            use stream = if gzipped then Readers.boundedGunzip path file.Length file else (file :> Stream)
            let magic = readUpTo stream 4
            if magic.Length < 4 then Errors.fail "%s: too short for an IDX file (%d bytes)" path magic.Length
            if magic[0] <> 0uy || magic[1] <> 0uy || magic[2] <> 0x08uy || int magic[3] <> expectedDims then
                Errors.fail "%s: bad IDX magic number 0x%02x%02x%02x%02x (expected 0x000008%02x: unsigned bytes, %d dimension(s))"
                    path magic[0] magic[1] magic[2] magic[3] expectedDims expectedDims
            let header = readUpTo stream (4 * expectedDims)
            if header.Length < 4 * expectedDims then Errors.fail "%s: truncated IDX header" path
            let dims = Array.init expectedDims (fun i -> bigEndian header (4 * i))
            if dims |> Array.exists (fun d -> d < 0) then Errors.fail "%s: negative IDX dimension" path
            let expected =
                try dims |> Array.fold (fun acc d -> Checked.(*) acc (int64 d)) 1L
                with :? OverflowException -> Errors.fail "%s: IDX dimensions %s overflow" path (String.Join("x", dims))
            let offset = int64 (4 + 4 * expectedDims)
            if gzipped then Limits.checkDecompressed path file.Length (offset + expected)
            else
                let actual = file.Length - offset
                if actual < expected then
                    Errors.fail "%s: truncated IDX file (%d data bytes for dimensions %s, expected %d)" path actual (String.Join("x", dims)) expected
                if actual > expected then
                    Errors.fail "%s: %d unexpected trailing bytes after the IDX data" path (actual - expected)
            Limits.checkArray path expected
            let data = readUpTo stream (int expected)
            if int64 data.Length < expected then
                Errors.fail "%s: truncated IDX file (%d data bytes for dimensions %s, expected %d)" path data.Length (String.Join("x", dims)) expected
            if gzipped && stream.ReadByte() >= 0 then Errors.fail "%s: unexpected trailing bytes after the IDX data" path
            dims, data
        with :? InvalidDataException | :? IOException | :? UnauthorizedAccessException as e ->
            Errors.fail "%s: corrupt, truncated or unreadable (%s)" path e.Message

    /// An idx3-ubyte file of images.
    let readImages (path: string) : GreyImages =
        let dims, pixels = contents path 3
        if dims[1] = 0 || dims[2] = 0 then Errors.fail "%s: empty image size %dx%d" path dims[2] dims[1]
        if int64 dims[1] * int64 dims[2] > Images.maxPixels then
            Errors.fail "%s: images of %dx%d pixels are over the budget of %d pixels" path dims[2] dims[1] Images.maxPixels
        { Count = dims[0]
          Height = dims[1]
          Width = dims[2]
          Pixels = pixels }

    /// An idx1-ubyte file of labels.
    let readLabels (path: string) : byte[] = snd (contents path 1)

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
