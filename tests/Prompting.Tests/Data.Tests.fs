/// The data layer: readers (CIFAR binary, image folders and tars, IDX), subsets, transforms, the
/// parallel loader and the downloader (against a local HTTP server).
module Prompting.Tests.Data

open System
open System.IO
open System.IO.Compression
open System.Formats.Tar
open System.Net
open System.Net.Sockets
open System.Text
open System.Threading
open Expecto
open Prompting
open Prompting.Data
open Prompting.Vit
open Prompting.Tests.TestSupport

// ---------------------------------------------------------------- helpers

/// HWC pixels of a 32×32 CIFAR image that identify the record.
let cifarPixels (record: int) = Array.init Cifar.pixelBytes (fun i -> byte ((i * 7 + record * 31 + i / 3) % 256))

let writeText (path: string) (lines: string seq) = File.WriteAllText(path, String.Join("\n", lines) + "\n\n")

let cifar10Names = [| "airplane"; "automobile"; "bird"; "cat"; "deer"; "dog"; "frog"; "horse"; "ship"; "truck" |]

/// Five training batches of two records and a test batch of three, in `dir`.
let writeCifar10 (dir: string) =
    Directory.CreateDirectory dir |> ignore
    let records = ResizeArray()
    for b in 1..5 do
        let batch = [ for k in 0..1 -> let r = (b - 1) * 2 + k in (r * 3) % 10, cifarPixels r ]
        records.AddRange batch
        File.WriteAllBytes(Path.Combine(dir, sprintf "data_batch_%d.bin" b), Cifar.encode Cifar.Cifar10 batch)
    let test = [ for r in 100..102 -> r % 10, cifarPixels r ]
    File.WriteAllBytes(Path.Combine(dir, "test_batch.bin"), Cifar.encode Cifar.Cifar10 test)
    writeText (Path.Combine(dir, "batches.meta.txt")) cifar10Names
    List.ofSeq records, test

/// CIFAR-100 with coarse labels that differ from the fine ones, to check the fine label is used.
let writeCifar100 (dir: string) =
    Directory.CreateDirectory dir |> ignore
    let withCoarse (records: (int * byte[]) list) =
        let bytes = Cifar.encode Cifar.Cifar100 records
        for r in 0 .. records.Length - 1 do
            bytes[r * Cifar.recordSize Cifar.Cifar100] <- byte (19 - r % 20)
        bytes
    let train = [ for r in 0..6 -> (r * 37) % 100, cifarPixels r ]
    let test = [ for r in 50..53 -> (r * 11) % 100, cifarPixels r ]
    File.WriteAllBytes(Path.Combine(dir, "train.bin"), withCoarse train)
    File.WriteAllBytes(Path.Combine(dir, "test.bin"), withCoarse test)
    writeText (Path.Combine(dir, "fine_label_names.txt")) [ for i in 0..99 -> sprintf "class_%02d" i ]
    writeText (Path.Combine(dir, "coarse_label_names.txt")) [ for i in 0..19 -> sprintf "super_%02d" i ]
    train, test

/// A tar (gzipped or not) of the files under `dir`, each entry named prefix + relative path.
let writeTar (gzip: bool) (archive: string) (prefix: string) (dir: string) =
    use file = File.Create archive
    use stream: Stream = if gzip then new GZipStream(file, CompressionLevel.Fastest) else file
    use writer = new TarWriter(stream, TarEntryFormat.Pax, true)
    for f in Directory.GetFiles(dir, "*", SearchOption.AllDirectories) |> Array.sort do
        writer.WriteEntry(f, prefix + Path.GetRelativePath(dir, f).Replace('\\', '/'))

let expectSamples (what: string) (samples: Sample[]) (expected: (int * byte[]) list) =
    Expect.equal samples.Length expected.Length (what + ": count")
    List.iteri
        (fun i (label, pixels: byte[]) ->
            Expect.equal samples[i].Label label (sprintf "%s: label of %d" what i)
            let img = samples[i].Load()
            Expect.equal (img.Width, img.Height) (32, 32) (sprintf "%s: size of %d" what i)
            Expect.sequenceEqual img.Pixels pixels (sprintf "%s: pixels of %d" what i))
        expected

/// A big-endian IDX file of unsigned bytes.
let idxBytes (dims: int list) (data: byte[]) =
    [| yield! [| 0uy; 0uy; 8uy; byte dims.Length |]
       for d in dims do
           yield! [| byte (d >>> 24); byte (d >>> 16); byte (d >>> 8); byte d |]
       yield! data |]

let gzipBytes (bytes: byte[]) =
    use ms = new MemoryStream()
    (use gz = new GZipStream(ms, CompressionLevel.Fastest, true)
     gz.Write(bytes, 0, bytes.Length))
    ms.ToArray()

/// An image of width × height whose pixels identify (seed, x, y).
let writeImage (path: string) (seed: int) (width: int) (height: int) =
    Prompting.Tests.Cli.writeBmp path width height (fun x y -> byte (seed * 40 + x), byte (y * 9), byte (seed + x + y))

/// The split layout with classes "b", "B" and "a" (ordinal order: B, a, b) and BMP images.
let writeImageTree (root: string) =
    for split, count in [ "train", 3; "test", 2 ] do
        for ci, cls in List.indexed [ "b"; "B"; "a" ] do
            for k in 0 .. count - 1 do
                writeImage (Path.Combine(root, split, cls, sprintf "img%d.bmp" k)) (ci * 10 + k) (5 + k) 4

