namespace Prompting.Tensors

open System
open System.IO
open System.Text
open System.Text.Json
open Prompting

/// The safetensors format: u64 header length, JSON header, then raw little-endian tensor data.
module Safetensors =
    /// Largest header the reference implementation accepts (100 MB).
    let private maxHeader = 100_000_000L

    type private Entry =
        { Name: string
          DType: string
          Shape: int64[]
          Begin: int64
          End: int64 }

    let private itemSize name key dtype =
        match dtype with
        | "F32" | "I32" -> 4
        | "F16" | "BF16" | "I16" -> 2
        | "F64" | "I64" -> 8
        | "U8" | "I8" | "BOOL" -> 1
        | d -> Errors.fail "%s: tensor '%s' has unknown dtype '%s'" name key d

    /// True when the bytes look like a safetensors header (length then '{').
    let looksLike (bytes: ReadOnlySpan<byte>) =
        bytes.Length >= 9 && bytes[8] = byte '{'

    /// The tensors' byte ranges must tile the data exactly, as the reference implementation
    /// requires: no two overlap or alias one another, no gap, no bytes after the last one.
    let private checkTiling (path: string) (dataLength: int64) (entries: Entry list) =
        let sorted = entries |> List.sortBy (fun e -> e.Begin, e.End) |> Array.ofList
        // Overlaps first (an aliased tensor also leaves a gap where its own bytes were).
        for k in 1 .. sorted.Length - 1 do
            let a, b = sorted[k - 1], sorted[k]
            if b.Begin < a.End then
                Errors.fail "%s: tensors '%s' and '%s' overlap (bytes %d-%d and %d-%d of the data)" path a.Name b.Name a.Begin a.End b.Begin b.End
        let mutable position = 0L
        for e in sorted do
            if e.Begin > position then
                Errors.fail "%s: %d unused bytes in the data before tensor '%s' (at byte %d)" path (e.Begin - position) e.Name position
            position <- e.End
        if position < dataLength then
            Errors.fail "%s: %d trailing bytes after the last tensor (the data holds %d bytes, the tensors %d)" path (dataLength - position) dataLength position

    let private parseHeader (path: string) (fileLength: int64) (headerBytes: byte[]) =
        // The header must be valid UTF-8 (System.Text.Json only notices bad bytes in a name when
        // the name is read, and then throws InvalidOperationException).
        let strictUtf8 = UTF8Encoding(false, true)
        try strictUtf8.GetCharCount headerBytes |> ignore
        with :? DecoderFallbackException -> Errors.fail "%s: corrupt safetensors header (not valid UTF-8)" path
        let doc =
            try JsonDocument.Parse(headerBytes)
            with :? JsonException as e -> Errors.fail "%s: corrupt safetensors header (invalid JSON: %s)" path e.Message
        use doc = doc
        if doc.RootElement.ValueKind <> JsonValueKind.Object then
            Errors.fail "%s: corrupt safetensors header (not a JSON object)" path
        let dataLength = fileLength - 8L - int64 headerBytes.Length
        let metadata =
            match doc.RootElement.TryGetProperty "__metadata__" with
            | true, m when m.ValueKind = JsonValueKind.Object ->
                [ for p in m.EnumerateObject() -> p.Name, p.Value.ToString() ] |> Map.ofList
            | _ -> Map.empty
        /// Non-negative integers of a JSON array, or a PromptingError naming the tensor and field.
        let integers (tensor: string) (field: string) (v: JsonElement) =
            let bad () = Errors.fail "%s: tensor '%s' has an invalid '%s' in the header (expected an array of non-negative integers)" path tensor field
            if v.ValueKind <> JsonValueKind.Array then bad ()
            [| for d in v.EnumerateArray() ->
                   match d.ValueKind, (if d.ValueKind = JsonValueKind.Number then d.TryGetInt64() else (false, 0L)) with
                   | JsonValueKind.Number, (true, x) when x >= 0L -> x
                   | _ -> bad () |]
        let seen = Collections.Generic.HashSet<string>()
        let entries =
            [ for p in doc.RootElement.EnumerateObject() do
                  if not (seen.Add p.Name) then Errors.fail "%s: duplicate name '%s' in the safetensors header" path p.Name
                  if p.Name <> "__metadata__" then
                      let v = p.Value
                      if v.ValueKind <> JsonValueKind.Object then
                          Errors.fail "%s: tensor '%s' has an invalid header entry (expected an object)" path p.Name
                      let get (k: string) =
                          match v.TryGetProperty k with
                          | true, x -> x
                          | _ -> Errors.fail "%s: tensor '%s' has no '%s' in the header" path p.Name k
                      let dtype =
                          match get "dtype" with
                          | d when d.ValueKind = JsonValueKind.String -> d.GetString()
                          | d -> Errors.fail "%s: tensor '%s' has a dtype that is not a string (JSON %A)" path p.Name d.ValueKind
                      let shape = integers p.Name "shape" (get "shape")
                      let offsets = integers p.Name "data_offsets" (get "data_offsets")
                      if offsets.Length <> 2 || offsets[1] < offsets[0] then
                          Errors.fail "%s: tensor '%s' has invalid data_offsets" path p.Name
                      let count = HostTensor.checkedElementCount (sprintf "%s: tensor '%s'" path p.Name) shape
                      let size =
                          try Checked.(*) (int64 (itemSize path p.Name dtype)) count
                          with :? OverflowException -> Errors.fail "%s: tensor '%s' of shape %s is too large" path p.Name (HostTensor.shapeText shape)
                      if offsets[1] - offsets[0] <> size then
                          Errors.fail "%s: tensor '%s' of shape %s and dtype %s needs %d bytes but its offsets span %d" path p.Name (HostTensor.shapeText shape) dtype size (offsets[1] - offsets[0])
                      if offsets[1] > dataLength then
                          Errors.fail "%s: truncated file: tensor '%s' ends at byte %d of the data but only %d bytes are present" path p.Name offsets[1] dataLength
                      if count > Limits.maxArray then
                          Errors.fail "%s: tensor '%s' of shape %s has %d elements, too many to load (at most %d)" path p.Name (HostTensor.shapeText shape) count Limits.maxArray
                      yield { Name = p.Name; DType = dtype; Shape = shape; Begin = offsets[0]; End = offsets[1] } ]
        checkTiling path dataLength entries
        entries, metadata

    /// Converts `bytes` (whole elements) to float32 into `values` from element `start` on.
    let private decodeInto (path: string) (e: Entry) (bytes: byte[]) (length: int) (values: float32[]) (start: int) =
        let n = length / itemSize path e.Name e.DType
        let put (f: int -> float32) =
            for i in 0 .. n - 1 do
                values[start + i] <- f i
        match e.DType with
        | "F32" -> Buffer.BlockCopy(bytes, 0, values, 4 * start, length)
        | "F16" -> put (fun i -> HostTensor.halfToSingle (BitConverter.ToUInt16(bytes, 2 * i)))
        | "BF16" -> put (fun i -> HostTensor.bfloat16ToSingle (BitConverter.ToUInt16(bytes, 2 * i)))
        | "F64" -> put (fun i -> float32 (BitConverter.ToDouble(bytes, 8 * i)))
        | "I64" -> put (fun i -> float32 (BitConverter.ToInt64(bytes, 8 * i)))
        | "I32" -> put (fun i -> float32 (BitConverter.ToInt32(bytes, 4 * i)))
        | "I16" -> put (fun i -> float32 (BitConverter.ToInt16(bytes, 2 * i)))
        | "I8" -> put (fun i -> float32 (sbyte bytes[i]))
        | _ -> put (fun i -> float32 bytes[i])

    /// Bytes read at a time: a tensor may be larger than one byte array (over 2 GiB of F32).
    let private chunkBytes = 1 <<< 20

    /// Reads one tensor's elements chunk by chunk into a float32 array (its element count was
    /// checked against the array limit from the header).
    let private readTensor (path: string) (fs: Stream) (dataStart: int64) (e: Entry) =
        let size = itemSize path e.Name e.DType
        let values = Array.zeroCreate<float32> (int ((e.End - e.Begin) / int64 size))
        let buffer = Array.zeroCreate<byte> chunkBytes
        fs.Seek(dataStart + e.Begin, SeekOrigin.Begin) |> ignore
        let mutable remaining = e.End - e.Begin
        let mutable element = 0
        while remaining > 0L do
            let length = int (min remaining (int64 chunkBytes))
            fs.ReadExactly(buffer, 0, length)
            decodeInto path e buffer length values element
            element <- element + length / size
            remaining <- remaining - int64 length
        values

    /// Reads all tensors (converted to float32) and the string metadata.
    let readWithMetadata (path: string) : (string * HostTensor) list * Map<string, string> =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        use fs = File.OpenRead path
        let fileLength = fs.Length
        if fileLength < 8L then Errors.fail "%s: truncated file (%d bytes, a safetensors file needs at least 8)" path fileLength
        let lenBytes = Array.zeroCreate<byte> 8
        fs.ReadExactly(lenBytes, 0, 8)
        let headerLength = BitConverter.ToInt64(lenBytes, 0)
        if headerLength < 2L || headerLength > maxHeader then
            Errors.fail "%s: not a safetensors file (header length %d is implausible)" path headerLength
        if 8L + headerLength > fileLength then
            Errors.fail "%s: safetensors header length %d is longer than the file (%d bytes): truncated or corrupt" path headerLength fileLength
        let header = Array.zeroCreate<byte> (int headerLength)
        fs.ReadExactly(header, 0, header.Length)
        if header[0] <> byte '{' then Errors.fail "%s: not a safetensors file (header is not a JSON object)" path
        let entries, metadata = parseHeader path fileLength header
        let dataStart = 8L + headerLength
        let tensors =
            entries
            |> List.sortBy (fun e -> e.Begin)
            |> List.map (fun e -> e.Name, HostTensor.create e.Shape (readTensor path fs dataStart e))
        tensors, metadata

    let read (path: string) = fst (readWithMetadata path)

    /// Writes float32 tensors in the given order, atomically (temporary file, then rename).
    let writeWithMetadata (path: string) (metadata: Map<string, string>) (tensors: (string * HostTensor) seq) =
        let tensors = List.ofSeq tensors
        let header = Collections.Generic.Dictionary<string, obj>()
        if not metadata.IsEmpty then header["__metadata__"] <- box (Collections.Generic.Dictionary<string, string>(metadata))
        let mutable offset = 0L
        for name, t in tensors do
            let size = int64 t.Values.Length * 4L
            header[name] <- box {| dtype = "F32"; shape = t.Shape; data_offsets = [| offset; offset + size |] |}
            offset <- offset + size
        let json = JsonSerializer.Serialize header
        // Pad with spaces to a multiple of 8 so the data is aligned, as the reference writer does.
        let padded = json + String(' ', (8 - Encoding.UTF8.GetByteCount json % 8) % 8)
        let headerBytes = Encoding.UTF8.GetBytes padded
        Files.writeAtomic path (fun tmp ->
            use fs = File.Create tmp
            fs.Write(BitConverter.GetBytes(int64 headerBytes.Length), 0, 8)
            fs.Write(headerBytes, 0, headerBytes.Length)
            for _, t in tensors do
                let bytes = Array.zeroCreate<byte> (t.Values.Length * 4)
                Buffer.BlockCopy(t.Values, 0, bytes, 0, bytes.Length)
                fs.Write(bytes, 0, bytes.Length))

    let write path tensors = writeWithMetadata path Map.empty tensors
