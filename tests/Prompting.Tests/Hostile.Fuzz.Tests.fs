/// Seeded fuzzing of every reader (issue 18): valid small files are mutated (bit flips,
/// truncations, header field edits, inserted slices) and read; only the project's own one-line
/// PromptingError may escape, each case in bounded time and allocation.
module Prompting.Tests.HostileFuzz

open System
open System.IO
open System.Text
open Expecto
open Prompting
open Prompting.Data
open Prompting.Tensors
open Prompting.Vit
open Prompting.Tests.TestSupport
open Prompting.Tests.HostileSupport

/// A reader under test: a valid file, how far its header reaches, and how to read a file.
type private Subject =
    { Name: string
      FileName: string
      Valid: byte[]
      /// Bytes 0 .. HeaderEnd - 1 hold the header, where edits matter most.
      HeaderEnd: int
      /// Header edits of text fields (JSON, Python dicts) rewrite numbers; this restores the
      /// length prefix afterwards so that the edit reaches the parser.
      FixLength: byte[] -> byte[]
      /// The reader calls libtorch (npz key conversions): read under
      /// collections at any moment.
      Torch: bool
      Read: string -> unit }

let private interestingNumbers =
    [| "0"; "1"; "-1"; "255"; "65536"; "2147483647"; "2147483648"; "4294967296"; "99999999"; "9223372036854775807"
       "18446744073709551615"; "1e9"; "3000000000" |]

let private interestingBytes = [| 0x00uy; 0xFFuy; 0x7Fuy; 0x80uy; 0x01uy; 0x30uy; 0x37uy; 0x20uy |]

/// One seeded mutation of `s.Valid`, with a description for the failure report.
let private mutate (rng: Random) (s: Subject) : string * byte[] =
    let b = Array.copy s.Valid
    let inHeader () = rng.Next(max 1 (min s.HeaderEnd b.Length))
    match rng.Next 6 with
    | 0 ->
        let k = 1 + rng.Next 4
        let positions = Array.init k (fun _ -> if rng.Next 2 = 0 then inHeader () else rng.Next b.Length)
        for p in positions do
            b[p] <- b[p] ^^^ (1uy <<< rng.Next 8)
        sprintf "bit flips at %A" positions, b
    | 1 ->
        let keep = rng.Next b.Length
        sprintf "truncated to %d bytes" keep, b[.. keep - 1]
    | 2 ->
        let p = inHeader ()
        let v = interestingBytes[rng.Next interestingBytes.Length]
        let n = 1 + rng.Next 4
        for i in p .. min (b.Length - 1) (p + n - 1) do
            b[i] <- v
        sprintf "header bytes %d..%d set to 0x%02x" p (p + n - 1) v, b
    | 3 ->
        // A number in the header text replaced by an extreme one.
        let header = Encoding.Latin1.GetString(b, 0, min s.HeaderEnd b.Length)
        let numbers = RegularExpressions.Regex.Matches(header, @"\d+") |> Seq.toArray
        if numbers.Length = 0 then "unchanged (no number in the header)", b
        else
            let m = numbers[rng.Next numbers.Length]
            let replacement = interestingNumbers[rng.Next interestingNumbers.Length]
            let edited = Array.concat [ b[.. m.Index - 1]; Encoding.Latin1.GetBytes replacement; b[m.Index + m.Length ..] ]
            sprintf "number %s at %d replaced by %s" m.Value m.Index replacement, s.FixLength edited
    | 4 ->
        let start = rng.Next b.Length
        let length = 1 + rng.Next(min 512 (b.Length - start))
        let at = rng.Next b.Length
        sprintf "%d bytes from %d inserted at %d" length start at, Array.concat [ b[.. at - 1]; b[start .. start + length - 1]; b[at..] ]
    | _ ->
        let p = rng.Next b.Length
        let n = 1 + rng.Next 64
        sprintf "%d random bytes at %d" n p, Array.append b[.. p - 1] (Array.append (Array.init n (fun _ -> byte (rng.Next 256))) b[min b.Length (p + n) ..])