let syntheticSample (index: int) (label: int) =
    { Source = sprintf "synthetic#%d" index
      Label = label
      Load =
        fun () ->
            { Width = 9
              Height = 7
              Pixels = Array.init (9 * 7 * 3) (fun i -> byte ((i * 5 + index * 17) % 256)) } }

let syntheticDataset (classes: int) (trainPer: int) (testPer: int) =
    { Name = "synthetic"
      ClassNames = Array.init classes (sprintf "c%d")
      Train = Array.init (classes * trainPer) (fun i -> syntheticSample i (i % classes))
      Test = Array.init (classes * testPer) (fun i -> syntheticSample (1000 + i) (i % classes)) }

// ---------------------------------------------------------------- a tiny HTTP server

/// Serves `files` on 127.0.0.1 with HTTP Range support; with `dropFirst`, the first response for
/// each file announces the whole length, sends half of it and closes the connection.
type TestServer(files: Map<string, byte[]>, dropFirst: bool) =
    let listener = new TcpListener(IPAddress.Loopback, 0)
    do listener.Start()
    let port = (listener.LocalEndpoint :?> IPEndPoint).Port
    let requests = Collections.Concurrent.ConcurrentQueue<string * string option>()
    let dropped = Collections.Concurrent.ConcurrentDictionary<string, bool>()

    let readHead (stream: NetworkStream) =
        let sb = StringBuilder()
        let mutable finished = false
        while not finished do
            let b = stream.ReadByte()
            if b < 0 then finished <- true
            else
                sb.Append(char b) |> ignore
                if sb.Length >= 4 && sb.ToString(sb.Length - 4, 4) = "\r\n\r\n" then finished <- true
        sb.ToString()

    let handle (client: TcpClient) =
        use client = client
        use stream = client.GetStream()
        let lines = (readHead stream).Split("\r\n")
        let path = (lines[0].Split(' ')).[1]
        let range =
            lines
            |> Array.tryFind (fun l -> l.StartsWith("Range:", StringComparison.OrdinalIgnoreCase))
            |> Option.map (fun l -> l.Substring(6).Trim())
        requests.Enqueue((path, range))
        let send (head: string) (body: byte[]) =
            let h = Encoding.ASCII.GetBytes(head + "Connection: close\r\n\r\n")
            stream.Write(h, 0, h.Length)
            stream.Write(body, 0, body.Length)
            stream.Flush()
        match files.TryFind path with
        | None -> send "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n" [||]
        | Some content ->
            let start =
                match range with
                | Some r when r.StartsWith "bytes=" -> int64 (r.Substring(6).TrimEnd('-'))
                | _ -> 0L
            if start >= int64 content.Length then
                send (sprintf "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%d\r\nContent-Length: 0\r\n" content.Length) [||]
            else
                let body = content[int start ..]
                let head =
                    if range.IsSome then
                        sprintf "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" start (content.Length - 1) content.Length body.Length
                    else sprintf "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" body.Length
                if dropFirst && dropped.TryAdd(path, true) then
                    // announce everything, send half, hang up
                    send head body[.. body.Length / 2 - 1]
                    client.Client.Shutdown SocketShutdown.Both
                else send head body

    let loop =
        Thread(
            ThreadStart(fun () ->
                try
                    while true do
                        let client = listener.AcceptTcpClient()
                        try handle client with _ -> ()
                with _ -> ()),
            IsBackground = true
        )

    do loop.Start()

    member _.Url(path: string) = sprintf "http://127.0.0.1:%d%s" port path
    member _.Requests = List.ofSeq requests

    interface IDisposable with
        member _.Dispose() =
            listener.Stop()
            loop.Join(5000) |> ignore

let quietOptions (cache: string) =
    { Download.defaults () with
        CacheDirectory = cache
        ConnectTimeout = TimeSpan.FromSeconds 5.0
        ReadTimeout = TimeSpan.FromSeconds 10.0 }

let sha256Hex (bytes: byte[]) = Convert.ToHexString(Security.Cryptography.SHA256.HashData bytes).ToLowerInvariant()
let md5Hex (bytes: byte[]) = Convert.ToHexString(Security.Cryptography.MD5.HashData bytes).ToLowerInvariant()

let payload (n: int) = Array.init n (fun i -> byte ((i * 131 + i / 256) % 251))

// ---------------------------------------------------------------- tests

