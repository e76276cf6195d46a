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

    /// The most bytes a tar metadata entry (PAX attributes, GNU long names) may hold: the tar
    /// reader allocates what such a header claims before reading it.
    let private maxTarMetadata = 1L <<< 20

    /// The size field of a tar header: octal digits, or base-256 when the first byte's high bit
    /// is set; None when it is neither.
    let private tarSize (header: byte[]) =
        let field = header[124..135]
        if field[0] &&& 0x80uy <> 0uy then
            if field[0] &&& 0x40uy <> 0uy || field[1..3] |> Array.exists (fun b -> b <> 0uy) then Some -1L
            else Some(field[4..] |> Array.fold (fun acc b -> (acc <<< 8) ||| int64 b) 0L)
        else
            let digits = Text.Encoding.ASCII.GetString(field).Trim([| ' '; '\000' |])
            if digits = "" then Some 0L
            elif digits |> Seq.forall (fun c -> c >= '0' && c <= '7') && digits.Length <= 21 then
                Some(digits |> Seq.fold (fun acc c -> acc * 8L + int64 c - int64 '0') 0L)
            else None

    /// Walks a tar's headers before the tar reader sees them: a member claiming more bytes than
    /// the rest of the archive, or than the decompression budget when the tar is gzipped
    /// (`compressedLength`), or a metadata entry over its limit is an error naming the archive
    /// and member. Malformed headers are left to the tar reader to report.
    let checkTarHeaders (archive: string) (stream: Stream) (compressedLength: int64 option) =
        let header = Array.zeroCreate<byte> 512
        let discard = Array.zeroCreate<byte> 65536
        let mutable position = 0L
        let mutable finished = false
        let readHeader () =
            let mutable read = 0
            let mutable ended = false
            while read < 512 && not ended do
                let n = stream.Read(header, read, 512 - read)
                if n <= 0 then ended <- true else read <- read + n
            read = 512
        let skip (count: int64) =
            if stream.CanSeek then stream.Seek(count, SeekOrigin.Current) |> ignore
            else
                let mutable left = count
                while left > 0L do
                    let n = stream.Read(discard, 0, int (min left (int64 discard.Length)))
                    if n <= 0 then left <- 0L else left <- left - int64 n
        while not finished do
            if not (readHeader ()) || Array.forall ((=) 0uy) header then finished <- true
            else
                position <- position + 512L
                let name = Text.Encoding.UTF8.GetString(header, 0, 100).TrimEnd('\000')
                match tarSize header with
                | None -> finished <- true
                | Some size ->
                    if size < 0L then Errors.fail "%s: member %s has an invalid size" archive name
                    match compressedLength with
                    | Some compressed -> Limits.checkDecompressed (sprintf "%s#%s" archive name) compressed (position + size)
                    | None when size > stream.Length - position ->
                        Errors.fail "%s#%s: member claims %d bytes, more than the rest of the archive (%d)" archive name size (stream.Length - position)
                    | None -> ()
                    let kind = char header[156]
                    if (kind = 'x' || kind = 'g' || kind = 'L' || kind = 'K') && size > maxTarMetadata then
                        Errors.fail "%s: a tar metadata entry (%c) of %d bytes, over the limit of %d" archive kind size maxTarMetadata
                    let padded = (size + 511L) / 512L * 512L
                    skip padded
                    position <- position + padded

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
            // First pass: the headers alone (through a second decompressor when gzipped).
            if gzipped then
                use again = File.OpenRead archive
                use headers = boundedGunzip archive again.Length again
                checkTarHeaders archive headers (Some again.Length)
            else checkTarHeaders archive file None
            file.Position <- 0L
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
            checkTarHeaders archive file None
            file.Position <- 0L
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
