namespace Prompting

open System
open System.IO

/// Size budgets that every file reader checks from a file's own header, before it allocates:
/// a small hostile file can claim anything (a member of gigabytes, a shape whose product
/// overflows), and must fail with one line instead of exhausting memory or time.
module Limits =
    /// The most bytes one array may hold (.NET's limit): one tensor, member or image buffer.
    let maxArray = int64 Array.MaxLength

    /// Compressed data may expand this many times (real datasets and weights: under 10;
    /// DEFLATE's worst case, a file of zeros, is about 1000)...
    let maxExpansion = 100L

    /// ...or to this many bytes, whichever is more, so small files are never refused.
    let expansionFloor = 64L <<< 20

    /// What a compressed file of `compressedBytes` may decompress to, in all.
    let decompressed (compressedBytes: int64) =
        max expansionFloor (Math.Min(maxExpansion, Int64.MaxValue / max 1L compressedBytes) * compressedBytes)

    /// Fails unless `bytes` fits in one array; `what` names the file and the thing.
    let checkArray (what: string) (bytes: int64) =
        if bytes < 0L || bytes > maxArray then
            Errors.fail "%s: %d bytes is too large to load (at most %d in one piece)" what bytes maxArray

    let private sizeText (bytes: int64) =
        if bytes >= (1L <<< 30) then sprintf "%.1f GiB" (float bytes / float (1L <<< 30))
        else sprintf "%.1f MiB" (float bytes / float (1L <<< 20))

    /// Fails when `claimed` decompressed bytes exceed the budget of a `compressed`-byte file.
    let checkDecompressed (what: string) (compressed: int64) (claimed: int64) =
        let budget = decompressed compressed
        if claimed > budget then
            Errors.fail "%s: claims %s of decompressed data from %s compressed, over the budget of %s (%dx the file): a decompression bomb or a corrupt header"
                what (sizeText claimed) (sizeText compressed) (sizeText budget) maxExpansion

    /// Reads exactly `length` bytes (checked against the array limit before allocating) and
    /// fails when the stream ends early; `what` names the file and member.
    let readExactly (what: string) (stream: Stream) (length: int64) =
        checkArray what length
        let bytes = Array.zeroCreate<byte> (int length)
        let mutable read = 0
        while read < bytes.Length do
            let n = stream.Read(bytes, read, bytes.Length - read)
            if n <= 0 then Errors.fail "%s: truncated (%d of %d bytes)" what read bytes.Length
            read <- read + n
        bytes

/// A read-only view of a stream that fails with one line once more than `limit` bytes have been
/// read through it: decompression stays bounded in memory and time whatever the headers claim.
type BoundedStream(inner: Stream, limit: int64, onExceed: unit -> unit) =
    inherit Stream()
    let mutable total = 0L
    member _.Total = total
    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = raise (NotSupportedException())
    override _.Position
        with get () = total
        and set _ = raise (NotSupportedException())
    override _.Flush() = ()
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_, _, _) = raise (NotSupportedException())
    override _.Read(buffer: byte[], offset: int, count: int) =
        let n = inner.Read(buffer, offset, count)
        total <- total + int64 n
        if total > limit then onExceed ()
        n
    override _.Read(buffer: Span<byte>) =
        let n = inner.Read buffer
        total <- total + int64 n
        if total > limit then onExceed ()
        n
    override _.Dispose(disposing: bool) =
        if disposing then inner.Dispose()
        base.Dispose disposing