[<Tests>]
let cifar =
    testList
        "data cifar"
        [ test "CIFAR-10 batch files read back exactly" {
              use dir = new TempDir()
              let train, test = writeCifar10 dir.Path
              let d = Cifar.read10 dir.Path
              Expect.equal d.Name "CIFAR-10" "name"
              Expect.sequenceEqual d.ClassNames cifar10Names "class names (blank lines ignored)"
              expectSamples "train" d.Train train
              expectSamples "test" d.Test test
              Expect.equal d.Train[3].Source (Path.Combine(dir.Path, "data_batch_2.bin") + "#1") "source names file and record"
          }

          test "CIFAR-10 directory found from its parent and by auto-detection" {
              use dir = new TempDir()
              let train, _ = writeCifar10 (Path.Combine(dir.Path, "cifar-10-batches-bin"))
              expectSamples "read10 on the parent" (Cifar.read10 dir.Path).Train train
              let d = Cifar.read dir.Path
              Expect.equal d.Name "CIFAR-10" "detected"
          }

          test "CIFAR-100 uses the fine labels and fine_label_names.txt" {
              use dir = new TempDir()
              let train, test = writeCifar100 dir.Path
              let d = Cifar.read100 dir.Path
              Expect.equal d.ClassNames.Length 100 "classes"
              Expect.equal d.ClassNames[37] "class_37" "fine names"
              expectSamples "train" d.Train train
              expectSamples "test" d.Test test
              Expect.equal (Cifar.read dir.Path).Name "CIFAR-100" "detected"
          }

          test "CIFAR-10 and CIFAR-100 read straight from .tar.gz archives" {
              use dir = new TempDir()
              let train10, test10 = writeCifar10 (dir.File "c10")
              let train100, test100 = writeCifar100 (dir.File "c100")
              writeTar true (dir.File "cifar-10-binary.tar.gz") "cifar-10-batches-bin/" (dir.File "c10")
              writeTar true (dir.File "cifar-100-binary.tar.gz") "cifar-100-binary/" (dir.File "c100")
              let d10 = Cifar.read10 (dir.File "cifar-10-binary.tar.gz")
              expectSamples "10 train" d10.Train train10
              expectSamples "10 test" d10.Test test10
              Expect.stringContains d10.Train[0].Source "cifar-10-binary.tar.gz#cifar-10-batches-bin/data_batch_1.bin#0" "source"
              let d100 = Cifar.read (dir.File "cifar-100-binary.tar.gz")
              Expect.equal d100.Name "CIFAR-100" "detected in the archive"
              expectSamples "100 train" d100.Train train100
              expectSamples "100 test" d100.Test test100
          }

          test "a truncated CIFAR file is an error naming it" {
              use dir = new TempDir()
              writeCifar10 dir.Path |> ignore
              let path = Path.Combine(dir.Path, "data_batch_3.bin")
              let bytes = File.ReadAllBytes path
              File.WriteAllBytes(path, bytes[.. bytes.Length - 2])
              let msg = promptingError "truncated" (fun () -> Cifar.read10 dir.Path)
              expectMessage msg [ path; "truncated"; "3073" ] "truncated"
          }

          test "a missing CIFAR file is an error naming it" {
              use dir = new TempDir()
              writeCifar10 dir.Path |> ignore
              File.Delete(Path.Combine(dir.Path, "test_batch.bin"))
              let msg = promptingError "missing" (fun () -> Cifar.read10 dir.Path)
              expectMessage msg [ Path.Combine(dir.Path, "test_batch.bin"); "not found" ] "missing"
          }

          test "a CIFAR archive missing a member, or cut short, is an error naming it" {
              use dir = new TempDir()
              writeCifar10 (dir.File "c10") |> ignore
              File.Delete(Path.Combine(dir.File "c10", "data_batch_4.bin"))
              writeTar true (dir.File "a.tar.gz") "cifar-10-batches-bin/" (dir.File "c10")
              let msg = promptingError "member" (fun () -> Cifar.read10 (dir.File "a.tar.gz"))
              expectMessage msg [ dir.File "a.tar.gz"; "data_batch_4.bin" ] "member"
              let bytes = File.ReadAllBytes(dir.File "a.tar.gz")
              File.WriteAllBytes(dir.File "cut.tar.gz", bytes[.. bytes.Length / 2])
              let msg = promptingError "cut" (fun () -> Cifar.read10 (dir.File "cut.tar.gz"))
              expectMessage msg [ dir.File "cut.tar.gz" ] "cut"
          }

          test "a label beyond the class names is an error naming the record" {
              use dir = new TempDir()
              writeCifar10 dir.Path |> ignore
              let path = Path.Combine(dir.Path, "test_batch.bin")
              let bytes = File.ReadAllBytes path
              bytes[3073] <- 12uy
              File.WriteAllBytes(path, bytes)
              let msg = promptingError "label" (fun () -> Cifar.read10 dir.Path)
              expectMessage msg [ path; "record 1"; "label 12" ] "label"
          } ]

