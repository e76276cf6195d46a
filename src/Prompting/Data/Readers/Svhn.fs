namespace Prompting.Data

open System
open System.IO
open System.IO.Compression
open Prompting

/// SVHN's cropped-digit release (`train_32x32.mat`, `test_32x32.mat`): MATLAB level-5 MAT files
/// holding `X` (32 x 32 x 3 x N uint8, column-major) and `y` (N x 1, labels 1..10 where 10 is the
/// digit 0), as torchvision and L2P's 5-datasets read them (label 10 becomes 0).
module Svhn =
    let classNames = Array.init 10 string

    /// One named numeric array of a MAT file: its dimensions and its values as bytes of `Kind`.
    type MatArray =
        { Name: string
          Dimensions: int[]
          /// The MAT data type of the stored values (miUINT8 = 2, miDOUBLE = 9, ...).
          Kind: int
          Data: byte[] }

    let private sizeOf kind =
        match kind with
        | 1 | 2 -> 1 // miINT8, miUINT8
        | 3 | 4 -> 2 // miINT16, miUINT16
        | 5 | 6 | 7 -> 4 // miINT32, miUINT32, miSINGLE
        | 9 | 12 | 13 -> 8 // miDOUBLE, miINT64, miUINT64
        | _ -> 0

    /// Reads the data elements at `offset..limit` of `bytes` (little-endian; 8-byte aligned tags,
    /// small-element tags packing type and size in one word).
    let rec private elements (path: string) (bytes: byte[]) (offset: int) (limit: int) : (int * byte[]) list =
        if offset + 8 > limit then []
        else
            let word = BitConverter.ToUInt32(bytes, offset)
            if word >>> 16 <> 0u then
                // small data element: size in the upper half, type in the lower half, data in 4 bytes
                let kind = int (word &&& 0xffffu)
                let size = int (word >>> 16)
                if size > 4 then Errors.fail "%s: malformed MAT file (small element of %d bytes at %d)" path size offset
                (kind, bytes[offset + 4 .. offset + 3 + size]) :: elements path bytes (offset + 8) limit
            else
                let kind = int word
                let size = BitConverter.ToUInt32(bytes, offset + 4)
                if int64 offset + 8L + int64 size > int64 limit then
                    Errors.fail "%s: malformed or truncated MAT file (element of %d bytes at %d runs past the end)" path size offset
                let size = int size
                let data = bytes[offset + 8 .. offset + 7 + size]
                let next = if kind = 15 then offset + 8 + size else offset + 8 + ((size + 7) / 8 * 8)
                (kind, data) :: elements path bytes next limit

    let private inflate (path: string) (data: byte[]) =
        try
            use input = new MemoryStream(data)
            use z = new ZLibStream(input, CompressionMode.Decompress)
            use out = new MemoryStream()
            z.CopyTo out
            out.ToArray()
        with :? InvalidDataException as e -> Errors.fail "%s: a compressed MAT element does not inflate (%s)" path e.Message

    /// The numeric arrays of a level-5 MAT file, compressed (miCOMPRESSED) or not.
    let readMat (path: string) : MatArray list =
        let bytes = Readers.readAllBytes path
        if bytes.Length < 128 then Errors.fail "%s: not a MAT file (%d bytes, a header is 128)" path bytes.Length
        if bytes[126] <> byte 'I' || bytes[127] <> byte 'M' then
            Errors.fail "%s: not a little-endian level-5 MAT file (HDF5-based v7.3 files are not supported)" path
        let rec matrices (items: (int * byte[]) list) =
            [ for kind, data in items do
                  match kind with
                  | 15 ->
                      let inflated = inflate path data
                      yield! matrices (elements path inflated 0 inflated.Length)
                  | 14 ->
                      match elements path data 0 data.Length with
                      | (_, _flags) :: (_, dims) :: (_, name) :: (realKind, real) :: _ ->
                          yield
                              { Name = Text.Encoding.ASCII.GetString name
                                Dimensions = Array.init (dims.Length / 4) (fun i -> BitConverter.ToInt32(dims, i * 4))
                                Kind = realKind
                                Data = real }
                      | _ -> Errors.fail "%s: a MAT matrix lacks its flags, dimensions, name or values" path
                  | _ -> () ]
        matrices (elements path bytes 128 bytes.Length)

    let private value (a: MatArray) (i: int) =
        match a.Kind with
        | 1 -> float (sbyte a.Data[i])
        | 2 -> float a.Data[i]
        | 3 -> float (BitConverter.ToInt16(a.Data, i * 2))
        | 4 -> float (BitConverter.ToUInt16(a.Data, i * 2))
        | 5 -> float (BitConverter.ToInt32(a.Data, i * 4))
        | 6 -> float (BitConverter.ToUInt32(a.Data, i * 4))
        | 7 -> float (BitConverter.ToSingle(a.Data, i * 4))
        | 9 -> BitConverter.ToDouble(a.Data, i * 8)
        | k -> Errors.fail "MAT array %s: unsupported value type %d" a.Name k

    /// The samples of one file: image i is X[:, :, :, i] (row, column, channel), label y[i] mod 10.
    let samples (path: string) : Sample[] =
        let arrays = readMat path
        let find name =
            match arrays |> List.tryFind (fun a -> a.Name = name) with
            | Some a -> a
            | None -> Errors.fail "%s: no variable %s (expected SVHN's X and y)" path name
        let x = find "X"
        let y = find "y"
        if x.Dimensions.Length <> 4 || x.Dimensions[0] <> 32 || x.Dimensions[1] <> 32 || x.Dimensions[2] <> 3 then
            Errors.fail "%s: X is %s, expected 32 x 32 x 3 x N" path (x.Dimensions |> Array.map string |> String.concat " x ")
        if x.Kind <> 2 then Errors.fail "%s: X holds type %d, expected uint8" path x.Kind
        let n = x.Dimensions[3]
        if x.Data.Length <> 3072 * n then Errors.fail "%s: X holds %d bytes, expected %d" path x.Data.Length (3072 * n)
        let count = y.Dimensions |> Array.fold (*) 1
        if count <> n then Errors.fail "%s: %d labels for %d images" path count n
        Array.init n (fun i ->
            let raw = value y i
            if raw <> Math.Round raw || raw < 0.0 || raw > 10.0 then
                Errors.fail "%s: label %g of image %d is out of range 1..10" path raw i
            { Source = sprintf "%s#%d" path i
              Label = int raw % 10
              Load =
                fun () ->
                    let px = Array.zeroCreate<byte> 3072
                    for r in 0..31 do
                        for c in 0..31 do
                            for ch in 0..2 do
                                px[(r * 32 + c) * 3 + ch] <- x.Data[r + 32 * c + 1024 * ch + 3072 * i]
                    { Width = 32; Height = 32; Pixels = px } })

    /// `dir/train_32x32.mat` and `dir/test_32x32.mat`.
    let read (dir: string) : Dataset =
        if not (Directory.Exists dir) then Errors.fail "%s: no such directory (expected train_32x32.mat and test_32x32.mat)" dir
        let file name =
            let path = Path.Combine(dir, name)
            if not (File.Exists path) then Errors.fail "%s: missing %s (SVHN's cropped digits, format 2)" dir name
            path
        { Name = "SVHN"
          ClassNames = classNames
          Train = samples (file "train_32x32.mat")
          Test = samples (file "test_32x32.mat") }
