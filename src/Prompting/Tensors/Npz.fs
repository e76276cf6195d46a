namespace Prompting.Tensors

open System
open System.IO
open System.IO.Compression
open Prompting

/// NumPy .npz archives: a zip of .npy members, stored or deflated.
module Npz =
    let isZip (bytes: ReadOnlySpan<byte>) =
        bytes.Length >= 4 && bytes[0] = byte 'P' && bytes[1] = byte 'K' && bytes[2] = 3uy && bytes[3] = 4uy

    /// Reads every member; names lose their ".npy" suffix.
    let read (path: string) : (string * HostTensor) list =
        if not (File.Exists path) then Errors.fail "%s: file not found" path
        try
            use archive = ZipFile.OpenRead path
            let members = archive.Entries |> Seq.filter (fun e -> not (e.FullName.EndsWith "/")) |> List.ofSeq
            // Budgets from the central directory, before anything is decompressed.
            let fileLength = FileInfo(path).Length
            let duplicate = members |> List.countBy (fun e -> e.FullName) |> List.tryFind (fun (_, n) -> n > 1)
            duplicate |> Option.iter (fun (name, _) -> Errors.fail "%s: duplicate member %s in the .npz archive" path name)
            for e in members do
                Limits.checkArray (sprintf "%s[%s]" path e.FullName) e.Length
            Limits.checkDecompressed path fileLength (members |> List.sumBy (fun e -> e.Length))
            [ for entry in members do
                  let what = sprintf "%s[%s]" path entry.FullName
                  use s = entry.Open()
                  let bytes = Limits.readExactly what s entry.Length
                  if s.ReadByte() >= 0 then Errors.fail "%s: decompresses to more than its declared %d bytes" what entry.Length
                  let name =
                      if entry.FullName.EndsWith ".npy" then entry.FullName[.. entry.FullName.Length - 5]
                      else entry.FullName
                  yield name, Npy.parse what bytes ]
        with
        | :? InvalidDataException as e -> Errors.fail "%s: corrupt or truncated .npz archive (%s)" path e.Message
        | :? EndOfStreamException -> Errors.fail "%s: truncated .npz archive" path
        | :? NotSupportedException as e -> Errors.fail "%s: unsupported .npz archive (%s)" path e.Message
        | :? IOException as e -> Errors.fail "%s: cannot read the .npz archive (%s)" path e.Message

    let write (path: string) (members: (string * HostTensor) seq) =
        Files.writeAtomic path (fun tmp ->
            use fs = File.Create tmp
            use archive = new ZipArchive(fs, ZipArchiveMode.Create)
            for name, t in members do
                let entry = archive.CreateEntry(name + ".npy", CompressionLevel.NoCompression)
                use s = entry.Open()
                let bytes = Npy.serialize t
                s.Write(bytes, 0, bytes.Length))
