namespace Prompting.Data

open System
open System.IO
open Prompting

/// CIFAR-10 and CIFAR-100 in the official binary format ("binary version suitable for C
/// programs"), from the extracted directory or straight from the official .tar.gz.
///
/// A record is the label byte(s) then 3072 pixel bytes: the 1024 red values of the 32×32 image in
/// row-major order, then the 1024 green, then the 1024 blue. CIFAR-10 has one label byte;
/// CIFAR-100 has two (coarse, fine) and the fine label is used.
module Cifar =
    type Variant =
        | Cifar10
        | Cifar100

    let side = 32
    let pixelBytes = 3 * side * side

    let labelBytes =
        function
        | Cifar10 -> 1
        | Cifar100 -> 2

    let recordSize variant = labelBytes variant + pixelBytes

    let name =
        function
        | Cifar10 -> "CIFAR-10"
        | Cifar100 -> "CIFAR-100"

    /// The official extracted directory's name.
    let directoryName =
        function
        | Cifar10 -> "cifar-10-batches-bin"
        | Cifar100 -> "cifar-100-binary"

    let trainFiles =
        function
        | Cifar10 -> [ for i in 1..5 -> sprintf "data_batch_%d.bin" i ]
        | Cifar100 -> [ "train.bin" ]

    let testFiles =
        function
        | Cifar10 -> [ "test_batch.bin" ]
        | Cifar100 -> [ "test.bin" ]

    let metaFile =
        function
        | Cifar10 -> "batches.meta.txt"
        | Cifar100 -> "fine_label_names.txt"

    let private allFiles variant = metaFile variant :: trainFiles variant @ testFiles variant

    /// Writes records in the official layout (for tests and for exporting subsets): one
    /// (label, HWC RGB 32×32 pixels) pair per record; CIFAR-100 records get coarse label 0.
    let encode (variant: Variant) (records: (int * byte[]) seq) =
        let size = recordSize variant
        let records = Array.ofSeq records
        let out = Array.zeroCreate<byte> (records.Length * size)
        records
        |> Array.iteri (fun r (label, hwc: byte[]) ->
            if hwc.Length <> pixelBytes then Errors.fail "CIFAR record %d: expected %d pixel bytes, got %d" r pixelBytes hwc.Length
            if label < 0 || label > 255 then Errors.fail "CIFAR record %d: label %d does not fit in a byte" r label
            let o = r * size
            out[o + labelBytes variant - 1] <- byte label
            for i in 0 .. side * side - 1 do
                for ch in 0..2 do
                    out[o + labelBytes variant + ch * side * side + i] <- hwc[i * 3 + ch])
        out

    /// The samples of one batch file.
    let parseBatch (variant: Variant) (classes: int) (source: string) (bytes: byte[]) : Sample[] =
        let size = recordSize variant
        if bytes.Length = 0 then Errors.fail "%s: empty CIFAR batch file" source
        if bytes.Length % size <> 0 then
            Errors.fail "%s: truncated CIFAR file (%d bytes is not a multiple of the %d-byte record)" source bytes.Length size
        let count = bytes.Length / size
        Array.init count (fun r ->
            let o = r * size
            let label = int bytes[o + labelBytes variant - 1]
            if label >= classes then
                Errors.fail "%s: record %d has label %d but there are %d classes" source r label classes
            { Source = sprintf "%s#%d" source r
              Label = label
              Load =
                fun () ->
                    let px = Array.zeroCreate<byte> pixelBytes
                    let start = o + labelBytes variant
                    let plane = side * side
                    for i in 0 .. plane - 1 do
                        px[i * 3] <- bytes[start + i]
                        px[i * 3 + 1] <- bytes[start + plane + i]
                        px[i * 3 + 2] <- bytes[start + 2 * plane + i]
                    { Width = side; Height = side; Pixels = px } })

    let private build (variant: Variant) (get: string -> string * byte[]) =
        let metaName, meta = get (metaFile variant)
        let classNames = Readers.classNamesOf metaName meta
        let expected = match variant with Cifar10 -> 10 | Cifar100 -> 100
        if classNames.Length <> expected then
            Errors.fail "%s: expected %d class names, found %d" metaName expected classNames.Length
        let split files =
            files |> List.toArray |> Array.collect (fun f -> get f ||> parseBatch variant classNames.Length)
        { Name = name variant
          ClassNames = classNames
          Train = split (trainFiles variant)
          Test = split (testFiles variant) }

    let private isArchive (path: string) = File.Exists path

    /// The directory holding the batch files: the path itself, or its official sub-directory.
    let private locateDirectory (variant: Variant) (dir: string) =
        let nested = Path.Combine(dir, directoryName variant)
        if not (File.Exists(Path.Combine(dir, metaFile variant))) && Directory.Exists nested then nested else dir

    let private fromDirectory (variant: Variant) (dir: string) =
        let dir = locateDirectory variant dir
        build variant (fun f ->
            let path = Path.Combine(dir, f)
            if not (File.Exists path) then Errors.fail "%s: file not found (%s binary version)" path (name variant)
            path, Readers.readAllBytes path)

    /// The members of an archive by file name (whatever directory they sit under).
    let private archiveMembers (archive: string) (names: Set<string>) =
        Readers.readTarMembers archive (fun n -> names.Contains(Path.GetFileName n))
        |> List.map (fun (n, bytes) -> Path.GetFileName n, (sprintf "%s#%s" archive n, bytes))
        |> List.distinctBy fst
        |> Map.ofList

    let private fromMembers (variant: Variant) (archive: string) (members: Map<string, string * byte[]>) =
        build variant (fun f ->
            match members.TryFind f with
            | Some m -> m
            | None -> Errors.fail "%s: file %s not found in the archive (%s binary version)" archive f (name variant))

    /// Reads the given variant from a directory (the extracted one, or the directory containing it)
    /// or from the official .tar.gz.
    let readVariant (variant: Variant) (path: string) : Dataset =
        if Directory.Exists path then fromDirectory variant path
        elif isArchive path then fromMembers variant path (archiveMembers path (Set.ofList (allFiles variant)))
        else Errors.fail "%s: no such file or directory" path

    let read10 path = readVariant Cifar10 path
    let read100 path = readVariant Cifar100 path

    /// Reads CIFAR-10 or CIFAR-100, whichever the directory or archive holds.
    let read (path: string) : Dataset =
        let detect (has: string -> bool) =
            if has (metaFile Cifar10) || has "data_batch_1.bin" then Some Cifar10
            elif has (metaFile Cifar100) || has "train.bin" then Some Cifar100
            else None
        if Directory.Exists path then
            let has variant f = File.Exists(Path.Combine(locateDirectory variant path, f))
            let variant =
                match detect (has Cifar10) with
                | Some Cifar10 -> Some Cifar10
                | _ -> if detect (has Cifar100) = Some Cifar100 then Some Cifar100 else None
            match variant with
            | Some v -> fromDirectory v path
            | None -> Errors.fail "%s: no CIFAR-10 or CIFAR-100 binary files found (%s or %s)" path (metaFile Cifar10) (metaFile Cifar100)
        elif isArchive path then
            let members = archiveMembers path (Set.ofList (allFiles Cifar10 @ allFiles Cifar100))
            match detect members.ContainsKey with
            | Some v -> fromMembers v path members
            | None -> Errors.fail "%s: no CIFAR-10 or CIFAR-100 binary files found in the archive" path
        else Errors.fail "%s: no such file or directory" path