[<Tests>]
let folders =
    testList
        "data image folders"
        [ test "split layout: ordinal class order, labels, exact pixels" {
              use dir = new TempDir()
              writeImageTree dir.Path
              let r = ImageFolder.read ReadOptions.Defaults dir.Path
              let d = r.Dataset
              Expect.sequenceEqual d.ClassNames [| "B"; "a"; "b" |] "ordinal order"
              Expect.equal d.Train.Length 9 "train"
              Expect.equal d.Test.Length 6 "test"
              Expect.isEmpty r.Skipped "nothing skipped"
              let s = d.Train |> Array.find (fun s -> s.Source.EndsWith(Path.Combine("train", "a", "img1.bmp")))
              Expect.equal s.Label 1 "label of a"
              let img = s.Load()
              let expected = Images.decode s.Source
              Expect.equal (img.Width, img.Height) (6, 4) "size"
              Expect.sequenceEqual img.Pixels expected.Pixels "pixels"
              Expect.equal (int img.Pixels[0], int img.Pixels[1]) ((2 * 10 + 1) * 40 % 256, 0) "the BMP's first pixel"
          }

          test "a single class tree reads with readTree" {
              use dir = new TempDir()
              writeImageTree dir.Path
              let names, samples, skipped = ImageFolder.readTree ReadOptions.Defaults (dir.File "train")
              Expect.sequenceEqual names [| "B"; "a"; "b" |] "classes"
              Expect.equal samples.Length 9 "samples"
              Expect.isEmpty skipped "skipped"
          }

          test "a non-image file is an error naming it, and skipped with the option" {
              use dir = new TempDir()
              writeImageTree dir.Path
              let notes = Path.Combine(dir.Path, "train", "a", "notes.txt")
              File.WriteAllText(notes, "not an image")
              let msg = promptingError "non-image" (fun () -> ImageFolder.read ReadOptions.Defaults dir.Path)
              expectMessage msg [ notes; "not images" ] "non-image"
              let r = ImageFolder.read { SkipCorrupt = true } dir.Path
              Expect.equal r.Dataset.Train.Length 9 "images kept"
              Expect.equal (r.Skipped |> List.map (fun s -> s.Path)) [ notes ] "reported"
          }

          test "a corrupt JPEG fails on load naming it, and is dropped up front with the option" {
              use dir = new TempDir()
              writeImageTree dir.Path
              let bad = Path.Combine(dir.Path, "test", "b", "broken.jpg")
              File.WriteAllBytes(bad, Array.append [| 0xFFuy; 0xD8uy; 0xFFuy |] (Array.create 40 7uy))
              let r = ImageFolder.read ReadOptions.Defaults dir.Path
              let s = r.Dataset.Test |> Array.find (fun s -> s.Source = bad)
              let msg = promptingError "corrupt" (fun () -> s.Load())
              expectMessage msg [ bad; "cannot decode" ] "corrupt"
              let r = ImageFolder.read { SkipCorrupt = true } dir.Path
              Expect.equal r.Dataset.Test.Length 6 "dropped before training"
              Expect.equal (r.Skipped |> List.map (fun s -> s.Path)) [ bad ] "reported"
              Expect.stringContains r.Skipped.Head.Reason "cannot decode" "reason"
          }

          test "different class sets in train and test are an error" {
              use dir = new TempDir()
              writeImageTree dir.Path
              writeImage (Path.Combine(dir.Path, "test", "extra", "x.bmp")) 1 3 3
              let msg = promptingError "classes" (fun () -> ImageFolder.read ReadOptions.Defaults dir.Path)
              expectMessage msg [ dir.Path; "extra" ] "classes"
          }

          test "a class without images is an error" {
              use dir = new TempDir()
              writeImageTree dir.Path
              Directory.CreateDirectory(Path.Combine(dir.Path, "train", "empty")) |> ignore
              Directory.CreateDirectory(Path.Combine(dir.Path, "test", "empty")) |> ignore
              let msg = promptingError "empty" (fun () -> ImageFolder.read ReadOptions.Defaults dir.Path)
              expectMessage msg [ "empty"; "no images" ] "empty"
          }

          test "a tar (or .tar.gz) of the split layout reads like the directory" {
              use dir = new TempDir()
              writeImageTree (dir.File "tree")
              File.WriteAllText(Path.Combine(dir.File "tree", "train", "a", "README"), "x")
              writeTar false (dir.File "tree.tar") "top/" (dir.File "tree")
              let msg = promptingError "tar non-image" (fun () -> ImageFolder.read ReadOptions.Defaults (dir.File "tree.tar"))
              expectMessage msg [ "tree.tar#top/train/a/README" ] "tar non-image"
              let r = ImageFolder.read { SkipCorrupt = true } (dir.File "tree.tar")
              let fromDir = (ImageFolder.read { SkipCorrupt = true } (dir.File "tree")).Dataset
              Expect.sequenceEqual r.Dataset.ClassNames fromDir.ClassNames "classes"
              Expect.equal r.Dataset.Train.Length 9 "train"
              Expect.equal r.Dataset.Test.Length 6 "test"
              for a, b in Array.zip r.Dataset.Train fromDir.Train do
                  Expect.equal a.Label b.Label "label"
                  Expect.sequenceEqual (a.Load()).Pixels (b.Load()).Pixels (sprintf "pixels of %s" a.Source)
              File.Delete(Path.Combine(dir.File "tree", "train", "a", "README"))
              writeTar true (dir.File "tree.tar.gz") "" (dir.File "tree")
              let gz = (ImageFolder.read ReadOptions.Defaults (dir.File "tree.tar.gz")).Dataset
              Expect.equal (gz.Train.Length, gz.Test.Length) (9, 6) "gzipped tar without a top directory"
              for a, b in Array.zip gz.Test fromDir.Test do
                  Expect.sequenceEqual (a.Load()).Pixels (b.Load()).Pixels (sprintf "pixels of %s" a.Source)
          } ]

