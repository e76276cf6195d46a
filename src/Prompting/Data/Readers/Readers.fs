namespace Prompting.Data

open System
open System.IO
open System.IO.Compression
open System.Formats.Tar
open Prompting

/// How readers treat files they cannot use.
type ReadOptions =
    { /// false (default): a non-image file or an undecodable image is an error naming it.
      /// true: such files are dropped up front (images are decoded once to check) and reported.
      SkipCorrupt: bool }

    static member Defaults = { SkipCorrupt = false }

/// A file a reader dropped, and why.
type Skipped = { Path: string; Reason: string }

/// What a reader returns: the dataset and what it had to leave out (empty unless SkipCorrupt).
[<NoEquality; NoComparison>]
type ReadResult = { Dataset: Dataset; Skipped: Skipped list }

/// File and archive helpers shared by the readers: every IO failure becomes a PromptingError
/// naming the file.
module Readers =
    let readAllBytes (path: string) =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        Limits.checkArray path (FileInfo(path).Length)
        try File.ReadAllBytes path
        with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message

    let isGzip (bytes: byte[]) = bytes.Length >= 2 && bytes[0] = 0x1fuy && bytes[1] = 0x8buy

    /// A gzip stream over `compressed` that fails with one line naming `name` once it has given
    /// more than the decompression budget of `compressedLength` bytes.
    let boundedGunzip (name: string) (compressedLength: int64) (compressed: Stream) : Stream =
        let budget = Limits.decompressed compressedLength
        let onExceed () = Limits.checkDecompressed (name + " (gzip)") compressedLength (budget + 1L)
        new BoundedStream(new GZipStream(compressed, CompressionMode.Decompress), budget, onExceed)

    /// The bytes, decompressed when they are gzip (by content, not by name), within the budget.
    let gunzipIfNeeded (name: string) (bytes: byte[]) =
        if not (isGzip bytes) then bytes
        else
            try
                use input = boundedGunzip name bytes.LongLength (new MemoryStream(bytes))
                use output = new MemoryStream()
                input.CopyTo output
                output.ToArray()
            with :? InvalidDataException | :? IOException as e -> Errors.fail "%s: corrupt or truncated gzip data (%s)" name e.Message

    let isRegularFile (entry: TarEntry) =
        match entry.EntryType with
        | TarEntryType.RegularFile
        | TarEntryType.V7RegularFile
        | TarEntryType.ContiguousFile -> true
        | _ -> false

    /// Entry names without a leading "./" or "/".
    let normaliseEntryName (name: string) =
        let n = name.Replace('\\', '/')
        let n = if n.StartsWith "./" then n.Substring 2 else n
        n.TrimStart '/'

    let private isArchiveError (e: exn) =
        e :? InvalidDataException || e :? IOException || e :? FormatException || e :? EndOfStreamException || e :? ArgumentException
        || e :? OverflowException || e :? InvalidOperationException || e :? NotSupportedException

    /// Streams through a tar (gzipped when the file is, by content) and keeps the bytes of the regular
    /// files whose normalised name `wanted` accepts.
    let readTarMembers (archive: string) (wanted: string -> bool) : (string * byte[]) list =
        if not (File.Exists archive) then Errors.fail "%s: file not found" archive
        try
            use file = File.OpenRead archive
            let head = Array.zeroCreate<byte> 2
            let n = file.Read(head, 0, 2)
            file.Position <- 0L
            // Everything read through a gzip stream (skipped members too) counts against the
            // decompression budget, so a bomb fails in bounded time as well as memory.
            let gzipped = n = 2 && isGzip head
            let stream: Stream = if gzipped then boundedGunzip archive file.Length file else file
            use reader = new TarReader(stream, false)
            let found = ResizeArray()
            let mutable entry = reader.GetNextEntry()
            while not (isNull entry) do
                let name = normaliseEntryName entry.Name
                if isRegularFile entry && wanted name then
                    let what = sprintf "%s#%s" archive name
                    // Checked against the array limit before allocating; the file size bounds the
                    // rest (a plain tar) or the decompression budget does (a gzipped one).
                    if gzipped then Limits.checkDecompressed what file.Length (stream.Position + entry.Length)
                    elif entry.Length > file.Length then
                        Errors.fail "%s: member claims %d bytes, more than the whole archive (%d)" what entry.Length file.Length
                    let bytes =
                        if isNull entry.DataStream then (if entry.Length = 0L then [||] else Errors.fail "%s: member is truncated" what)
                        else Limits.readExactly what entry.DataStream entry.Length
                    found.Add((name, bytes))
                entry <- reader.GetNextEntry()
            List.ofSeq found
        with e when isArchiveError e -> Errors.fail "%s: corrupt or truncated archive (%s)" archive e.Message

    /// A regular file inside an uncompressed tar: where its bytes are, so it can be read on demand.
    type TarIndexEntry = { Name: string; Offset: int64; Length: int64 }

    /// Indexes an uncompressed tar without reading file contents (the reader seeks past them).
    let indexTar (archive: string) : TarIndexEntry list =
        if not (File.Exists archive) then Errors.fail "%s: file not found" archive
        try
            use file = File.OpenRead archive
            use reader = new TarReader(file, false)
            let found = ResizeArray()
            let mutable entry = reader.GetNextEntry()
            while not (isNull entry) do
                if isRegularFile entry then
                    if entry.DataOffset < 0L then Errors.fail "%s: cannot locate member %s" archive entry.Name
                    if entry.DataOffset + entry.Length > file.Length then
                        Errors.fail "%s: member %s is truncated" archive (normaliseEntryName entry.Name)
                    found.Add { Name = normaliseEntryName entry.Name; Offset = entry.DataOffset; Length = entry.Length }
                entry <- reader.GetNextEntry()
            List.ofSeq found
        with e when isArchiveError e -> Errors.fail "%s: corrupt or truncated archive (%s)" archive e.Message

    /// Reads one indexed member's bytes (thread-safe: positional reads on a handle of its own).
    let readTarMember (archive: string) (entry: TarIndexEntry) =
        try
            Limits.checkArray (sprintf "%s#%s" archive entry.Name) entry.Length
            use handle = File.OpenHandle(archive, FileMode.Open, FileAccess.Read, FileShare.Read)
            let bytes = Array.zeroCreate<byte> (int entry.Length)
            let mutable read = 0
            while read < bytes.Length do
                let n = RandomAccess.Read(handle, Span<byte>(bytes, read, bytes.Length - read), entry.Offset + int64 read)
                if n <= 0 then Errors.fail "%s#%s: member is truncated" archive entry.Name
                read <- read + n
            bytes
        with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s#%s: cannot read (%s)" archive entry.Name e.Message

    /// Class names from a text file, one per line (blank lines and surrounding spaces ignored).
    let classNamesOf (name: string) (bytes: byte[]) =
        let names =
            Text.Encoding.UTF8.GetString(bytes).Split('\n')
            |> Array.map (fun l -> l.Trim())
            |> Array.filter (fun l -> l <> "")
        if names.Length = 0 then Errors.fail "%s: no class names" name
        names
