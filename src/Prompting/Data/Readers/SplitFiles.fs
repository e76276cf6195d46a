namespace Prompting.Data

open System
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Prompting

/// A checksum a reference publishes for one of its split files.
type SplitChecksum =
    | SplitSha256 of string
    /// Git's blob id, the SHA-1 of "blob <size>\0" followed by the content: what a repository's
    /// tree records for a file (for files whose SHA-256 we could not take).
    | GitBlob of string

    member c.Text =
        match c with
        | SplitSha256 h -> "sha256 " + h
        | GitBlob h -> "git blob " + h

/// One image a split file names: where it is named, the path as written, its label.
type Listed =
    { ListFile: string
      Line: int
      Path: string
      Label: int }

/// Split files of the reference releases, read and checked: CODA-Prompt's YAML lists (`data:` and
/// `targets:`), VTAB-1k's `path label` lines, VPT's FGVC JSON (`{"path": label}`). Every problem
/// is one line naming the file (and line): a missing list file, a listed image that is not on
/// disk, a label out of range, a checksum that differs from the reference's.
module SplitFiles =
    let private hex (bytes: byte[]) = Convert.ToHexString(bytes).ToLowerInvariant()

    let sha256Of (path: string) =
        use s = File.OpenRead path
        hex (SHA256.HashData s)

    /// Git's blob id of a file.
    let gitBlobOf (path: string) =
        let content = Readers.readAllBytes path
        let header = Encoding.ASCII.GetBytes(sprintf "blob %d\000" content.Length)
        hex (SHA1.HashData(Array.append header content))

    /// A missing split file is an error that says what it is and where it comes from.
    let require (what: string) (path: string) =
        if not (File.Exists path) then Errors.fail "%s: missing list file %s" what path
        path

    /// The file's checksum must be the reference's.
    let verify (what: string) (expected: SplitChecksum) (path: string) =
        let actual, wanted, kind =
            match expected with
            | SplitSha256 h -> sha256Of path, h.ToLowerInvariant(), "SHA-256"
            | GitBlob h -> gitBlobOf path, h.ToLowerInvariant(), "git blob id"
        if actual <> wanted then
            Errors.fail "%s: %s %s differs from the reference's %s (%s); use the file of the reference release" path kind actual wanted what

    let private lines (path: string) =
        try File.ReadAllLines path
        with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message

    /// `path label` lines (VTAB-1k's train800.txt, DomainNet's <domain>_train.txt, ...): the label
    /// is the last field, the path everything before it; blank lines are skipped.
    let readPathLabel (path: string) : Listed[] =
        lines path
        |> Array.indexed
        |> Array.choose (fun (i, line) ->
            let line = line.Trim()
            if line = "" then None
            else
                let cut = line.LastIndexOfAny [| ' '; '\t' |]
                let ok, label = if cut > 0 then Int32.TryParse(line.Substring(cut + 1)) else false, 0
                if not ok then Errors.fail "%s:%d: expected 'path label', found '%s'" path (i + 1) line
                Some { ListFile = path; Line = i + 1; Path = line.Substring(0, cut).Trim(); Label = label })

    /// CODA-Prompt's split YAML: a `data:` list of paths, then a `targets:` list of integer labels
    /// of the same length (the block-sequence form PyYAML writes for these files).
    let readCodaYaml (path: string) : Listed[] =
        let all = lines path
        let item (line: string) = if line.StartsWith "- " then Some(line.Substring(2).Trim().Trim('\'', '"')) else None
        let dataAt = all |> Array.tryFindIndex (fun l -> l.TrimEnd() = "data:")
        let targetsAt = all |> Array.tryFindIndex (fun l -> l.TrimEnd() = "targets:")
        match dataAt, targetsAt with
        | Some d, Some t when d < t ->
            let block start stop = [| for i in start + 1 .. stop - 1 do match item all[i] with Some v -> yield i + 1, v | None -> () |]
            let data = block d t
            let targets = block t all.Length
            if data.Length <> targets.Length then
                Errors.fail "%s: %d paths under data: but %d labels under targets:" path data.Length targets.Length
            Array.map2
                (fun (_, p) (line, label: string) ->
                    match Int32.TryParse label with
                    | true, v -> { ListFile = path; Line = line; Path = p; Label = v }
                    | _ -> Errors.fail "%s:%d: target '%s' is not an integer" path line label)
                data targets
        | _ -> Errors.fail "%s: expected a data: list followed by a targets: list (CODA-Prompt's split format)" path

    /// VPT's FGVC split JSON: an object mapping image paths (relative to the image directory) to
    /// class ids; the ids become labels 0..C-1 in their sorted order over all the files given
    /// (as VPT's JSONDataset does per file; every file holds every class). The line is the entry's
    /// position in its file.
    let readJsonLabels (paths: string list) : (string * (string * string * int)[]) list * string[] =
        let entries =
            [ for path in paths ->
                  let text =
                      try File.ReadAllText path
                      with :? IOException | :? UnauthorizedAccessException as e -> Errors.fail "%s: cannot read (%s)" path e.Message
                  let items =
                      try
                          use doc = JsonDocument.Parse text
                          if doc.RootElement.ValueKind <> JsonValueKind.Object then
                              Errors.fail "%s: expected a JSON object of \"path\": label" path
                          [| for (i, p) in Seq.indexed (doc.RootElement.EnumerateObject()) ->
                                 let label =
                                     match p.Value.ValueKind with
                                     | JsonValueKind.Number | JsonValueKind.String -> p.Value.ToString()
                                     | _ -> Errors.fail "%s: entry %d (%s): the label is not a number or string" path (i + 1) p.Name
                                 p.Name, label, i + 1 |]
                      with :? JsonException as e -> Errors.fail "%s: invalid JSON (%s)" path e.Message
                  path, items ]
        let ids = entries |> List.collect (fun (_, items) -> [ for _, l, _ in items -> l ]) |> List.distinct
        let numeric = ids |> List.forall (fun l -> fst (Int64.TryParse l))
        let sorted =
            if numeric then ids |> List.sortBy int64 else ids |> List.sortWith (fun a b -> String.CompareOrdinal(a, b))
        entries, Array.ofList sorted

    /// Listed entries to samples under `root`: each image must exist (`locate` maps a listed path
    /// to the candidates tried, in order, the first being the one an error names) and each label
    /// must be in 0..classes-1.
    let samples (what: string) (classes: int) (locate: string -> string list) (listed: Listed[]) : Sample[] =
        for l in listed do
            if l.Label < 0 || l.Label >= classes then
                Errors.fail "%s:%d: label %d is out of range 0..%d (%s has %d classes)" l.ListFile l.Line l.Label (classes - 1) what classes
        let found = Array.zeroCreate<string> listed.Length
        Parallel.For(0, listed.Length, fun i ->
            found[i] <- locate listed[i].Path |> List.tryFind File.Exists |> Option.toObj)
        |> ignore
        let missing = [ for i in 0 .. listed.Length - 1 do if isNull found[i] then yield listed[i] ]
        match missing with
        | first :: rest ->
            Errors.fail "%s:%d: names %s, which is not on disk (expected %s)%s" first.ListFile first.Line first.Path
                (List.head (locate first.Path))
                (if rest.IsEmpty then "" else sprintf "; %d more listed images are missing" rest.Length)
        | [] ->
            listed
            |> Array.mapi (fun i l ->
                let file = found[i]
                { Source = file; Label = l.Label; Load = fun () -> Images.decodeBytes file (Readers.readAllBytes file) })

    /// With SkipCorrupt, images that do not decode are dropped (decoded once, in parallel) and reported.
    let dropUndecodable (options: ReadOptions) (samples: Sample[]) : Sample[] * Skipped list =
        if not options.SkipCorrupt then samples, []
        else
            let bad = Array.zeroCreate<string option> samples.Length
            Parallel.For(0, samples.Length, fun i ->
                bad[i] <-
                    try
                        samples[i].Load() |> ignore
                        None
                    with PromptingError m -> Some m)
            |> ignore
            let kept = [| for i in 0 .. samples.Length - 1 do if bad[i].IsNone then yield samples[i] |]
            let skipped = [ for i in 0 .. samples.Length - 1 do match bad[i] with Some m -> yield { Path = samples[i].Source; Reason = m } | None -> () ]
            kept, skipped

    /// Class names from the listed paths: the parent directory of label k's images when they all
    /// share one (a WordNet id, a class folder), else the label itself.
    let classNamesOf (classes: int) (listed: Listed seq) =
        let parents = Array.init classes (fun _ -> Collections.Generic.HashSet<string>())
        for l in listed do
            let parts = l.Path.Replace('\\', '/').Split('/', StringSplitOptions.RemoveEmptyEntries)
            if parts.Length >= 2 then parents[l.Label].Add parts[parts.Length - 2] |> ignore
        Array.init classes (fun k -> if parents[k].Count = 1 then Seq.head parents[k] else string k)

    /// Where a listed path may lie below a release root, in order: without a leading `data/` and a
    /// leading component named like the root's folder (or one of `baseNames`), as CODA-Prompt's
    /// `data/imagenet-r/<wnid>/<file>` under imagenet-r/; without `data/` only (--data is CODA's
    /// data/ folder); as written.
    let underRoot (root: string) (baseNames: string list) (listedPath: string) =
        let parts = listedPath.Replace('\\', '/').Split('/', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray
        let rootName = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath root))
        let isBase (p: string) = String.Equals(p, rootName, StringComparison.OrdinalIgnoreCase) || baseNames |> List.exists (fun b -> String.Equals(p, b, StringComparison.OrdinalIgnoreCase))
        let withoutData = match parts with "data" :: rest -> rest | _ -> parts
        let withoutBase = match withoutData with b :: rest when isBase b -> rest | _ -> withoutData
        [ withoutBase; withoutData; parts ] |> List.map (fun p -> Path.Combine(root, String.Join("/", p))) |> List.distinct
