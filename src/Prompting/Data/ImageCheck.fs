namespace Prompting.Data

open System
open System.Collections.Concurrent
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Prompting

/// Decodes every image of a run's samples once, in parallel, before the first training step: a
/// bad file (truncated, header only, hostile) fails the run before any work instead of when its
/// batch is reached, or with SkipCorrupt is listed and left out. Verdicts are cached by the
/// file's path, size and modification time, so a rerun decodes only what changed.
module ImageCheck =
    /// Bump when the decoding rules change: older verdicts are then ignored.
    let private rules = 1

    type Options =
        { /// The cache file of verdicts; None: no cache.
          CacheFile: string option
          /// Leave bad images out (and report them) instead of failing.
          SkipCorrupt: bool }

    /// A verdict: the sample's file and its identity when it was checked, and the problem
    /// (null: none).
    type private Verdict =
        { Source: string
          File: string
          Size: int64
          Ticks: int64
          Problem: string }

    /// One bad member of a file in the cache.
    type CachedProblem = { Member: string; Problem: string }

    /// The verdicts of one file in the cache: members are the sources less the file's path
    /// ("" for an image file itself, "#train/cat/1.jpg" inside an archive).
    type CachedFile =
        { File: string
          Size: int64
          Ticks: int64
          Good: string[]
          Bad: CachedProblem[] }

    /// What the cache file holds (plain arrays and strings: System.Text.Json reads them back).
    type CacheFile = { Rules: int; Files: CachedFile[] }

    /// The default cache of verdicts for a dataset path: under $XDG_CACHE_HOME (or ~/.cache)
    /// /prompting/image-checks, one small file per dataset path.
    let defaultCacheFile (data: string option) =
        let root =
            match Environment.GetEnvironmentVariable "XDG_CACHE_HOME" with
            | null
            | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache")
            | dir -> dir
        let key =
            let full = data |> Option.map Path.GetFullPath |> Option.defaultValue "(no data path)"
            Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes full)).Substring(0, 16).ToLowerInvariant()
        Path.Combine(root, "prompting", "image-checks", key + ".json")

    /// The file a sample's source lives in: the source itself, or the part before a '#'
    /// (`archive.tar#member`, `images-idx3-ubyte#7`) that is an existing file.
    let fileOf (source: string) =
        if File.Exists source then Some source
        else
            let mutable found = None
            let mutable at = source.IndexOf '#'
            while found.IsNone && at > 0 do
                let prefix = source.Substring(0, at)
                if File.Exists prefix then found <- Some prefix
                at <- source.IndexOf('#', at + 1)
            found

    /// Samples that come from an image file (by extension), as opposed to rows of a binary
    /// dataset file (CIFAR, IDX), which their readers check whole.
    let isImageSample (s: Sample) =
        let name = match s.Source.LastIndexOf '#' with | -1 -> s.Source | i -> s.Source.Substring(i + 1)
        Images.isImageFile name || Images.isImageFile s.Source

    let private identity (source: string) =
        match fileOf source with
        | Some file ->
            let info = FileInfo file
            Some(file, info.Length, info.LastWriteTimeUtc.Ticks)
        | None -> None

    let private load (cacheFile: string option) : Map<string, Verdict> =
        match cacheFile with
        | Some path when File.Exists path ->
            try
                let cache = JsonSerializer.Deserialize<CacheFile>(File.ReadAllText path)
                if isNull (box cache) || cache.Rules <> rules || isNull cache.Files then Map.empty
                else
                    [| for f in cache.Files do
                           if not (isNull (box f)) && not (isNull f.File) && not (isNull f.Good) && not (isNull f.Bad) then
                               let verdict m problem = f.File + m, { Source = f.File + m; File = f.File; Size = f.Size; Ticks = f.Ticks; Problem = problem }
                               for m in f.Good do
                                   if not (isNull m) then yield verdict m null
                               for b in f.Bad do
                                   if not (isNull (box b)) && not (isNull b.Member) then yield verdict b.Member b.Problem |]
                    |> Map.ofArray
            with :? JsonException | :? IOException | :? UnauthorizedAccessException | :? NotSupportedException -> Map.empty
        | _ -> Map.empty

    let private save (cacheFile: string option) (verdicts: Verdict seq) =
        match cacheFile with
        | Some path ->
            let files =
                verdicts
                |> Seq.groupBy (fun v -> v.File, v.Size, v.Ticks)
                |> Seq.map (fun ((file, size, ticks), vs) ->
                    let memberOf (v: Verdict) = v.Source.Substring file.Length
                    { File = file
                      Size = size
                      Ticks = ticks
                      Good = vs |> Seq.filter (fun v -> isNull v.Problem) |> Seq.map memberOf |> Seq.sort |> Array.ofSeq
                      Bad = vs |> Seq.filter (fun v -> not (isNull v.Problem)) |> Seq.map (fun v -> { Member = memberOf v; Problem = v.Problem }) |> Array.ofSeq })
                |> Seq.sortBy (fun f -> f.File)
                |> Array.ofSeq
            // A cache that cannot be written only costs a re-check next time.
            try
                let text = JsonSerializer.Serialize { Rules = rules; Files = files }
                Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text))
            with PromptingError _ -> ()
        | None -> ()

    /// Checks the image samples (decoding each); returns the bad ones, in sample order, with
    /// the problem. Cached verdicts of unchanged files are reused.
    let problems (options: Options) (samples: Sample[]) : Skipped list =
        let cached = load options.CacheFile
        let images = samples |> Array.filter isImageSample |> Array.distinctBy (fun s -> s.Source)
        let verdicts = ConcurrentDictionary<string, Verdict>()
        let decodeProblem (s: Sample) =
            try
                s.Load() |> ignore
                null
            with PromptingError m -> m
        let parallelism = ParallelOptions(MaxDegreeOfParallelism = Environment.ProcessorCount)
        Parallel.ForEach(images, parallelism, fun (s: Sample) ->
            verdicts[s.Source] <-
                match identity s.Source, cached.TryFind s.Source with
                | Some(file, size, ticks), Some v when v.File = file && v.Size = size && v.Ticks = ticks -> v
                | Some(file, size, ticks), _ -> { Source = s.Source; File = file; Size = size; Ticks = ticks; Problem = decodeProblem s }
                // Not from a file (built in memory): checked, never cached.
                | None, _ -> { Source = s.Source; File = ""; Size = -1L; Ticks = 0L; Problem = decodeProblem s })
        |> ignore
        // Verdicts of files outside these samples (another subset of the same data) are kept.
        let fresh = verdicts.Values |> Seq.filter (fun v -> v.Size >= 0L) |> List.ofSeq
        let others = cached.Values |> Seq.filter (fun v -> not (verdicts.ContainsKey v.Source)) |> List.ofSeq
        save options.CacheFile (fresh @ others)
        [ for s in images do
              match verdicts[s.Source].Problem with
              | null -> ()
              | problem -> yield { Path = s.Source; Reason = problem } ]

    /// Fails with one line naming the first bad image and its problem, or with SkipCorrupt
    /// returns the samples without the bad ones and what was left out.
    let samples (options: Options) (all: Sample[]) : Sample[] * Skipped list =
        match problems options all with
        | [] -> all, []
        | first :: rest when not options.SkipCorrupt ->
            let more = if rest.IsEmpty then "" else sprintf " (and %d more bad image(s))" rest.Length
            // The problem usually begins with the source already ("file: truncated ...").
            let reason = if first.Reason.StartsWith first.Path then first.Reason else sprintf "%s: %s" first.Path first.Reason
            Errors.fail "%s%s; checked before training: fix or remove it, or pass --skip-corrupt to leave bad images out" reason more
        | bad ->
            let badSet = bad |> List.map (fun b -> b.Path) |> set
            all |> Array.filter (fun s -> not (badSet.Contains s.Source)), bad

    /// Both splits of a dataset checked (see `samples`); what is left out is passed to `skipped`.
    let dataset (options: Options) (skipped: Skipped list -> unit) (d: Dataset) : Dataset =
        let train, badTrain = samples options d.Train
        let test, badTest = samples options d.Test
        let bad = badTrain @ badTest
        if not bad.IsEmpty then
            skipped bad
            for split, kept in [ "train", train; "test", test ] do
                let counts = Dataset.classCounts d.ClassNames.Length kept
                let before = Dataset.classCounts d.ClassNames.Length (if split = "train" then d.Train else d.Test)
                match Array.indexed counts |> Array.tryFind (fun (i, n) -> n = 0 && before[i] > 0) with
                | Some(i, _) -> Errors.fail "%s: no %s images of class %s are left after leaving out bad images" d.Name split d.ClassNames[i]
                | None -> ()
        { d with Train = train; Test = test }
