namespace Prompting.Data

open System
open System.IO
open System.Threading.Tasks
open Prompting

/// Image trees in torchvision's ImageFolder layout: `root/<class>/<image>` (images may sit deeper
/// under their class directory), class names being the sub-directory names in ordinal order; and
/// the split layout `root/{train,test}/<class>/...`, from a directory or straight from a .tar of
/// such a tree (optionally under one top directory, as `cifar10/{train,test}/...`). A plain tar
/// is indexed, not unpacked: each image's bytes are read when its sample is loaded; a .tar.gz is
/// decompressed into memory.
module ImageFolder =
    /// A file found in a tree: its path parts below the root, how to name it, how to read it.
    [<NoEquality; NoComparison>]
    type private Entry =
        { Parts: string[]
          Source: string
          Bytes: unit -> byte[] }

    let private ordinal (a: string) (b: string) = String.CompareOrdinal(a, b)

    let private listed (paths: string list) =
        let shown = paths |> List.truncate 10 |> String.concat ", "
        if paths.Length > 10 then sprintf "%s and %d more" shown (paths.Length - 10) else shown

    /// Decodes every image once (in parallel) and returns the sources that fail, with the reason.
    let private undecodable (candidates: (string * (unit -> RgbImage))[]) =
        let failures = Array.zeroCreate<string option> candidates.Length
        Parallel.For(0, candidates.Length, fun i ->
            let _, load = candidates[i]
            failures[i] <-
                try
                    load () |> ignore
                    None
                with PromptingError m -> Some m)
        |> ignore
        [ for i in 0 .. candidates.Length - 1 do
              match failures[i] with
              | Some reason -> yield fst candidates[i], reason
              | None -> () ]

    /// Files that are not images (by extension) and files outside any class directory are errors,
    /// or with SkipCorrupt they are dropped and reported together with undecodable images.
    let private classify (options: ReadOptions) (where: string) (classNames: string[]) (entries: (string option * Entry) list) =
        let offending = entries |> List.filter (fun (cls, e) -> cls.IsNone || not (Images.isImageFile e.Source))
        if not offending.IsEmpty && not options.SkipCorrupt then
            Errors.fail "%s: %d file(s) that are not images in a class directory: %s (pass the skip-corrupt option to leave them out)"
                where offending.Length (offending |> List.map (fun (_, e) -> e.Source) |> listed)
        let index = classNames |> Array.mapi (fun i n -> n, i) |> dict
        let images =
            entries
            |> List.choose (fun (cls, e) ->
                match cls with
                | Some c when Images.isImageFile e.Source ->
                    Some { Source = e.Source; Label = index[c]; Load = fun () -> Images.decodeBytes e.Source (e.Bytes()) }
                | _ -> None)
            |> Array.ofList
        let skippedFiles =
            offending
            |> List.map (fun (cls, e) ->
                { Path = e.Source
                  Reason = if cls.IsNone then "not in a class directory" else "not an image file" })
        if options.SkipCorrupt then
            let bad = undecodable (images |> Array.map (fun s -> s.Source, s.Load))
            let badSet = bad |> List.map fst |> set
            let kept = images |> Array.filter (fun s -> not (badSet.Contains s.Source))
            kept, skippedFiles @ (bad |> List.map (fun (p, reason) -> { Path = p; Reason = reason }))
        else images, skippedFiles

    let private checkNonEmpty (where: string) (classNames: string[]) (samples: Sample[]) =
        let counts = Dataset.classCounts classNames.Length samples
        let empty = classNames |> Array.indexed |> Array.filter (fun (i, _) -> counts[i] = 0) |> Array.map snd
        if empty.Length > 0 then Errors.fail "%s: no images for class(es) %s" where (String.Join(", ", empty))

    /// Sorts entries by path (ordinal) so sample order does not depend on the file system.
    let private sortEntries (entries: Entry list) =
        entries
        |> List.map (fun e -> String.Join("/", e.Parts), e)
        |> List.sortWith (fun (a, _) (b, _) -> ordinal a b)
        |> List.map snd

    let private directoryEntries (root: string) =
        try
            Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            |> Seq.map (fun f ->
                { Parts = Path.GetRelativePath(root, f).Replace('\\', '/').Split('/')
                  Source = f
                  Bytes = fun () -> Readers.readAllBytes f })
            |> List.ofSeq
            |> sortEntries
        with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot list (%s)" root e.Message

    let private classDirectories (root: string) =
        Directory.GetDirectories root |> Array.map Path.GetFileName |> Array.sortWith ordinal

    /// One class tree `root/<class>/...`: class names and samples, plus what was skipped.
    let readTree (options: ReadOptions) (root: string) : string[] * Sample[] * Skipped list =
        if not (Directory.Exists root) then Errors.fail "%s: no such directory" root
        let classNames = classDirectories root
        if classNames.Length = 0 then Errors.fail "%s: no class sub-directories (expected root/<class>/<image>)" root
        let entries =
            directoryEntries root |> List.map (fun e -> (if e.Parts.Length >= 2 then Some e.Parts[0] else None), e)
        let samples, skipped = classify options root classNames entries
        checkNonEmpty root classNames samples
        classNames, samples, skipped

    let private splitNames = [ "train"; "test" ]

    /// Assembles a dataset from entries laid out as {train,test}/<class>/...; `classesOf split` are
    /// the class names found for a split.
    let private fromSplitEntries (options: ReadOptions) (name: string) (where: string) (classesOf: string -> string[]) (entries: Entry list) =
        let trainClasses = classesOf "train"
        let testClasses = classesOf "test"
        if trainClasses.Length = 0 then Errors.fail "%s: no class directories under train/" where
        if trainClasses <> testClasses then
            let missing = Set.difference (set trainClasses) (set testClasses) |> String.concat ", "
            let extra = Set.difference (set testClasses) (set trainClasses) |> String.concat ", "
            Errors.fail "%s: test classes differ from train classes (missing in test: [%s]; only in test: [%s])" where missing extra
        let inSplit split =
            entries
            |> List.filter (fun e -> e.Parts[0] = split)
            |> List.map (fun e -> (if e.Parts.Length >= 3 then Some e.Parts[1] else None), e)
        let outside = entries |> List.filter (fun e -> not (List.contains e.Parts[0] splitNames)) |> List.map (fun e -> None, e)
        let train, skippedTrain = classify options where trainClasses (inSplit "train" @ outside)
        let test, skippedTest = classify options where trainClasses (inSplit "test")
        checkNonEmpty (where + " (train)") trainClasses train
        checkNonEmpty (where + " (test)") trainClasses test
        { Dataset = { Name = name; ClassNames = trainClasses; Train = train; Test = test }
          Skipped = skippedTrain @ skippedTest }

    let private fromDirectory (options: ReadOptions) (root: string) =
        let missing = splitNames |> List.filter (fun s -> not (Directory.Exists(Path.Combine(root, s))))
        if not missing.IsEmpty then
            Errors.fail "%s: expected train/ and test/ sub-directories (root/{train,test}/<class>/<image>), missing %s" root (String.Join(", ", missing))
        let name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath root))
        fromSplitEntries options name root (fun split -> classDirectories (Path.Combine(root, split))) (directoryEntries root)

    /// The tar's regular files (name, reader) below the directory holding train/ and test/. An
    /// uncompressed tar is indexed and read on demand; a gzipped one is decompressed into memory.
    let private tarEntries (archive: string) =
        let isGz =
            try
                use f = File.OpenRead archive
                f.ReadByte() = 0x1f && f.ReadByte() = 0x8b
            with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" archive e.Message
        let members: (string * (unit -> byte[])) list =
            if isGz then Readers.readTarMembers archive (fun _ -> true) |> List.map (fun (n, bytes) -> n, (fun () -> bytes))
            else Readers.indexTar archive |> List.map (fun e -> e.Name, (fun () -> Readers.readTarMember archive e))
        let parts = members |> List.map (fun (name, read) -> name, read, name.Split('/', StringSplitOptions.RemoveEmptyEntries))
        // the prefix is whatever precedes the first train/test component of the first entry that has one
        let prefix =
            parts
            |> List.tryPick (fun (_, _, p) ->
                p |> Array.tryFindIndex (fun c -> List.contains c splitNames) |> Option.map (fun i -> p[.. i - 1]))
            |> Option.defaultWith (fun () -> Errors.fail "%s: no train/ or test/ directory in the archive" archive)
        parts
        |> List.map (fun (name, read, p) ->
            let under = p.Length > prefix.Length && p[.. prefix.Length - 1] = prefix
            { Parts = (if under then p[prefix.Length ..] else Array.append [| "" |] p)
              Source = sprintf "%s#%s" archive name
              Bytes = read })
        |> sortEntries

    let private fromTar (options: ReadOptions) (archive: string) =
        let entries = tarEntries archive
        let classesOf split =
            entries
            |> List.filter (fun e -> e.Parts.Length >= 3 && e.Parts[0] = split)
            |> List.map (fun e -> e.Parts[1])
            |> List.distinct
            |> List.sortWith ordinal
            |> Array.ofList
        let name = Path.GetFileNameWithoutExtension archive
        fromSplitEntries options name archive classesOf entries

    /// Reads the split layout `root/{train,test}/<class>/...` from a directory or a .tar (or .tar.gz).
    let read (options: ReadOptions) (path: string) : ReadResult =
        if Directory.Exists path then fromDirectory options path
        elif File.Exists path then fromTar options path
        else Errors.fail "%s: no such file or directory" path
