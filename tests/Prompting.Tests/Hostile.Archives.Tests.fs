/// Hostile data files (issue 18): gzip, tar and tar.gz bombs, members over 2 GiB, IDX headers
/// whose dimensions claim gigabytes or overflow. Each fails from the header, before allocating,
/// with one line naming the file, in bounded time.
module Prompting.Tests.HostileArchives

open System
open System.IO
open System.Formats.Tar
open Expecto
open Prompting
open Prompting.Data
open Prompting.Tests.TestSupport
open Prompting.Tests.HostileSupport

let private idxHeader (dims: int list) = Prompting.Tests.Data.idxBytes dims [||]

[<Tests>]
let tests =
    testList
        "hostile archives"
        [ test "a gzipped IDX file that expands to 900 MB is refused from its header" {
              use dir = new TempDir()
              let path = gzipBomb (dir.File "train-images-idx3-ubyte.gz") (idxHeader [ 1; 30000; 30000 ]) 900_000_000L
              Expect.isLessThan (FileInfo(path).Length) (4L <<< 20) "the bomb is small"
              let msg = failsWithin 10.0 path (fun () -> Idx.readImages path)
              expectMessage msg [ path; "decompression bomb" ] "IDX bomb"
          }

          test "IDX dimensions whose product overflows 64 bits are an error" {
              use dir = new TempDir()
              let path = dir.File "train-images-idx3-ubyte"
              // 2^21 x 2^21 x 2^22 = 2^64: the unchecked product wraps to 0, matching no data.
              File.WriteAllBytes(path, idxHeader [ 1 <<< 21; 1 <<< 21; 1 <<< 22 ])
              let msg = failsWithin 10.0 path (fun () -> Idx.readImages path)
              expectMessage msg [ path; "overflow" ] "IDX overflow"
          }

          test "IDX images over the pixel budget are refused" {
              use dir = new TempDir()
              let path = dir.File "train-images-idx3-ubyte"
              // 0 images of 65536 x 65536: no data at all, but each image would need 12 GB.
              File.WriteAllBytes(path, idxHeader [ 0; 65536; 65536 ])
              let msg = failsWithin 10.0 path (fun () -> Idx.readImages path)
              expectMessage msg [ path; "budget" ] "IDX image size"
          }

          test "a .tar.gz member of 3 GB of zeros fails at its header, naming the archive and member" {
              use dir = new TempDir()
              let path = tarGzBomb (dir.File "cifar-10-binary.tar.gz") "cifar-10-batches-bin/data_batch_1.bin" 3_000_000_000L
              let msg, seconds = timed (fun () -> failsWithin 20.0 path (fun () -> Cifar.read10 path))
              expectMessage msg [ path; "data_batch_1.bin" ] "tar.gz member over 2 GiB"
              Expect.isLessThan seconds 5.0 "refused without decompressing it"
          }

          test "a .tar.gz that expands to 500 MB is refused as a bomb, skipped members included" {
              use dir = new TempDir()
              let path = tarGzBomb (dir.File "images.tar.gz") "padding/not-wanted.bin" 500_000_000L
              let msg, seconds = timed (fun () -> failsWithin 20.0 path (fun () -> Readers.readTarMembers path (fun _ -> false)))
              expectMessage msg [ path; "decompression bomb" ] "tar.gz bomb"
              Expect.isLessThan seconds 10.0 "stops at the budget"
          }

          test "a PAX header claiming 1.9 GB is refused before the tar reader allocates it" {
              use dir = new TempDir()
              let path = dir.File "pax.tar"
              File.WriteAllBytes(path, Array.append (ustarHeader "PaxHeaders/x" 1_900_000_000L |> fun h -> (h[156] <- byte 'x'; fixChecksum h)) (Array.zeroCreate 2048))
              let before = GC.GetAllocatedBytesForCurrentThread()
              let msg = failsWithin 10.0 path (fun () -> Readers.indexTar path)
              expectMessage msg [ path; "PaxHeaders/x"; "1900000000" ] "PAX size"
              Expect.isLessThan (GC.GetAllocatedBytesForCurrentThread() - before) (64L <<< 20) "nothing of that size allocated"
              // Gzipped, 10 MB of attributes fit the decompression budget but not the metadata limit.
              let gz = dir.File "pax.tar.gz"
              File.WriteAllBytes(gz, Prompting.Tests.Data.gzipBytes (Array.append (ustarHeader "PaxHeaders/y" 10_000_000L |> fun h -> (h[156] <- byte 'x'; fixChecksum h)) (Array.zeroCreate 10_001_408)))
              let msg2 = failsWithin 10.0 gz (fun () -> Readers.readTarMembers gz (fun _ -> true))
              expectMessage msg2 [ gz; "metadata" ] "PAX limit"
          }

          test "a plain tar member claiming more than the archive is refused" {
              use dir = new TempDir()
              let path = dir.File "tree.tar"
              let writeTar () =
                  use file = File.Create path
                  use writer = new TarWriter(file, TarEntryFormat.Ustar, true)
                  let entry = UstarTarEntry(TarEntryType.RegularFile, "train/a/x.bmp")
                  entry.DataStream <- new MemoryStream(Array.zeroCreate<byte> 600)
                  writer.WriteEntry entry
              writeTar ()
              // Claim 8 GB in the size field (octal, offset 124, 11 digits + NUL).
              let bytes = File.ReadAllBytes path
              let size = Text.Encoding.ASCII.GetBytes(Convert.ToString(8_000_000_000L, 8).PadLeft(11, '0'))
              Array.blit size 0 bytes 124 11
              // Fix the header checksum (offset 148: the sum of the header with the field as spaces).
              for i in 148 .. 155 do bytes[i] <- byte ' '
              let sum = Array.sumBy int bytes[0..511]
              Array.blit (Text.Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\000 ")) 0 bytes 148 8
              File.WriteAllBytes(path, bytes)
              let msg = failsWithin 10.0 path (fun () -> Readers.readTarMembers path (fun _ -> true))
              expectMessage msg [ path ] "tar member"
          } ]
