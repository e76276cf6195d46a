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
            [ for entry in archive.Entries do
                  if not (entry.FullName.EndsWith "/") then
                      use s = entry.Open()
                      use ms = new MemoryStream()
                      s.CopyTo ms
                      let name =
                          if entry.FullName.EndsWith ".npy" then entry.FullName[.. entry.FullName.Length - 5]
                          else entry.FullName
                      yield name, Npy.parse (sprintf "%s[%s]" path entry.FullName) (ms.ToArray()) ]
        with
        | :? InvalidDataException as e -> Errors.fail "%s: corrupt or truncated .npz archive (%s)" path e.Message
        | :? EndOfStreamException -> Errors.fail "%s: truncated .npz archive" path

    let write (path: string) (members: (string * HostTensor) seq) =
        Files.writeAtomic path (fun tmp ->
            use fs = File.Create tmp
            use archive = new ZipArchive(fs, ZipArchiveMode.Create)
            for name, t in members do
                let entry = archive.CreateEntry(name + ".npy", CompressionLevel.NoCompression)
                use s = entry.Open()
                let bytes = Npy.serialize t
                s.Write(bytes, 0, bytes.Length))