/// Runs `cases` mutations of a subject; fails listing the cases where anything but a one-line
/// PromptingError escaped, or a case took too long or allocated too much.
let private fuzz (seed: int) (cases: int) (s: Subject) =
    use dir = new TempDir()
    let path = dir.File s.FileName
    // The valid file reads without error: the mutations start from something that works.
    File.WriteAllBytes(path, s.Valid)
    s.Read path
    let rng = Random seed
    let failures = ResizeArray<string>()
    let mutable rejected = 0
    // Collections at any moment, as when loader threads allocate during a run: a torch
    // temporary finalized mid-call (a use-after-free) then crashes here, not in production.
    use stop = new Threading.CancellationTokenSource()
    let pressure =
        Threading.Tasks.Task.Run(fun () ->
            let mutable round = 0
            while s.Torch && not stop.IsCancellationRequested do
                Array.zeroCreate<byte> 4096 |> ignore
                round <- round + 1
                if round % 65536 = 0 then GC.Collect 0)
    use _ = { new IDisposable with member _.Dispose() = stop.Cancel(); pressure.Wait() }
    within 60.0 s.Name (fun () ->
        for case in 1..cases do
            let what, bytes = mutate rng s
            File.WriteAllBytes(path, bytes)
            let allocated = GC.GetAllocatedBytesForCurrentThread()
            let started = Diagnostics.Stopwatch.StartNew()
            try
                s.Read path
            with
            | PromptingError m when not (m.Contains '\n' || m.Contains '\r') -> rejected <- rejected + 1
            | e -> failures.Add(sprintf "case %d (%s): %s: %s" case what (e.GetType().Name) (e.Message.Split('\n')[0]))
            let seconds = started.Elapsed.TotalSeconds
            let megabytes = float (GC.GetAllocatedBytesForCurrentThread() - allocated) / 1048576.0
            if seconds > 5.0 then failures.Add(sprintf "case %d (%s): took %.1f s" case what seconds)
            if megabytes > 400.0 then failures.Add(sprintf "case %d (%s): allocated %.0f MB" case what megabytes))
    if failures.Count > 0 then
        failtestf "%s: %d of %d mutations let something else escape:\n%s" s.Name failures.Count cases (String.Join("\n", failures |> Seq.truncate 8))
    printfn "  [fuzz] %s: %d mutations, %d rejected with one line, %d read" s.Name cases rejected (cases - rejected)
    // Most mutations of a strict format are rejected; none of them may crash.
    Expect.isGreaterThan rejected (cases / 3) (sprintf "%s: most mutations are rejected" s.Name)

let private noFix (b: byte[]) = b

/// Safetensors: the u64 header length follows the edited header.
let private fixSafetensors (b: byte[]) =
    if b.Length < 8 then b
    else
        // The header ends where the JSON does (after metadata or the last entry), padded by spaces.
        let mutable depth = 0
        let mutable finish = -1
        let mutable i = 8
        while finish < 0 && i < b.Length do
            if b[i] = byte '{' then depth <- depth + 1
            elif b[i] = byte '}' then
                depth <- depth - 1
                if depth = 0 then finish <- i
            i <- i + 1
        if finish < 0 then b
        else
            let mutable stop = finish + 1
            while stop < b.Length && b[stop] = byte ' ' do
                stop <- stop + 1
            let copy = Array.copy b
            Array.blit (BitConverter.GetBytes(int64 (stop - 8))) 0 copy 0 8
            copy

/// .npy version 1: the u16 header length follows the edited header (up to its newline).
let private fixNpy (b: byte[]) =
    let newline = Array.IndexOf(b, byte '\n', 10)
    if b.Length < 10 || newline < 0 then b
    else
        let copy = Array.copy b
        Array.blit (BitConverter.GetBytes(uint16 (newline + 1 - 10))) 0 copy 8 2
        copy

let private safetensorsHeaderEnd (b: byte[]) = 8 + int (BitConverter.ToInt64(b, 0))

/// A small image tree (BMP, PNG and JPEG files) as a tar, gzipped or not.
let private imageTreeTar (gzip: bool) =
    use dir = new TempDir()
    let tree = dir.File "tree"
    for split in [ "train"; "test" ] do
        for cls in [ "a"; "b" ] do
            Prompting.Tests.Cli.writeBmp (Path.Combine(tree, split, cls, "x.bmp")) 5 4 (fun x y -> byte x, byte y, 9uy)
            Directory.CreateDirectory(Path.Combine(tree, split, cls)) |> ignore
            File.Copy(fixture "images/grad_37x29.png", Path.Combine(tree, split, cls, "y.png"))
            File.Copy(fixture "images/grad_20x52.jpg", Path.Combine(tree, split, cls, "z.jpg"))
    let archive = dir.File(if gzip then "tree.tar.gz" else "tree.tar")
    Prompting.Tests.Data.writeTar gzip archive "" tree
    File.ReadAllBytes archive

/// Reads an image-folder archive and decodes every sample.
let private readImageArchive (path: string) =
    let r = ImageFolder.read ReadOptions.Defaults path
    for s in Array.append r.Dataset.Train r.Dataset.Test do
        s.Load() |> ignore

