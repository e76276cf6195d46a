/// Builders of hostile files (bombs, sparse giants, hand-made headers) and a time bound, shared
/// by the hostile-file tests.
module Prompting.Tests.HostileSupport

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Text
open System.Threading.Tasks
open Expecto
open Prompting

/// Runs `f` on a worker and fails the test when it takes longer than `seconds` (a reader that
/// loops over a billion entries or decompresses gigabytes). The worker is abandoned, not killed.
let within (seconds: float) (what: string) (f: unit -> 'a) : 'a =
    let task = Task.Run(fun () -> f ())
    let finished =
        try task.Wait(TimeSpan.FromSeconds seconds)
        with :? AggregateException -> true
    if not finished then failtestf "%s: still running after %.0f s" what seconds
    try task.Result
    with :? AggregateException as e -> raise (e.InnerException)

/// The PromptingError message of `f`, which must fail with one within `seconds`.
let failsWithin (seconds: float) (what: string) (f: unit -> 'a) =
    within seconds what (fun () -> TestSupport.promptingError what f)

/// A stream of `length` zero bytes that allocates nothing.
type ZeroStream(length: int64) =
    inherit Stream()
    let mutable position = 0L
    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = length
    override _.Position
        with get () = position
        and set _ = raise (NotSupportedException())
    override _.Flush() = ()
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_, _, _) = raise (NotSupportedException())
    override _.Read(buffer: byte[], offset: int, count: int) =
        let n = int (min (int64 count) (length - position))
        Array.Clear(buffer, offset, n)
        position <- position + int64 n
        n

/// Writes `length` zero bytes into `stream` in 1 MiB pieces.
let writeZeros (stream: Stream) (length: int64) =
    use zeros = new ZeroStream(length)
    zeros.CopyTo(stream, 1 <<< 20)

/// A gzip file of `header` followed by `zeros` zero bytes: a few megabytes that expand to gigabytes.
let gzipBomb (path: string) (header: byte[]) (zeros: int64) =
    use file = File.Create path
    use gz = new GZipStream(file, CompressionLevel.Optimal)
    gz.Write(header, 0, header.Length)
    writeZeros gz zeros
    path

/// Recomputes a tar header's checksum after an edit.
let fixChecksum (h: byte[]) =
    Encoding.ASCII.GetBytes("        ").CopyTo(h, 148)
    let sum = Array.sumBy int h[0..511]
    Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0')).CopyTo(h, 148)
    h[154] <- 0uy
    h[155] <- byte ' '
    h

/// A ustar header block for a regular file `name` of `size` bytes (size in octal, checksummed).
let ustarHeader (name: string) (size: int64) =
    let h = Array.zeroCreate<byte> 512
    let put (offset: int) (text: string) = Encoding.ASCII.GetBytes(text).CopyTo(h, offset)
    put 0 name
    put 100 "0000644"
    put 108 "0000000"
    put 116 "0000000"
    put 124 (Convert.ToString(size, 8).PadLeft(11, '0'))
    put 136 "00000000000"
    h[156] <- byte '0'
    put 257 "ustar"
    put 263 "00"
    put 148 "        "
    let sum = Array.sumBy int h
    put 148 (Convert.ToString(sum, 8).PadLeft(6, '0'))
    h[154] <- 0uy
    h[155] <- byte ' '
    h

/// A .tar.gz with one member `name` of `zeros` zero bytes (TarWriter cannot stream an entry
/// into a gzip stream, so the header is written by hand).
let tarGzBomb (path: string) (name: string) (zeros: int64) =
    use file = File.Create path
    use gz = new GZipStream(file, CompressionLevel.Optimal)
    gz.Write(ustarHeader name zeros, 0, 512)
    // The data, its padding to a whole block, and the two empty blocks that end the archive.
    writeZeros gz (zeros + (512L - zeros % 512L) % 512L + 1024L)
    path

/// An .npz whose one member `name.npy` is an npy header for `shape` (float32) then zeros.
let npzBomb (path: string) (name: string) (shape: int64 list) =
    let count = shape |> List.fold (*) 1L
    let dict = sprintf "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" (String.Join(", ", shape) + (if shape.Length = 1 then "," else ""))
    let header = dict + String(' ', 63 - (10 + dict.Length) % 64) + "\n"
    use file = File.Create path
    use zip = new ZipArchive(file, ZipArchiveMode.Create)
    let entry = zip.CreateEntry(name + ".npy", CompressionLevel.Optimal)
    use s = entry.Open()
    s.Write([| 0x93uy; byte 'N'; byte 'U'; byte 'M'; byte 'P'; byte 'Y'; 1uy; 0uy |], 0, 8)
    s.Write(BitConverter.GetBytes(uint16 header.Length), 0, 2)
    s.Write(Encoding.Latin1.GetBytes header, 0, header.Length)
    writeZeros s (count * 4L)
    path

/// A safetensors file from a header text and data bytes; `sparseTail` more zero bytes are added
/// as a hole (no disk space), for tensors larger than memory.
let rawSafetensors (path: string) (header: string) (data: byte[]) (sparseTail: int64) =
    let h = Encoding.UTF8.GetBytes header
    (use fs = File.Create path
     fs.Write(BitConverter.GetBytes(int64 h.Length), 0, 8)
     fs.Write(h, 0, h.Length)
     fs.Write(data, 0, data.Length)
     if sparseTail > 0L then fs.SetLength(fs.Length + sparseTail))
    path

/// Elapsed seconds of `f`.
let timed (f: unit -> 'a) =
    let sw = Stopwatch.StartNew()
    let r = f ()
    r, sw.Elapsed.TotalSeconds
