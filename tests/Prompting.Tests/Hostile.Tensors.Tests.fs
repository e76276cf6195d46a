/// Hostile tensor files (issue 18): safetensors ranges that overlap, alias, leave gaps or
/// trailing bytes; duplicate names; tensors over 2 GiB; a huge block index; npz bombs and
/// members over 2 GiB. Each must fail with one line naming the file and the problem, quickly.
module Prompting.Tests.HostileTensors

open System
open System.IO
open System.IO.Compression
open Expecto
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Tests.TestSupport
open Prompting.Tests.HostileSupport

let private f32 (values: float32[]) =
    let bytes = Array.zeroCreate<byte> (values.Length * 4)
    Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length)
    bytes

let private entry name dtype (shape: int64 list) (b: int64) (e: int64) =
    sprintf "\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%d,%d]}" name dtype (String.Join(",", shape)) b e

let private header (entries: string list) = "{" + String.Join(",", entries) + "}"

/// Safetensors.read must fail within a few seconds with one line naming the file and fragments.
let private expectSafetensorsError (path: string) (fragments: string list) =
    let msg = failsWithin 10.0 path (fun () -> Safetensors.read path)
    expectMessage msg (path :: fragments) (Path.GetFileName path)

[<Tests>]
let safetensors =
    testList
        "hostile safetensors"
        [ test "aliased ranges: two tensors on the same bytes" {
              use dir = new TempDir()
              let data = f32 [| 1.0f; 2.0f; 3.0f; 4.0f |]
              let path = rawSafetensors (dir.File "alias.safetensors") (header [ entry "a" "F32" [ 4 ] 0L 16L; entry "b" "F32" [ 4 ] 0L 16L ]) data 0L
              expectSafetensorsError path [ "overlap"; "'a'"; "'b'" ]
          }

          test "overlapping ranges" {
              use dir = new TempDir()
              let data = f32 [| 1.0f; 2.0f; 3.0f; 4.0f; 5.0f; 6.0f |]
              let path = rawSafetensors (dir.File "overlap.safetensors") (header [ entry "a" "F32" [ 4 ] 0L 16L; entry "b" "F32" [ 4 ] 8L 24L ]) data 0L
              expectSafetensorsError path [ "overlap" ]
          }

          test "a gap between tensors" {
              use dir = new TempDir()
              let data = f32 [| 1.0f; 2.0f; 3.0f |]
              let path = rawSafetensors (dir.File "gap.safetensors") (header [ entry "a" "F32" [ 1 ] 0L 4L; entry "b" "F32" [ 1 ] 8L 12L ]) data 0L
              expectSafetensorsError path [ "unused bytes"; "'b'" ]
          }

          test "trailing bytes after the last tensor" {
              use dir = new TempDir()
              let data = Array.append (f32 [| 1.0f; 2.0f |]) (Array.create 5 7uy)
              let path = rawSafetensors (dir.File "trailing.safetensors") (header [ entry "a" "F32" [ 2 ] 0L 8L ]) data 0L
              expectSafetensorsError path [ "5 trailing bytes" ]
          }

          test "a duplicate tensor name" {
              use dir = new TempDir()
              let data = f32 [| 1.0f; 2.0f |]
              let path = rawSafetensors (dir.File "duplicate.safetensors") (header [ entry "w" "F32" [ 1 ] 0L 4L; entry "w" "F32" [ 1 ] 4L 8L ]) data 0L
              expectSafetensorsError path [ "duplicate"; "'w'" ]
          }

          test "a tensor of 3 GB (over the array limit) fails from the header, before any allocation" {
              use dir = new TempDir()
              let size = 3_000_000_000L
              let path = rawSafetensors (dir.File "huge.safetensors") (header [ entry "big" "U8" [ size ] 0L size ]) [||] size
              let msg, seconds = timed (fun () -> expectSafetensorsError path [ "'big'"; "too many" ])
              Expect.isLessThan seconds 5.0 "refused from the header"
              ignore msg
          }

          test "a tensor larger than one read chunk is read in pieces, bit-exact" {
              use dir = new TempDir()
              let n = 700_000 // 2.8 MB of F32, 1.4 MB of F16: several 1 MiB chunks each
              let values = Array.init n (fun i -> float32 (i % 1000) * 0.5f - 3.0f)
              let halves = values |> Array.collect (fun v -> BitConverter.GetBytes(BitConverter.HalfToUInt16Bits(Half.op_Explicit v)))
              let path =
                  rawSafetensors (dir.File "chunks.safetensors")
                      (header [ entry "a" "F32" [ int64 n ] 0L (4L * int64 n); entry "h" "F16" [ int64 n ] (4L * int64 n) (6L * int64 n) ])
                      (Array.append (f32 values) halves) 0L
              let tensors = Safetensors.read path |> Map.ofList
              Expect.sequenceEqual (bits tensors["a"].Values) (bits values) "F32 across chunks"
              Expect.sequenceEqual (bits tensors["h"].Values) (bits values) "F16 across chunks (values exact in half)"
          }

          test "a block index of 99,999,999 in a key name fails at once, naming the key" {
              use dir = new TempDir()
              let tensors, metadata = Safetensors.readWithMetadata (fixture "vit_micro.safetensors")
              let path = dir.File "deep.safetensors"
              let extra = "blocks.99999999.norm1.weight", HostTensor.create [| 48L |] (Array.zeroCreate 48)
              Safetensors.writeWithMetadata path metadata (tensors @ [ extra ])
              let msg = failsWithin 10.0 path (fun () -> Checkpoint.read path (Some 3))
              expectMessage msg [ path; "blocks.99999999.norm1.weight"; "block 99999999" ] "deep"
          }

          test "a head count of 0 recorded in the metadata is an error, not a division by zero" {
              use dir = new TempDir()
              let tensors, metadata = Safetensors.readWithMetadata (fixture "vit_micro.safetensors")
              let path = dir.File "heads.safetensors"
              Safetensors.writeWithMetadata path (metadata.Add("heads", "0")) tensors
              let msg = failsWithin 10.0 path (fun () -> Checkpoint.read path None)
              expectMessage msg [ path; "0 attention heads" ] "heads"
          }

          test "a missing block in the middle is named" {
              use dir = new TempDir()
              let tensors, metadata = Safetensors.readWithMetadata (fixture "vit_micro.safetensors")
              let path = dir.File "gap-blocks.safetensors"
              let renamed = tensors |> List.map (fun (k, v) -> (if k.StartsWith "blocks.1." then "blocks.3." + k.Substring 9 else k), v)
              Safetensors.writeWithMetadata path metadata renamed
              let msg = failsWithin 10.0 path (fun () -> Checkpoint.read path (Some 3))
              expectMessage msg [ path; "blocks.1 is missing" ] "gap"
          } ]

