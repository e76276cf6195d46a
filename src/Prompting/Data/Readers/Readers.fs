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
        try File.ReadAllBytes path
        with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message

    let isGzip (bytes: byte[]) = bytes.Length >= 2 && bytes[0] = 0x1fuy && bytes[1] = 0x8buy

    /// The bytes, decompressed when they are gzip (by content, not by name).
    let gunzipIfNeeded (name: string) (bytes: byte[]) =
        if not (isGzip bytes) then bytes
        else
            try
                use input = new GZipStream(new MemoryStream(bytes), CompressionMode.Decompress)
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

    /// Streams through a tar (gzipped when the file is, by content) and keeps the bytes of the regular
    /// files whose normalised name `wanted` accepts.
    let readTarMembers (archive: string) (wanted: string -> bool) : (string * byte[]) list =
        if not (File.Exists archive) then Errors.fail "%s: file not found" archive
        try
            use file = File.OpenRead archive
            let head = Array.zeroCreate<byte> 2
            let n = file.Read(head, 0, 2)
            file.Position <- 0L
            let stream: Stream =
                if n = 2 && isGzip head then new GZipStream(file, CompressionMode.Decompress, true) else file
            use reader = new TarReader(stream, false)
            let found = ResizeArray()
            let mutable entry = reader.GetNextEntry()
            while not (isNull entry) do
                let name = normaliseEntryName entry.Name
                if isRegularFile entry && wanted name then
                    use ms = new MemoryStream()
                    if not (isNull entry.DataStream) then entry.DataStream.CopyTo ms
                    if ms.Length <> entry.Length then Errors.fail "%s: member %s is truncated" archive name
                    found.Add((name, ms.ToArray()))
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