let private idxDirectory (dir: string) (gzipImages: bool) =
    let images = Prompting.Tests.Data.idxBytes [ 3; 4; 5 ] (Array.init 60 byte)
    File.WriteAllBytes(Path.Combine(dir, "train-labels-idx1-ubyte"), Prompting.Tests.Data.idxBytes [ 3 ] [| 1uy; 0uy; 2uy |])
    File.WriteAllBytes(Path.Combine(dir, "t10k-images-idx3-ubyte"), Prompting.Tests.Data.idxBytes [ 1; 4; 5 ] (Array.zeroCreate 20))
    File.WriteAllBytes(Path.Combine(dir, "t10k-labels-idx1-ubyte"), Prompting.Tests.Data.idxBytes [ 1 ] [| 1uy |])
    if gzipImages then Prompting.Tests.Data.gzipBytes images else images

/// IDX: the mutated file is the training images of an otherwise valid directory.
let private idxSubject (gzip: bool) =
    let dir = Fixtures.tempDir ()
    let valid = idxDirectory dir gzip
    { Name = (if gzip then "IDX (gzip)" else "IDX")
      FileName = "unused"
      Valid = valid
      HeaderEnd = (if gzip then 20 else 16)
      FixLength = noFix
      Torch = false
      Read =
        fun path ->
            let target = Path.Combine(dir, "train-images-idx3-ubyte" + (if gzip then ".gz" else ""))
            File.Copy(path, target, true)
            let d = Idx.read "fuzz" [| "a"; "b"; "c" |] dir
            for s in d.Train do
                s.Load() |> ignore }

let private subjects () =
    let safetensors = File.ReadAllBytes(fixture "vit_micro.safetensors")
    let npy = File.ReadAllBytes(fixture "expected_tokens_32.npy")
    let tar = imageTreeTar false
    [ { Name = "safetensors"; FileName = "f.safetensors"; Valid = safetensors; HeaderEnd = safetensorsHeaderEnd safetensors
        FixLength = fixSafetensors; Torch = false; Read = fun p -> Checkpoint.read p (Some 3) |> ignore }
      { Name = "npy"; FileName = "f.npy"; Valid = npy; HeaderEnd = 128; FixLength = fixNpy; Torch = false; Read = fun p -> Npy.read p |> ignore }
      { Name = "npz"; FileName = "f.npz"; Valid = File.ReadAllBytes(fixture "vit_micro.npz"); HeaderEnd = 200; FixLength = noFix; Torch = true
        Read = fun p -> Checkpoint.read p (Some 3) |> ignore }
      { Name = "tar"; FileName = "f.tar"; Valid = tar; HeaderEnd = 512; FixLength = noFix; Torch = false; Read = readImageArchive }
      { Name = "tar.gz"; FileName = "f.tar.gz"; Valid = imageTreeTar true; HeaderEnd = 64; FixLength = noFix; Torch = false; Read = readImageArchive }
      idxSubject false
      idxSubject true
      { Name = "JPEG"; FileName = "f.jpg"; Valid = File.ReadAllBytes(fixture "images/grad_20x52.jpg"); HeaderEnd = 623
        FixLength = noFix; Torch = false; Read = fun p -> Images.decode p |> ignore }
      { Name = "PNG"; FileName = "f.png"; Valid = File.ReadAllBytes(fixture "images/grad_37x29.png"); HeaderEnd = 64
        FixLength = noFix; Torch = false; Read = fun p -> Images.decode p |> ignore } ]

/// The same mutations of the uncompressed tar, then gzipped: header edits that reach the tar
/// reader through the decompressor.
let private gzippedTarSubject (tar: byte[]) =
    { Name = "tar.gz (edited inside)"; FileName = "g.tar.gz"; Valid = Prompting.Tests.Data.gzipBytes tar; HeaderEnd = 0; FixLength = noFix; Torch = false
      Read = readImageArchive }

/// Mutations per reader: the whole suite stays under about 30 s on 2 cores.
let private cases = 300

[<Tests>]
let tests =
    testSequenced
    <| testList
        "hostile fuzz"
        [ yield!
              [ for i, s in List.indexed (subjects ()) ->
                    test (sprintf "%s: mutated files give only one-line errors" s.Name) { fuzz (1800 + i) cases s } ]
          test "tar.gz: tar headers edited before compression give only one-line errors" {
              let tar = imageTreeTar false
              let rng = Random 1818
              let inner = { Name = "tar"; FileName = "t.tar"; Valid = tar; HeaderEnd = 512; FixLength = noFix; Torch = false; Read = ignore }
              for case in 1..40 do
                  let _, edited = mutate rng inner
                  let subject = gzippedTarSubject edited
                  use dir = new TempDir()
                  let path = dir.File subject.FileName
                  File.WriteAllBytes(path, subject.Valid)
                  try within 10.0 (sprintf "case %d" case) (fun () -> subject.Read path)
                  with
                  | PromptingError m -> expectMessage m [] (sprintf "case %d" case)
          } ]
