namespace Prompting.Tensors

open System
open System.IO
open System.Text
open System.Text.RegularExpressions
open Prompting

/// NumPy .npy files (format versions 1-3), little-endian numeric dtypes read as float32.
module Npy =
    let private magic = [| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y' |]

    let isNpy (bytes: ReadOnlySpan<byte>) =
        bytes.Length >= 6 && bytes.Slice(0, 6).SequenceEqual(ReadOnlySpan magic)

    let private readHeader (name: string) (data: byte[]) =
        if data.Length < 10 || not (isNpy (ReadOnlySpan data)) then
            Errors.fail "%s: not a .npy file (missing \\x93NUMPY magic)" name
        let major = data[6]
        let headerLen, start =
            match major with
            | 1uy -> int (BitConverter.ToUInt16(data, 8)), 10
            | 2uy
            | 3uy when data.Length >= 12 -> int (BitConverter.ToUInt32(data, 8)), 12
            | v -> Errors.fail "%s: unsupported .npy format version %d" name (int v)
        if int64 start + int64 headerLen > int64 data.Length then
            Errors.fail "%s: .npy header length %d runs past the end of the file (%d bytes)" name headerLen data.Length
        Encoding.Latin1.GetString(data, start, headerLen), start + headerLen

    let private field (name: string) (header: string) (key: string) (pattern: string) =
        let m = Regex.Match(header, sprintf @"'%s'\s*:\s*%s" key pattern)
        if not m.Success then Errors.fail "%s: .npy header has no valid '%s' entry: %s" name key (header.Trim())
        m.Groups[1].Value

    /// Parses a .npy byte image; any numeric dtype is converted to float32.
    let parse (name: string) (data: byte[]) : HostTensor =
        let header, offset = readHeader name data
        let descr = field name header "descr" @"'([^']*)'"
        let fortran = field name header "fortran_order" @"(True|False)" = "True"
        let shapeText = field name header "shape" @"\(([^)]*)\)"
        let shape =
            shapeText.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
            |> Array.map (fun d ->
                match Int64.TryParse(d, Globalization.NumberStyles.None, Globalization.CultureInfo.InvariantCulture) with
                | true, v -> v
                | _ -> Errors.fail "%s: .npy header has an invalid shape (%s)" name shapeText)
        let count = HostTensor.checkedElementCount name shape
        if count > int64 Array.MaxLength then
            Errors.fail "%s: .npy array of shape %s is too large to load" name (HostTensor.shapeText shape)
        let itemSize, read =
            let at i = offset + i
            match descr with
            | "<f4" | "|f4" -> 4, (fun i -> BitConverter.ToSingle(data, at (4 * i)))
            | "<f8" -> 8, (fun i -> float32 (BitConverter.ToDouble(data, at (8 * i))))
            | "<f2" -> 2, (fun i -> HostTensor.halfToSingle (BitConverter.ToUInt16(data, at (2 * i))))
            | "<i8" -> 8, (fun i -> float32 (BitConverter.ToInt64(data, at (8 * i))))
            | "<i4" -> 4, (fun i -> float32 (BitConverter.ToInt32(data, at (4 * i))))
            | "<i2" -> 2, (fun i -> float32 (BitConverter.ToInt16(data, at (2 * i))))
            | "|u1" -> 1, (fun i -> float32 data[at i])
            | "|i1" -> 1, (fun i -> float32 (sbyte data[at i]))
            | "|b1" -> 1, (fun i -> float32 data[at i])
            | d -> Errors.fail "%s: unsupported .npy dtype '%s' (expected little-endian float or integer)" name d
        let needed = int64 offset + count * int64 itemSize
        if needed > int64 data.Length then
            Errors.fail "%s: truncated .npy data: shape %s needs %d bytes, file has %d" name (HostTensor.shapeText shape) needed data.Length
        let values = Array.init (int count) read
        if fortran && shape.Length > 1 then
            // Column-major on disk: the reversed shape in row-major order, then transpose back.
            let reversed = Array.rev shape
            use t = HostTensor.toTensor (HostTensor.create reversed values)
            use back = t.permute (Array.init shape.Length (fun i -> int64 (shape.Length - 1 - i)))
            HostTensor.ofTensor back
        else
            HostTensor.create shape values

    let read (path: string) : HostTensor =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        Limits.checkArray path (FileInfo(path).Length)
        let bytes =
            try File.ReadAllBytes path
            with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message
        parse path bytes

    /// Serialises float32 data as a version 1.0 .npy image.
    let serialize (t: HostTensor) : byte[] =
        let shape =
            match t.Shape with
            | [| n |] -> sprintf "(%d,)" n
            | s -> "(" + String.Join(", ", s) + ")"
        let dict = sprintf "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" shape
        // Header padded with spaces and ended by '\n' so that the data start is 64-byte aligned.
        let unpadded = 10 + dict.Length + 1
        let padded = (unpadded + 63) / 64 * 64
        let header = dict + String(' ', padded - unpadded) + "\n"
        use ms = new MemoryStream()
        ms.Write(magic, 0, magic.Length)
        ms.WriteByte 1uy
        ms.WriteByte 0uy
        ms.Write(BitConverter.GetBytes(uint16 header.Length), 0, 2)
        let hb = Encoding.Latin1.GetBytes header
        ms.Write(hb, 0, hb.Length)
        let bytes = Array.zeroCreate<byte> (t.Values.Length * 4)
        Buffer.BlockCopy(t.Values, 0, bytes, 0, bytes.Length)
        ms.Write(bytes, 0, bytes.Length)
        ms.ToArray()

    /// Writes atomically (temporary file, then rename) so a failure never leaves a partial file.
    let write (path: string) (t: HostTensor) =
        let bytes = serialize t
        Files.writeAtomic path (fun tmp -> File.WriteAllBytes(tmp, bytes))