[<Tests>]
let npz =
    testList
        "hostile npz"
        [ test "a member that decompresses to 2.4 GB from a few MB fails from the directory, naming it" {
              use dir = new TempDir()
              let path = npzBomb (dir.File "bomb.npz") "embedding/kernel" [ 600_000_000L ]
              let msg = failsWithin 20.0 path (fun () -> Npz.read path)
              expectMessage msg [ path; "embedding/kernel"; "too large" ] "bomb over 2 GiB"
          }

          test "a member of 400 MB from a small file is refused as a decompression bomb" {
              use dir = new TempDir()
              let path = npzBomb (dir.File "bomb400.npz") "cls" [ 100_000_000L ]
              Expect.isLessThan (FileInfo(path).Length) (4L <<< 20) "the bomb is small"
              let msg = failsWithin 10.0 path (fun () -> Npz.read path)
              expectMessage msg [ path; "decompression bomb" ] "bomb"
          }

          test "a deflated member that yields more than its declared size is refused" {
              use dir = new TempDir()
              let path = dir.File "liar.npz"
              let writeZip () =
                  use zip = ZipFile.Open(path, ZipArchiveMode.Create)
                  let entry = zip.CreateEntry("x.npy", CompressionLevel.Optimal)
                  use s = entry.Open()
                  let bytes = Npy.serialize (HostTensor.create [| 64L |] (Array.init 64 float32))
                  s.Write(bytes, 0, bytes.Length)
              writeZip ()
              let bytes = File.ReadAllBytes path
              let central = [| for i in 0 .. bytes.Length - 4 do if bytes[i] = 0x50uy && bytes[i + 1] = 0x4Buy && bytes[i + 2] = 1uy && bytes[i + 3] = 2uy then yield i |]
              Expect.equal central.Length 1 "one central directory entry"
              let declared = BitConverter.ToUInt32(bytes, central[0] + 24)
              let smaller = BitConverter.GetBytes(declared - 16u)
              Array.blit smaller 0 bytes 22 4
              Array.blit smaller 0 bytes (central[0] + 24) 4
              File.WriteAllBytes(path, bytes)
              let msg = failsWithin 10.0 path (fun () -> Npz.read path)
              expectMessage msg [ path ] "liar"
          } ]