[<Tests>]
let idx =
    testList
        "data idx"
        [ test "IDX files, plain and gzipped, read back with grey replicated to RGB" {
              use dir = new TempDir()
              let grey n = Array.init (n * 2 * 4) (fun i -> byte (i * 3 + 1))
              File.WriteAllBytes(dir.File "train-images-idx3-ubyte", idxBytes [ 3; 2; 4 ] (grey 3))
              File.WriteAllBytes(dir.File "train-labels-idx1-ubyte", idxBytes [ 3 ] [| 2uy; 0uy; 1uy |])
              File.WriteAllBytes(dir.File "t10k-images-idx3-ubyte.gz", gzipBytes (idxBytes [ 2; 2; 4 ] (grey 2)))
              File.WriteAllBytes(dir.File "t10k-labels-idx1-ubyte.gz", gzipBytes (idxBytes [ 2 ] [| 1uy; 1uy |]))
              let d = Idx.read "tiny" [| "zero"; "one"; "two" |] dir.Path
              Expect.equal (d.Train |> Array.map (fun s -> s.Label)) [| 2; 0; 1 |] "train labels"
              Expect.equal (d.Test |> Array.map (fun s -> s.Label)) [| 1; 1 |] "test labels"
              for split, samples in [ "train", d.Train; "test", d.Test ] do
                  let g = grey samples.Length
                  samples
                  |> Array.iteri (fun i s ->
                      let img = s.Load()
                      Expect.equal (img.Width, img.Height) (4, 2) "size"
                      let expected = Array.init 24 (fun k -> g[i * 8 + k / 3])
                      Expect.sequenceEqual img.Pixels expected (sprintf "%s %d pixels" split i))
          }

          test "bad magic, truncation, trailing bytes and count mismatch are errors naming the file" {
              use dir = new TempDir()
              let images = dir.File "train-images-idx3-ubyte"
              let labels = dir.File "train-labels-idx1-ubyte"
              File.WriteAllBytes(dir.File "t10k-images-idx3-ubyte", idxBytes [ 1; 2; 2 ] (Array.zeroCreate 4))
              File.WriteAllBytes(dir.File "t10k-labels-idx1-ubyte", idxBytes [ 1 ] [| 0uy |])
              let read () = Idx.mnist dir.Path
              File.WriteAllBytes(labels, idxBytes [ 2 ] [| 0uy; 1uy |])
              File.WriteAllBytes(images, idxBytes [ 2; 2; 2 ] (Array.zeroCreate 8) |> Array.mapi (fun i b -> if i = 3 then 1uy else b))
              expectMessage (promptingError "magic" read) [ images; "magic" ] "magic"
              File.WriteAllBytes(images, idxBytes [ 2; 2; 2 ] (Array.zeroCreate 7))
              expectMessage (promptingError "truncated" read) [ images; "truncated" ] "truncated"
              File.WriteAllBytes(images, idxBytes [ 2; 2; 2 ] (Array.zeroCreate 9))
              expectMessage (promptingError "trailing" read) [ images; "trailing" ] "trailing"
              File.WriteAllBytes(images, idxBytes [ 3; 2; 2 ] (Array.zeroCreate 12))
              expectMessage (promptingError "count" read) [ labels; "2 labels"; "3 images" ] "count"
              File.Delete images
              expectMessage (promptingError "missing" read) [ dir.Path; "train-images-idx3-ubyte" ] "missing"
          }

          test "Fashion-MNIST from /usr/share/datasets when installed" {
              let dir = "/usr/share/datasets/fashion-mnist"
              if not (File.Exists(Path.Combine(dir, "train-images-idx3-ubyte.gz"))) then
                  skiptest "Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)"
              let d = Idx.fashionMnist dir
              Expect.equal d.Train.Length 60000 "train"
              Expect.equal d.Test.Length 10000 "test"
              Expect.sequenceEqual (Dataset.classCounts 10 d.Train) (Array.create 10 6000) "train per class"
              Expect.sequenceEqual (Dataset.classCounts 10 d.Test) (Array.create 10 1000) "test per class"
              let img = d.Train[0].Load()
              Expect.equal (img.Width, img.Height) (28, 28) "size"
              Expect.equal d.Train[0].Label 9 "the first training image is an ankle boot"
          } ]

[<Tests>]
let subsets =
    testList
        "data subsets"
        [ test "seeded per-class subsets are deterministic, per class and nested" {
              let d = syntheticDataset 5 20 10
              let sources (s: Sample[]) = s |> Array.map (fun s -> s.Source)
              let a = Dataset.subset 3 4 2 d
              let b = Dataset.subset 3 4 2 d
              Expect.sequenceEqual (Dataset.classCounts 5 a.Train) (Array.create 5 4) "train per class"
              Expect.sequenceEqual (Dataset.classCounts 5 a.Test) (Array.create 5 2) "test per class"
              Expect.sequenceEqual (sources a.Train) (sources b.Train) "same seed, same train"
              Expect.sequenceEqual (sources a.Test) (sources b.Test) "same seed, same test"
              let c = Dataset.subset 4 4 2 d
              Expect.notEqual (sources c.Train) (sources a.Train) "another seed, another choice"
              let larger = Dataset.subset 3 6 2 d
              Expect.isTrue (Set.isSubset (set (sources a.Train)) (set (sources larger.Train))) "a larger subset contains the smaller"
              let indices = a.Train |> Array.map (fun s -> int (s.Source.Split('#')[1]))
              Expect.equal indices (Array.sort indices) "original order kept"
              Expect.equal (Dataset.subset 3 100 100 d).Train.Length 100 "fewer than asked keeps all"
          }

          test "ofClasses keeps the given classes only" {
              let d = syntheticDataset 5 4 2 |> Dataset.ofClasses [ 1; 3 ]
              Expect.equal (d.Train |> Array.map (fun s -> s.Label) |> Array.distinct |> Array.sort) [| 1; 3 |] "labels"
              Expect.equal d.Test.Length 4 "test"
          } ]

