module Prompting.Tests.TensorsTests

open System
open System.Buffers.Binary
open System.IO
open System.IO.Compression
open System.Text
open Expecto
open FsCheck
open FsCheck.FSharp
open Prompting.Tensors
open Prompting.Tests.TestSupport

// ---------------------------------------------------------------------------------------------
// Hand-built files
// ---------------------------------------------------------------------------------------------

/// A version 1.0 .npy image with the given header dictionary and raw data, padded like numpy
/// (the data starts at a multiple of 64 and the header ends with '\n').
let npyBytes (dict: string) (data: byte[]) =
    let unpadded = 10 + dict.Length + 1
    let padded = (unpadded + 63) / 64 * 64
    let header = dict + String(' ', padded - unpadded) + "\n"
    [| yield 0x93uy
       yield! Encoding.ASCII.GetBytes "NUMPY"
       yield 1uy
       yield 0uy
       yield! BitConverter.GetBytes(uint16 header.Length)
       yield! Encoding.Latin1.GetBytes header
       yield! data |]

let f32Bytes (values: float32 seq) =
    [| for v in values do
           let b = Array.zeroCreate<byte> 4
           BinaryPrimitives.WriteSingleLittleEndian(Span b, v)
           yield! b |]

let f64Bytes (values: float seq) =
    [| for v in values do
           let b = Array.zeroCreate<byte> 8
           BinaryPrimitives.WriteDoubleLittleEndian(Span b, v)
           yield! b |]

let i64Bytes (values: int64 seq) =
    [| for v in values do
           let b = Array.zeroCreate<byte> 8
           BinaryPrimitives.WriteInt64LittleEndian(Span b, v)
           yield! b |]

let u16Bytes (values: uint16 seq) =
    [| for v in values do
           let b = Array.zeroCreate<byte> 2
           BinaryPrimitives.WriteUInt16LittleEndian(Span b, v)
           yield! b |]

/// A safetensors image: u64 header length, JSON header (space-padded to 8), concatenated data.
let safetensorsBytes (tensors: (string * string * int64[] * byte[]) list) (metadata: string option) =
    let mutable offset = 0L
    let entries =
        [ for name, dtype, shape, data in tensors do
              let e =
                  sprintf "\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%d,%d]}"
                      name dtype (String.Join(",", shape)) offset (offset + int64 data.Length)
              offset <- offset + int64 data.Length
              yield e ]
    let all = (match metadata with Some m -> [ "\"__metadata__\":" + m ] | None -> []) @ entries
    let json = "{" + String.Join(",", all) + "}"
    let json = json + String(' ', (8 - json.Length % 8) % 8)
    [| yield! BitConverter.GetBytes(int64 json.Length)
       yield! Encoding.UTF8.GetBytes json
       for _, _, _, data in tensors do yield! data |]

/// Row-major values 0, 1, 2, ... of a shape, with a fractional part so that nothing is an integer.
let ramp (shape: int64[]) =
    HostTensor.create shape (Array.init (int (HostTensor.elementCount shape)) (fun i -> float32 i * 0.5f - 3.25f))

// ---------------------------------------------------------------------------------------------
// FsCheck generators: random small shapes, random float32 bit patterns (NaN payloads, ±inf, -0,
// subnormals included)
// ---------------------------------------------------------------------------------------------

let genShape: Gen<int64[]> =
    gen {
        let! rank = Gen.choose (0, 4)
        let! dims = Gen.arrayOfLength rank (Gen.choose (0, 5))
        return dims |> Array.map int64
    }

let genFloat32: Gen<float32> =
    Gen.oneof
        [ Gen.choose (Int32.MinValue, Int32.MaxValue) |> Gen.map BitConverter.Int32BitsToSingle
          Gen.elements [ 0.0f; -0.0f; 1.0f; -1.0f; Single.PositiveInfinity; Single.NegativeInfinity; Single.NaN
                         Single.Epsilon; Single.MaxValue; Single.MinValue ]
          Gen.choose (-1000000, 1000000) |> Gen.map (fun i -> float32 i / 1000.0f) ]

let genTensor: Gen<HostTensor> =
    gen {
        let! shape = genShape
        let! values = Gen.arrayOfLength (int (HostTensor.elementCount shape)) genFloat32
        return HostTensor.create shape values
    }

let arbTensor = Arb.fromGen genTensor

let arbTensors =
    Arb.fromGen (Gen.listOf genTensor |> Gen.map (List.truncate 6))

let sameBits (a: HostTensor) (b: HostTensor) =
    a.Shape = b.Shape && bits a.Values = bits b.Values

let propertyConfig = { FsCheckConfig.defaultConfig with maxTest = 200 }

