namespace Prompting.Engine

open System.IO
open Prompting
open Prompting.Data

/// How a benchmark's data becomes a sequence of tasks.
type BenchmarkKind =
    /// One dataset whose classes are split into tasks (class-, task-incremental or joint).
    | ClassSplit of read: (string option -> ReadOptions -> (Skipped list -> unit) -> Dataset)
    /// --data DIR/<domain>/{train,test}/<class>/: one task per domain over the same classes.
    | DomainFolders
    /// --data NAME=PATH,...: each registered dataset one task (5-datasets style).
    | DatasetSequence

/// A registered benchmark: everything the engine, `prompting benchmarks` and the docs know about it.
[<NoEquality; NoComparison>]
type BenchmarkInfo =
    { Name: string
      Description: string
      /// Tasks when --tasks is not given; None: as many as the data has parts (domains, datasets).
      DefaultTasks: int option
      /// The scenario when --scenario is not given.
      DefaultScenario: ScenarioKind
      /// What --data takes: the layout expected on disk (or where the data comes from without it).
      Layout: string
      /// Published checksums of the files the data comes from, where known.
      Checksums: string list
      Kind: BenchmarkKind }

module Benchmarks =
    let private existing (what: string) (path: string) =
        if not (File.Exists path || Directory.Exists path) then Errors.fail "%s: --data %s does not exist" what path
        path

    let private isImageTree (path: string) =
        Directory.Exists path && Directory.Exists(Path.Combine(path, "train"))
        || path.EndsWith(".tar", System.StringComparison.OrdinalIgnoreCase)

    let private folder (options: ReadOptions) (skipped: Skipped list -> unit) (path: string) =
        let result = ImageFolder.read options path
        skipped result.Skipped
        result.Dataset

    /// Where Debian's dataset-fashion-mnist package puts the IDX files.
    let systemFashionMnist = "/usr/share/datasets/fashion-mnist"

    let private checksums (d: RemoteDataset) = [ for f in d.Files -> sprintf "%s %s" f.FileName f.Checksum.Text ]

    let private imageFolder =
        ClassSplit(fun data options skipped ->
            match data with
            | Some path -> folder options skipped (existing "imagefolder" path)
            | None -> Errors.fail "imagefolder: --data DIR is required (a DIR/{train,test}/<class>/ tree)")

    let private cifar10 =
        ClassSplit(fun data options skipped ->
            match data with
            | Some path ->
                let path = existing "cifar10" path
                if isImageTree path then { folder options skipped path with Name = "CIFAR-10" } else Cifar.read10 path
            | None -> Download.loadCifar10 (Download.defaults ()))

    let private cifar100 =
        ClassSplit(fun data _ _ ->
            match data with
            | Some path -> Cifar.read100 (existing "cifar100" path)
            | None -> Download.loadCifar100 (Download.defaults ()))

    let private fashionMnist =
        ClassSplit(fun data _ _ ->
            match data with
            | Some path -> Idx.fashionMnist (existing "fashion-mnist" path)
            | None when Directory.Exists systemFashionMnist -> Idx.fashionMnist systemFashionMnist
            | None -> Download.loadFashionMnist (Download.defaults ()))

    /// ImageNet-R's single-folder release split 80/20 per class with seed 0 (the split of the
    /// protocol scripts); a DIR/{train,test} tree is read as it is.
    let private imagenetR =
        ClassSplit(fun data options skipped ->
            match data with
            | Some path when isImageTree (existing "imagenet-r" path) -> { folder options skipped path with Name = "ImageNet-R" }
            | Some path ->
                let classes, samples, skippedFiles = ImageFolder.readTree options path
                skipped skippedFiles
                Splits.perClass 0.8 0 "ImageNet-R" classes samples
            | None -> Errors.fail "imagenet-r: --data DIR is required (imagenet-r/<class>/<image>, or DIR/{train,test}/<class>/)")

    /// Every benchmark, in display order.
    let all =
        [ { Name = "imagefolder"; Description = "any DIR/{train,test}/<class>/<image> tree, or a .tar/.tar.gz of one"
            DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "required: the directory or archive"; Checksums = []; Kind = imageFolder }
          { Name = "cifar10"; Description = "CIFAR-10 (10 classes; split 5 x 2)"
            DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "the binary batches (directory or .tar.gz), or a JPEG image-folder tar; downloaded to the cache without --data"
            Checksums = checksums Download.cifar10; Kind = cifar10 }
          { Name = "cifar100"; Description = "CIFAR-100 (100 classes; Split CIFAR-100 is 10 x 10)"
            DefaultTasks = Some 10; DefaultScenario = ClassIncremental
            Layout = "the binary version (directory or .tar.gz); downloaded to the cache without --data"
            Checksums = checksums Download.cifar100; Kind = cifar100 }
          { Name = "fashion-mnist"; Description = "Fashion-MNIST (10 classes of 28x28 grey images; 5 x 2)"
            DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = sprintf "the IDX files; %s (apt-get install dataset-fashion-mnist) or the cache otherwise" systemFashionMnist
            Checksums = checksums Download.fashionMnist; Kind = fashionMnist }
          { Name = "imagenet-r"; Description = "ImageNet-R (200 classes; Split ImageNet-R is 10 x 20), 80/20 seeded split of the release"
            DefaultTasks = Some 10; DefaultScenario = ClassIncremental
            Layout = "required: the released imagenet-r/<class>/<image> tree (split 80/20 per class, seed 0), or DIR/{train,test}/<class>/"
            Checksums = []; Kind = imagenetR }
          { Name = "domains"; Description = "domain-incremental: DIR/<domain>/{train,test}/<class>/, one task per domain (sorted), same classes"
            DefaultTasks = None; DefaultScenario = DomainIncremental
            Layout = "required: the directory of domains"; Checksums = []; Kind = DomainFolders }
          { Name = "sequence"; Description = "5-datasets style: each dataset one task, e.g. --data cifar10=DIR,fashion-mnist=DIR"
            DefaultTasks = None; DefaultScenario = ClassIncremental
            Layout = "required: NAME=PATH pairs separated by commas"; Checksums = []; Kind = DatasetSequence } ]

    let find (name: string) =
        match all |> List.tryFind (fun b -> b.Name = name.Trim().ToLowerInvariant()) with
        | Some b -> b
        | None -> Errors.fail "benchmark %s: unknown; expected one of %s" name (all |> List.map (fun b -> b.Name) |> String.concat ", ")

    /// Loads one registered single dataset; `skipped` receives files dropped with --skip-corrupt.
    let loadNamed (name: string) (data: string option) (skipCorrupt: bool) (skipped: Skipped list -> unit) : Dataset =
        let b = find name
        match b.Kind with
        | ClassSplit read -> read data { SkipCorrupt = skipCorrupt } skipped
        | DomainFolders -> Errors.fail "%s: a domain is an image folder, not a benchmark" name
        | DatasetSequence -> Errors.fail "%s: nested sequences are not supported" name

    /// The datasets of a sequence benchmark: "name=path,name=path".
    let sequenceParts (data: string option) =
        match data with
        | None -> Errors.fail "sequence: --data NAME=PATH[,NAME=PATH...] is required"
        | Some spec ->
            [ for part in spec.Split(',', System.StringSplitOptions.RemoveEmptyEntries ||| System.StringSplitOptions.TrimEntries) ->
                  match part.Split('=', 2) with
                  | [| name; path |] -> name.Trim().ToLowerInvariant(), Some(path.Trim())
                  | _ -> Errors.fail "sequence: expected NAME=PATH, got %s" part ]

    /// The domains of a domain-incremental benchmark: the sub-directories of --data, sorted.
    let domainDirectories (data: string option) =
        match data with
        | None -> Errors.fail "domains: --data DIR is required (DIR/<domain>/{train,test}/<class>/)"
        | Some dir ->
            if not (Directory.Exists dir) then Errors.fail "domains: --data %s is not a directory" dir
            let subdirs = Directory.GetDirectories dir |> Array.sortWith (fun a b -> System.String.CompareOrdinal(a, b))
            if subdirs.Length = 0 then Errors.fail "domains: %s has no domain sub-directories" dir
            List.ofArray subdirs

    /// The number of tasks when none is given: the benchmark's default, or the parts of its data.
    let defaultTasks (b: BenchmarkInfo) (data: string option) =
        match b.Kind, b.DefaultTasks with
        | _, Some n -> n
        | DomainFolders, None -> (domainDirectories data).Length
        | DatasetSequence, None -> (sequenceParts data).Length
        | ClassSplit _, None -> 1