[<Tests>]
let transforms =
    testList
        "data transforms"
        [ test "the evaluation pipeline equals Images.preprocess" {
              let img = Images.decode (fixture "images/grad_37x29.png")
              for p in [ Preprocessing.augreg; Preprocessing.imagenet ] do
                  for size in [ 24; 16 ] do
                      let t = Transforms.evaluation Normalised p size
                      Expect.equal t.Size size "size"
                      Expect.sequenceEqual (bits (t.Apply (Random 1) img)) (bits (Images.preprocess size p img)) "bit-exact"
          }

          test "to float is Images.normalize, bit for bit, for every 8-bit value" {
              let img = { Width = 16; Height = 16; Pixels = Array.init (256 * 3) (fun i -> byte ((i / 3 + 85 * (i % 3)) % 256)) }
              for p in [ Preprocessing.augreg; Preprocessing.imagenet ] do
                  Expect.sequenceEqual (bits (Transforms.toFloat Normalised p img)) (bits (Images.normalize p img)) "values"
              let msg = promptingError "stats" (fun () -> Transforms.toFloat Normalised { Preprocessing.augreg with Std = [| 1.0f |] } img)
              expectMessage msg [ "3 means" ] "stats"
          }

          test "unit range: v / 255 without normalisation" {
              let img = Images.decode (fixture "images/grad_20x52.jpg")
              let t = Transforms.evaluation UnitRange Preprocessing.augreg 16
              let out = t.Apply (Random 1) img
              let cropped = img |> Images.resizeShorter 17 |> Images.centerCrop 16
              let plane = 16 * 16
              let expected = Array.init (3 * plane) (fun k -> float32 cropped.Pixels[(k % plane) * 3 + k / plane] / 255.0f)
              Expect.sequenceEqual (bits out) (bits expected) "values"
              Expect.isTrue (out |> Array.forall (fun v -> v >= 0.0f && v <= 1.0f)) "in [0, 1]"
          }

          test "RandomResizedCrop: output size, boxes inside the image, deterministic for a seed" {
              let img = ImagesTests.coordinateImage 40 30
              let a = Transforms.randomResizedCrop (Random 7) 24 img
              let b = Transforms.randomResizedCrop (Random 7) 24 img
              Expect.equal (a.Width, a.Height) (24, 24) "size"
              Expect.sequenceEqual a.Pixels b.Pixels "same seed, same crop"
              let differing =
                  [ 1..20 ] |> List.filter (fun s -> (Transforms.randomResizedCrop (Random s) 24 img).Pixels <> a.Pixels) |> List.length
              Expect.isGreaterThan differing 15 "other seeds give other crops"
              let rng = Random 11
              for _ in 1..2000 do
                  let box = Transforms.randomResizedCropBox rng Transforms.defaultScale Transforms.defaultRatio 40 30
                  Expect.isTrue (box.Top >= 0 && box.Left >= 0 && box.Top + box.Height <= 30 && box.Left + box.Width <= 40) "inside"
                  let area = float (box.Width * box.Height) / 1200.0
                  Expect.isTrue (area >= 0.06 && area <= 1.0) (sprintf "area fraction %g" area)
          }

          test "RandomResizedCrop falls back to a center crop at the nearest allowed ratio" {
              // no box with at least twice the image's area exists: 10 attempts fail
              let box = Transforms.randomResizedCropBox (Random 1) (2.0, 3.0) Transforms.defaultRatio 100 10
              Expect.equal box { Top = 0; Left = 43; Height = 10; Width = 13 } "wide image: height kept, width round(10 * 4/3)"
              let box = Transforms.randomResizedCropBox (Random 1) (2.0, 3.0) Transforms.defaultRatio 10 100
              Expect.equal box { Top = 43; Left = 0; Height = 13; Width = 10 } "tall image: width kept, height round(10 / (3/4))"
              let box = Transforms.randomResizedCropBox (Random 1) (2.0, 3.0) Transforms.defaultRatio 20 18
              Expect.equal box { Top = 0; Left = 0; Height = 18; Width = 20 } "allowed ratio: whole image"
          }

          test "horizontal flip mirrors; random flip follows p" {
              let img = ImagesTests.coordinateImage 7 3
              let flipped = Transforms.hflip img
              for y in 0..2 do
                  for x in 0..6 do
                      let o = (y * 7 + x) * 3
                      Expect.equal (int flipped.Pixels[o], int flipped.Pixels[o + 1]) (6 - x, y) "mirrored"
              Expect.sequenceEqual (Transforms.hflip flipped).Pixels img.Pixels "twice is the identity"
              Expect.isTrue (obj.ReferenceEquals(Transforms.randomHorizontalFlip (Random 1) 0.0 img, img)) "p = 0"
              Expect.sequenceEqual (Transforms.randomHorizontalFlip (Random 1) 1.0 img).Pixels flipped.Pixels "p = 1"
              let flips =
                  let rng = Random 5
                  [ 1..1000 ] |> List.filter (fun _ -> not (obj.ReferenceEquals(Transforms.randomHorizontalFlip rng 0.5 img, img))) |> List.length
              Expect.isTrue (flips > 430 && flips < 570) (sprintf "about half flipped: %d" flips)
          }

          test "the training pipeline gives S×S CHW and is reproducible from its generator" {
              let img = Images.decode (fixture "images/grad_37x29.png")
              let t = Transforms.training Normalised Preprocessing.augreg 16
              let a = t.Apply (Random 3) img
              Expect.equal a.Length (3 * 16 * 16) "length"
              Expect.sequenceEqual (bits (t.Apply (Random 3) img)) (bits a) "reproducible"
              Expect.isTrue (a |> Array.forall (fun v -> v >= -1.0f && v <= 1.0f)) "normalised range"
          } ]