// ---------------------------------------------------------------------------------------------

[<Tests>]
let npyTests =
    testList
        "npy"
        [ for shape in [ [| 7L |]; [| 2L; 3L; 4L; 5L |]; [||]; [| 0L |]; [| 3L; 1L |] ] do
              test (sprintf "write then read round trip, shape %s" (HostTensor.shapeText shape)) {
                  use dir = new TempDir()
                  let t = ramp shape
                  let path = dir.File "t.npy"
                  Npy.write path t
                  expectBitExact (Npy.read path) t "round trip"
                  Expect.isFalse (File.Exists(path + ".tmp")) "no temporary file left behind"
              }

          test "the data of a written file starts at a multiple of 64" {
              let bytes = Npy.serialize (ramp [| 2L; 3L |])
              let headerLength = int (BitConverter.ToUInt16(bytes, 8))
              Expect.equal ((10 + headerLength) % 64) 0 "aligned"
              Expect.equal bytes[10 + headerLength - 1] (byte '\n') "header ends with newline"
          }

          test "reads the numpy-written fixture input_32.npy" {
              let t = Npy.read (fixture "input_32.npy")
              Expect.sequenceEqual t.Shape [| 4L; 3L; 32L; 32L |] "shape"
              // bit patterns and sum taken with numpy from the same file
              Expect.equal (BitConverter.SingleToInt32Bits t.Values[0]) 0x3f83b195 "first value"
              Expect.equal (BitConverter.SingleToInt32Bits t.Values[1]) 0x3fd22a70 "second value"
              Expect.equal (BitConverter.SingleToInt32Bits t.Values[t.Values.Length - 1]) 0x3e450049 "last value"
              let at = ((1 * 3 + 2) * 32 + 3) * 32 + 4 // [1, 2, 3, 4]
              Expect.equal (BitConverter.SingleToInt32Bits t.Values[at]) 0x3f233f85 "value [1,2,3,4]"
              let sum = t.Values |> Array.sumBy float
              Expect.floatClose Accuracy.high sum 128.1793956373731 "sum (float64)"
          }

          test "Fortran-order 2-D array is returned in row-major order" {
              // A = [[1, 2, 3], [4, 5, 6]] stored column by column
              let data = f32Bytes [ 1.0f; 4.0f; 2.0f; 5.0f; 3.0f; 6.0f ]
              let bytes = npyBytes "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }" data
              let t = Npy.parse "fortran.npy" bytes
              Expect.sequenceEqual t.Shape [| 2L; 3L |] "shape"
              Expect.sequenceEqual t.Values [| 1.0f; 2.0f; 3.0f; 4.0f; 5.0f; 6.0f |] "row-major values"
          }

          test "Fortran-order 3-D array is returned in row-major order" {
              // element [i, j, k] = 100 i + 10 j + k; in Fortran order the first index varies fastest
              let shape = [| 2; 3; 4 |]
              let value i j k = float32 (100 * i + 10 * j + k)
              let columnMajor =
                  [ for k in 0 .. shape[2] - 1 do
                        for j in 0 .. shape[1] - 1 do
                            for i in 0 .. shape[0] - 1 do
                                yield value i j k ]
              let bytes = npyBytes "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }" (f32Bytes columnMajor)
              let t = Npy.parse "fortran3.npy" bytes
              let rowMajor =
                  [| for i in 0 .. shape[0] - 1 do
                         for j in 0 .. shape[1] - 1 do
                             for k in 0 .. shape[2] - 1 do
                                 yield value i j k |]
              Expect.sequenceEqual t.Shape [| 2L; 3L; 4L |] "shape"
              Expect.sequenceEqual t.Values rowMajor "row-major values"
          }

          test "float64 .npy converts to the nearest float32" {
              let values = [ 0.1; -2.5; 1e-50; 3.0e38; 16777217.0 ]
              let bytes = npyBytes "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }" (f64Bytes values)
              let t = Npy.parse "f64.npy" bytes
              Expect.sequenceEqual t.Shape [| 5L |] "shape"
              // 1e-50 underflows to 0; 2^24 + 1 rounds to even (2^24)
              Expect.sequenceEqual t.Values [| 0.1f; -2.5f; 0.0f; 3.0e38f; 16777216.0f |] "values"
          }

          test "int64 .npy converts to float32" {
              let values = [ 0L; -7L; 123456L; 1L <<< 40; -(1L <<< 24) - 1L ]
              let bytes = npyBytes "{'descr': '<i8', 'fortran_order': False, 'shape': (5, 1), }" (i64Bytes values)
              let t = Npy.parse "i64.npy" bytes
              Expect.sequenceEqual t.Shape [| 5L; 1L |] "shape"
              Expect.sequenceEqual t.Values [| 0.0f; -7.0f; 123456.0f; 1099511627776.0f; -16777216.0f |] "values"
          }

          test "truncated .npy data is a PromptingError" {
              let bytes = npyBytes "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }" (f32Bytes [ 1.0f; 2.0f; 3.0f ])
              let msg = promptingError "truncated npy" (fun () -> Npy.parse "short.npy" bytes)
              expectMessage msg [ "short.npy"; "truncated" ] "truncated npy"
          }

          test "unsupported dtype is a PromptingError" {
              let bytes = npyBytes "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }" (f32Bytes [ 1.0f ])
              let msg = promptingError "big-endian npy" (fun () -> Npy.parse "be.npy" bytes)
              expectMessage msg [ "be.npy"; ">f4" ] "big-endian npy"
          }

          testPropertyWithConfig propertyConfig "random float32 tensors survive a .npy round trip bit-exactly"
          <| Prop.forAll arbTensor (fun t ->
              let back = Npy.parse "prop.npy" (Npy.serialize t)
              sameBits back t) ]

