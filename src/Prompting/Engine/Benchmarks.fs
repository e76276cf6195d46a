namespace Prompting.Engine

open System.IO
open Prompting
open Prompting.Data

/// A named source of data for runs.
type BenchmarkInfo =
    { Name: string
      Description: string
      DefaultTasks: int
      /// What --data takes (or where the data comes from without it).
      Data: string }

module Benchmarks =
    let all =
        [ { Name = "imagefolder"; Description = "any DIR/{train,test}/<class>/<image> tree, or a .tar/.tar.gz of one"; DefaultTasks = 5
            Data = "required: the directory or archive" }
          { Name = "cifar10"; Description = "CIFAR-10 (10 classes; split 5 x 2)"; DefaultTasks = 5
            Data = "the binary batches (directory or .tar.gz), or a JPEG image-folder tar; downloaded to the cache without --data" }
          { Name = "cifar100"; Description = "CIFAR-100 (100 classes; Split CIFAR-100 is 10 x 10)"; DefaultTasks = 10
            Data = "the binary version (directory or .tar.gz); downloaded to the cache without --data" }
          { Name = "fashion-mnist"; Description = "Fashion-MNIST (10 classes of 28x28 grey images; 5 x 2)"; DefaultTasks = 5
            Data = "the IDX files; /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist) or the cache otherwise" }
          { Name = "domains"; Description = "domain-incremental: DIR/<domain>/{train,test}/<class>/, one task per domain (sorted), same classes"; DefaultTasks = 0
            Data = "required: the directory of domains" }
          { Name = "sequence"; Description = "5-datasets style: each dataset one task, e.g. --data cifar10=DIR,fashion-mnist=DIR"; DefaultTasks = 0
            Data = "required: NAME=PATH pairs separated by commas" } ]

    let find (name: string) =
        match all |> List.tryFind (fun b -> b.Name = name.Trim().ToLowerInvariant()) with
        | Some b -> b
        | None -> Errors.fail "benchmark %s: unknown; expected one of %s" name (all |> List.map (fun b -> b.Name) |> String.concat ", ")

    let private existing (what: string) (path: string) =
        if not (File.Exists path || Directory.Exists path) then Errors.fail "%s: --data %s does not exist" what path
        path

    let private isImageTree (path: string) =
        Directory.Exists path && Directory.Exists(Path.Combine(path, "train"))
        || path.EndsWith(".tar", System.StringComparison.OrdinalIgnoreCase)

    /// Loads one named dataset; `skipped` receives files dropped with --skip-corrupt.
    let rec loadNamed (name: string) (data: string option) (skipCorrupt: bool) (skipped: Skipped list -> unit) : Dataset =
        let readFolder path =
            let result = ImageFolder.read { SkipCorrupt = skipCorrupt } path
            skipped result.Skipped
            result.Dataset
        match name, data with
        | "imagefolder", Some path -> readFolder (existing name path)
        | "imagefolder", None -> Errors.fail "imagefolder: --data DIR is required (a DIR/{train,test}/<class>/ tree)"
        | "cifar10", Some path ->
            let path = existing name path
            if isImageTree path then { readFolder path with Name = "CIFAR-10" } else Cifar.read10 path
        | "cifar10", None -> Download.loadCifar10 (Download.defaults ())
        | "cifar100", Some path -> Cifar.read100 (existing name path)
        | "cifar100", None -> Download.loadCifar100 (Download.defaults ())
        | "fashion-mnist", Some path -> Idx.fashionMnist (existing name path)
        | "fashion-mnist", None ->
            let system = "/usr/share/datasets/fashion-mnist"
            if Directory.Exists system then Idx.fashionMnist system else Download.loadFashionMnist (Download.defaults ())
        | "sequence", _ -> Errors.fail "sequence: nested sequences are not supported"
        | "domains", _ -> Errors.fail "domains: a domain is an image folder, not a benchmark"
        | other, _ -> (find other |> ignore; Errors.fail "benchmark %s: cannot be loaded" other)

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