[<Tests>]
let loader =
    let samples = (syntheticDataset 7 9 1).Train // 63 samples, 9x7 images
    let transform = Transforms.training Normalised Preprocessing.augreg 6
    let options = { LoaderOptions.Defaults with BatchSize = 8; Shuffle = true; Seed = 42 }
    let collect (o: LoaderOptions) epoch = Loader.epoch o transform samples epoch |> Array.ofSeq
    let same (a: Batch[]) (b: Batch[]) (what: string) =
        Expect.equal a.Length b.Length (what + ": batch count")
        for x, y in Array.zip a b do
            Expect.equal x.Index y.Index (what + ": index")
            Expect.sequenceEqual x.Labels y.Labels (what + ": labels")
            Expect.sequenceEqual x.Indices y.Indices (what + ": indices")
            Expect.sequenceEqual (bits x.Pixels) (bits y.Pixels) (what + ": pixels")
    testList
        "data loader"
        [ test "the same batches with 1 and 4 workers, and sequentially" {
              let one = collect { options with Workers = 1; Prefetch = 1 } 0
              let four = collect { options with Workers = 4; Prefetch = 3 } 0
              same one four "1 vs 4 workers"
              same one (Loader.epochSequential options transform samples 0) "vs sequential"
              Expect.equal one.Length 8 "ceil(63 / 8)"
              Expect.equal one[7].Count 7 "last batch"
              Expect.sequenceEqual one[0].Shape [| 8L; 3L; 6L; 6L |] "shape"
              Expect.equal (one |> Array.collect (fun b -> b.Indices) |> Array.sort) (Array.init 63 id) "each sample once"
              for b in one do
                  Expect.sequenceEqual b.Labels (b.Indices |> Array.map (fun i -> int64 samples[i].Label)) "labels follow samples"
          }

          test "shuffling differs by epoch and is reproducible" {
              let order e = collect options e |> Array.collect (fun b -> b.Indices)
              Expect.sequenceEqual (order 0) (order 0) "same epoch, same order"
              Expect.notEqual (order 0) (order 1) "another epoch, another order"
              Expect.notEqual (order 0) (Array.init 63 id) "shuffled"
              let unshuffled = collect { options with Shuffle = false } 3 |> Array.collect (fun b -> b.Indices)
              Expect.sequenceEqual unshuffled (Array.init 63 id) "dataset order without shuffling"
              let other = collect { options with Seed = 43 } 0 |> Array.collect (fun b -> b.Indices)
              Expect.notEqual other (order 0) "another seed, another order"
          }

          test "a sample's augmentation depends only on (seed, epoch, index)" {
              let shuffled = collect options 0
              let plain = collect { options with Shuffle = false } 0
              let per = 3 * 6 * 6
              let valuesOf (batches: Batch[]) =
                  batches
                  |> Array.collect (fun b -> Array.init b.Count (fun k -> b.Indices[k], bits b.Pixels[k * per .. (k + 1) * per - 1]))
                  |> Map.ofArray
              Expect.equal (valuesOf shuffled) (valuesOf plain) "same values per index whatever the order"
              let nextEpoch = collect { options with Shuffle = false } 1
              Expect.notEqual (valuesOf nextEpoch) (valuesOf plain) "another epoch, other augmentations"
          }

          test "drop last leaves out the short batch" {
              let batches = collect { options with DropLast = true } 0
              Expect.equal batches.Length 7 "63 / 8"
              Expect.isTrue (batches |> Array.forall (fun b -> b.Count = 8)) "full batches"
          }

          test "a worker's error surfaces on the consumer as the original PromptingError" {
              let broken =
                  samples
                  |> Array.mapi (fun i s ->
                      if i = 30 then { s with Source = "broken#30"; Load = fun () -> Errors.fail "broken#30: cannot decode image" } else s)
              for workers in [ 1; 4 ] do
                  let o = { options with Workers = workers; Shuffle = false }
                  let seen = ResizeArray()
                  let msg =
                      promptingError "worker error" (fun () ->
                          for b in Loader.epoch o transform broken 0 do
                              seen.Add b.Index)
                  Expect.equal msg "broken#30: cannot decode image" "message"
                  Expect.sequenceEqual seen [ 0; 1; 2 ] "batches before the broken one arrive"
              let other = samples |> Array.mapi (fun i s -> if i = 5 then { s with Load = fun () -> raise (InvalidOperationException "boom") } else s)
              Expect.throwsT<InvalidOperationException> (fun () -> Loader.epoch options transform other 0 |> Seq.iter ignore) "other exceptions keep their type"
          }

          test "breaking out early stops the workers" {
              let first = Loader.epoch { options with Workers = 2; Prefetch = 2 } transform samples 0 |> Seq.head
              Expect.equal first.Index 0 "first batch"
              let empty = Loader.epoch options transform [||] 0 |> Array.ofSeq
              Expect.isEmpty empty "no samples, no batches"
              let msg = promptingError "batch size" (fun () -> Loader.epoch { options with BatchSize = 0 } transform samples 0)
              expectMessage msg [ "batch size" ] "batch size"
          } ]