[<Tests>]
let npzTests =
    testList
        "npz"
        [ test "Npz.write then Npz.read round trip" {
              use dir = new TempDir()
              let members = [ "a", ramp [| 3L; 4L |]; "nested/b", ramp [| 5L |]; "c", ramp [||] ]
              let path = dir.File "m.npz"
              Npz.write path members
              let back = Npz.read path
              Expect.sequenceEqual (back |> List.map fst) (members |> List.map fst) "names (without .npy) in order"
              for (name, t), (_, u) in List.zip members back do
                  expectBitExact u t name
          }

          test "reads stored and deflated members from one archive" {
              use dir = new TempDir()
              let path = dir.File "mixed.npz"
              let stored = ramp [| 2L; 2L |]
              let deflated = HostTensor.create [| 64L |] (Array.init 64 (fun i -> float32 (i % 4)))
              do
                  use fs = File.Create path
                  use zip = new ZipArchive(fs, ZipArchiveMode.Create)
                  for name, t, level in
                      [ "stored.npy", stored, CompressionLevel.NoCompression
                        "deflated.npy", deflated, CompressionLevel.Optimal ] do
                      let entry = zip.CreateEntry(name, level)
                      use s = entry.Open()
                      s.Write(Npy.serialize t)
              // check that the archive really has one member of each kind
              do
                  use zip = ZipFile.OpenRead path
                  let e = zip.GetEntry "deflated.npy"
                  Expect.isLessThan e.CompressedLength e.Length "deflated member is compressed"
                  let s = zip.GetEntry "stored.npy"
                  Expect.equal s.CompressedLength s.Length "stored member is not compressed"
              let back = Npz.read path |> Map.ofList
              expectBitExact back["stored"] stored "stored"
              expectBitExact back["deflated"] deflated "deflated"
          }

          test "reads numpy's savez_compressed output (deflated uint8 members)" {
              let members = Npz.read (fixture "images/resize_cases.npz") |> Map.ofList
              let source = members["source"]
              Expect.sequenceEqual source.Shape [| 12L; 15L; 3L |] "shape"
              Expect.isTrue (source.Values |> Array.forall (fun v -> v = 0.0f || v = 85.0f || v = 170.0f || v = 255.0f)) "levels"
          }

          test "reads the numpy savez fixture (Zip64 extras)" {
              let members = Npz.read (fixture "vit_micro.npz") |> Map.ofList
              Expect.sequenceEqual members["opt/target/cls"].Shape [| 1L; 1L; 48L |] "cls shape"
              Expect.sequenceEqual members["opt/target/embedding/kernel"].Shape [| 8L; 8L; 3L; 48L |] "HWIO kernel"
          } ]