[<Tests>]
let download =
    let file (server: TestServer) (content: byte[]) =
        { Url = server.Url "/files/data.bin"
          FileName = "data.bin"
          Checksum = Sha256(sha256Hex content) }
    testList
        "data download"
        [ test "full download with a checksum, then served from the cache" {
              use dir = new TempDir()
              let content = payload 300_000
              use server = new TestServer(Map [ "/files/data.bin", content ], false)
              let remote = file server content
              let path = Download.file (quietOptions dir.Path) (dir.File "set") remote
              Expect.equal path (Path.Combine(dir.Path, "set", "data.bin")) "path"
              Expect.sequenceEqual (File.ReadAllBytes path) content "content"
              Expect.isFalse (File.Exists(path + ".partial")) "no partial left"
              let md5 = { remote with Checksum = Md5(md5Hex content) }
              Download.file (quietOptions dir.Path) (dir.File "set") md5 |> ignore
              Expect.equal server.Requests.Length 1 "second call uses the cache"
          }

          test "a checksum mismatch is rejected and leaves no file at the final path" {
              use dir = new TempDir()
              let content = payload 50_000
              use server = new TestServer(Map [ "/files/data.bin", content ], false)
              let remote = { file server content with Checksum = Sha256(sha256Hex (payload 10)) }
              let msg = promptingError "mismatch" (fun () -> Download.file (quietOptions dir.Path) dir.Path remote)
              expectMessage msg [ dir.File "data.bin"; "checksum mismatch"; sha256Hex content ] "mismatch"
              Expect.isFalse (File.Exists(dir.File "data.bin")) "no final file"
              Expect.isFalse (File.Exists(dir.File "data.bin.partial")) "no partial file"
          }

          test "an interrupted transfer resumes with a Range request" {
              use dir = new TempDir()
              let content = payload 400_000
              use server = new TestServer(Map [ "/files/data.bin", content ], true)
              let path = Download.file (quietOptions dir.Path) dir.Path (file server content)
              Expect.sequenceEqual (File.ReadAllBytes path) content "content"
              match server.Requests with
              | [ (_, None); (_, Some range) ] -> Expect.equal range "bytes=200000-" "resumed at the half"
              | other -> failtestf "expected a full then a ranged request, got %A" other
          }

          test "with one attempt the partial file stays and the next call resumes" {
              use dir = new TempDir()
              let content = payload 100_000
              use server = new TestServer(Map [ "/files/data.bin", content ], true)
              let options = { quietOptions dir.Path with Attempts = 1 }
              let msg = promptingError "broken off" (fun () -> Download.file options dir.Path (file server content))
              expectMessage msg [ "broke off"; dir.File "data.bin.partial" ] "broken off"
              Expect.equal (FileInfo(dir.File "data.bin.partial").Length) 50_000L "half kept"
              Expect.isFalse (File.Exists(dir.File "data.bin")) "no final file yet"
              let path = Download.file options dir.Path (file server content)
              Expect.sequenceEqual (File.ReadAllBytes path) content "content"
              Expect.equal (snd (List.last server.Requests)) (Some "bytes=50000-") "resumed"
          }

          test "an unreachable server is a clear error saying which file to put where" {
              use dir = new TempDir()
              let probe = new TcpListener(IPAddress.Loopback, 0)
              probe.Start()
              let port = (probe.LocalEndpoint :?> IPEndPoint).Port
              probe.Stop()
              let remote =
                  { Url = sprintf "http://127.0.0.1:%d/cifar-100-binary.tar.gz" port
                    FileName = "cifar-100-binary.tar.gz"
                    Checksum = Md5 "03b5dce01913d631647c71ecec9e9cb8" }
              let msg = promptingError "unreachable" (fun () -> Download.file (quietOptions dir.Path) (dir.File "cifar-100") remote)
              expectMessage msg [ remote.Url; Path.Combine(dir.Path, "cifar-100", "cifar-100-binary.tar.gz"); "03b5dce01913d631647c71ecec9e9cb8" ] "unreachable"
              Expect.isFalse (File.Exists(Path.Combine(dir.Path, "cifar-100", "cifar-100-binary.tar.gz"))) "nothing at the final path"
          }

          test "a wrong file already in the cache is reported, not used" {
              use dir = new TempDir()
              File.WriteAllBytes(dir.File "data.bin", payload 10)
              let remote = { Url = "http://127.0.0.1:9/x"; FileName = "data.bin"; Checksum = Sha256(sha256Hex (payload 11)) }
              let msg = promptingError "cached" (fun () -> Download.file (quietOptions dir.Path) dir.Path remote)
              expectMessage msg [ dir.File "data.bin"; "checksum mismatch"; "delete it" ] "cached"
          }

          test "the official datasets are described with official addresses and checksums" {
              for d in [ Download.cifar10; Download.cifar100; Download.fashionMnist ] do
                  for f in d.Files do
                      Expect.isTrue (f.Url.EndsWith("/" + f.FileName)) (sprintf "%s: url ends with the file name" f.Url)
                      match f.Checksum with
                      | Md5 h -> Expect.equal h.Length 32 "md5 length"
                      | Sha256 h -> Expect.equal h.Length 64 "sha256 length"
              Expect.equal Download.fashionMnist.Files.Length 4 "four Fashion-MNIST files"
              Expect.stringEnds (Download.defaults ()).CacheDirectory (Path.Combine("prompting", "datasets")) "default cache"
          } ]

[<Tests>]
let sharedCifar =
    testList
        "data shared"
        [ test "the CIFAR-10 JPEG tar: 10 classes, 5000 train and 1000 test images each" {
              match Fixtures.sharedFile "data/cifar10-jpeg.tar" with
              | None -> skiptest "../shared/data/cifar10-jpeg.tar not present"
              | Some tar ->
                  let watch = Diagnostics.Stopwatch.StartNew()
                  let r = ImageFolder.read ReadOptions.Defaults tar
                  let d = r.Dataset
                  printfn "  [data] indexed %s in %.2f s" tar watch.Elapsed.TotalSeconds
                  Expect.sequenceEqual d.ClassNames [| "airplane"; "automobile"; "bird"; "cat"; "deer"; "dog"; "frog"; "horse"; "ship"; "truck" |] "classes"
                  Expect.sequenceEqual (Dataset.classCounts 10 d.Train) (Array.create 10 5000) "train per class"
                  Expect.sequenceEqual (Dataset.classCounts 10 d.Test) (Array.create 10 1000) "test per class"
                  Expect.isEmpty r.Skipped "nothing skipped"
                  for s in [ d.Train[0]; d.Test[9999] ] do
                      let img = s.Load()
                      Expect.equal (img.Width, img.Height) (32, 32) (sprintf "%s decodes to 32x32" s.Source)
          } ]