[<Tests>]
let safetensorsTests =
    testList
        "safetensors"
        [ test "round trip with metadata" {
              use dir = new TempDir()
              let path = dir.File "t.safetensors"
              let tensors = [ "z.last", ramp [| 2L; 3L |]; "a.first", ramp [| 5L |]; "scalar", ramp [||]; "empty", ramp [| 0L; 4L |] ]
              let metadata = Map.ofList [ "format", "pt"; "note", "ünïcode \"quoted\"" ]
              Safetensors.writeWithMetadata path metadata tensors
              let back, meta = Safetensors.readWithMetadata path
              Expect.equal meta metadata "metadata"
              let back = Map.ofList back
              Expect.equal back.Count tensors.Length "tensor count"
              for name, t in tensors do
                  expectBitExact back[name] t name
              let bytes = File.ReadAllBytes path
              Expect.equal (BitConverter.ToInt64(bytes, 0) % 8L) 0L "header padded to a multiple of 8"
          }

          test "round trip without metadata has no __metadata__" {
              use dir = new TempDir()
              let path = dir.File "t.safetensors"
              Safetensors.write path [ "x", ramp [| 3L |] ]
              let back, meta = Safetensors.readWithMetadata path
              Expect.isTrue meta.IsEmpty "no metadata"
              expectBitExact (snd back.Head) (ramp [| 3L |]) "x"
              let header = Encoding.UTF8.GetString(File.ReadAllBytes path, 8, int (BitConverter.ToInt64(File.ReadAllBytes path, 0)))
              Expect.isFalse (header.Contains "__metadata__") "header"
          }

          test "reads the fixture with its metadata" {
              let tensors, meta = Safetensors.readWithMetadata (fixture "vit_micro.safetensors")
              Expect.equal (meta.TryFind "format") (Some "pt") "format metadata"
              Expect.equal tensors.Length 32 "tensor count (4 + 12 per block × 2 + 4)"
          }

          test "F16, BF16, F64 and integer tensors decode to the right float32 values" {
              use dir = new TempDir()
              let path = dir.File "mixed.safetensors"
              // IEEE half: 1.5 = 0x3E00, -2.0 = 0xC000, 65504 (largest) = 0x7BFF,
              // 2^-14 (smallest normal) = 0x0400, 2^-24 (smallest subnormal) = 0x0001, -0 = 0x8000, +inf = 0x7C00
              let f16 = [ 0x3E00us; 0xC000us; 0x7BFFus; 0x0400us; 0x0001us; 0x8000us; 0x7C00us ]
              // bfloat16 = top half of a float32: 1.5 = 0x3FC0, -2.0 = 0xC000, 3.140625 = 0x4049,
              // 0x7F7F = (2 - 2^-7) · 2^127, 0x0001 = 2^-133 (subnormal)
              let bf16 = [ 0x3FC0us; 0xC000us; 0x4049us; 0x7F7Fus; 0x0001us ]
              let f64 = [ 1.5; -2.0; 0.1; 1e-50; -1e300 ]
              let file =
                  safetensorsBytes
                      [ "h", "F16", [| 7L |], u16Bytes f16
                        "b", "BF16", [| 5L; 1L |], u16Bytes bf16
                        "d", "F64", [| 5L |], f64Bytes f64
                        "i", "I64", [| 2L |], i64Bytes [ -3L; 1L <<< 30 ]
                        "f", "F32", [| 1L |], f32Bytes [ 0.25f ] ]
                      (Some "{\"format\":\"pt\"}")
              File.WriteAllBytes(path, file)
              let tensors = Safetensors.read path |> Map.ofList
              Expect.sequenceEqual tensors["h"].Shape [| 7L |] "h shape"
              Expect.sequenceEqual
                  (bits tensors["h"].Values)
                  (bits [| 1.5f; -2.0f; 65504.0f; 6.103515625e-05f; 5.9604644775390625e-08f; -0.0f; Single.PositiveInfinity |])
                  "F16 values"
              Expect.sequenceEqual tensors["b"].Shape [| 5L; 1L |] "b shape"
              Expect.sequenceEqual
                  (bits tensors["b"].Values)
                  (bits [| 1.5f; -2.0f; 3.140625f; float32 ((2.0 - 1.0 / 128.0) * Math.Pow(2.0, 127.0)); float32 (Math.Pow(2.0, -133.0)) |])
                  "BF16 values"
              Expect.sequenceEqual
                  (bits tensors["d"].Values)
                  (bits [| 1.5f; -2.0f; 0.1f; 0.0f; Single.NegativeInfinity |])
                  "F64 values (nearest float32; -1e300 overflows to -inf)"
              Expect.sequenceEqual tensors["i"].Values [| -3.0f; 1073741824.0f |] "I64 values"
              Expect.sequenceEqual tensors["f"].Values [| 0.25f |] "F32 value"
          }

          testPropertyWithConfig propertyConfig "random float32 tensors survive a safetensors round trip bit-exactly"
          <| Prop.forAll arbTensors (fun tensors ->
              use dir = new TempDir()
              let path = dir.File "p.safetensors"
              let named = tensors |> List.mapi (fun i t -> sprintf "t%d" i, t)
              Safetensors.writeWithMetadata path (Map.ofList [ "k", "v" ]) named
              let back, meta = Safetensors.readWithMetadata path
              let back = Map.ofList back
              meta = Map.ofList [ "k", "v" ]
              && back.Count = named.Length
              && named |> List.forall (fun (name, t) -> sameBits back[name] t)) ]
