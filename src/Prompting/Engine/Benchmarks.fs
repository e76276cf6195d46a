namespace Prompting.Engine

open System.IO
open Prompting
open Prompting.Data

/// What a ClassSplit benchmark's reader is given.
[<NoEquality; NoComparison>]
type DataRequest =
    { /// --data (None: the cache or the download, where the benchmark has one).
      Data: string option
      /// The named split to make (one of the benchmark's `Splits`).
      Split: string
      Options: ReadOptions
      /// Receives the files dropped with --skip-corrupt.
      Skipped: Skipped list -> unit }

/// How a benchmark's data becomes a sequence of tasks.
type BenchmarkKind =
    /// One dataset whose classes are split into tasks (class-, task-incremental or joint).
    | ClassSplit of read: (DataRequest -> Dataset)
    /// --data DIR/<domain>/{train,test}/<class>/: one task per domain over the same classes.
    | DomainFolders
    /// Each registered dataset one task: `members` in this order (5-datasets), read from
    /// DIR/<member>/ (or the cache); with no members, --data NAME=PATH,... names them.
    | DatasetSequence of members: string list

/// A named train/test split of a benchmark: what it is and exactly which files it reads.
type SplitInfo =
    { Name: string
      Description: string
      /// Which files go where (relative to --data unless said otherwise).
      Files: string list
      /// Published checksums of those files, where known.
      Checksums: string list }

/// A registered benchmark: everything the engine, `prompting benchmarks` and the docs know about it.
[<NoEquality; NoComparison>]
type BenchmarkInfo =
    { Name: string
      Description: string
      /// The number of classes of the whole benchmark; None: as many as the data has.
      Classes: int option
      /// Tasks when --tasks is not given; None: as many as the data has parts (domains, datasets).
      DefaultTasks: int option
      /// The scenario when --scenario is not given.
      DefaultScenario: ScenarioKind
      /// What --data takes: the layout expected on disk (or where the data comes from without it).
      Layout: string
      /// Where the data comes from: the reference release, download addresses.
      Source: string
      /// Published checksums of the files the data comes from, where known.
      Checksums: string list
      /// The named splits, `--split NAME`; the first is listed first, not necessarily the default.
      Splits: SplitInfo list
      /// The split when none is named (it may depend on the layout --data has).
      DefaultSplit: string option -> string
      /// The split of a run whose config.json records none (made before splits were named): what
      /// the benchmark did then.
      UnrecordedSplit: string option -> string
      /// The class order the reference draws for a split and a seed (CODA-Prompt's repeat rule for
      /// its lists, LAMDA-PILOT's NumPy permutation for its releases): the order of a run that
      /// names none; None: our own seeded shuffle.
      ReferenceOrder: string -> int -> ClassOrder option
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

    let private reported (r: DataRequest) (result: ReadResult) =
        r.Skipped result.Skipped
        result.Dataset

    let private required (name: string) (layout: string) (r: DataRequest) =
        match r.Data with
        | Some path -> existing name path
        | None -> Errors.fail "%s: --data is required (%s; `prompting benchmarks %s` says what goes where)" name layout name

    /// Where Debian's dataset-fashion-mnist package puts the IDX files.
    let systemFashionMnist = "/usr/share/datasets/fashion-mnist"

    let private checksums (d: RemoteDataset) = [ for f in d.Files -> sprintf "%s %s" f.FileName f.Checksum.Text ]

    let private always (name: string) = fun (_: string option) -> name

    /// No reference order: our seeded shuffle.
    let private ourOrder = fun (_: string) (_: int) -> (None: ClassOrder option)

    /// CODA-Prompt's rule for its split lists: repeat K keeps the lists' order for K = 0 and
    /// shuffles with `random.seed(K)` otherwise.
    let codaOrder (seed: int) = if seed = 0 then Natural else PythonShuffle seed

    let private codaListsOrder = fun (split: string) (seed: int) -> if split = "coda" then Some(codaOrder seed) else None

    /// LAMDA-PILOT's rule: `np.random.seed(seed); np.random.permutation(n)` (its default seed is 1993).
    let private pilotOrder = fun (_: string) (seed: int) -> Some(NumpyPermutation seed)

    /// ImageNet-R: CODA-Prompt's rule on its lists, LAMDA-PILOT's on a train/test tree (its release).
    let private imagenetROrder =
        fun (split: string) (seed: int) ->
            match split with
            | "coda" -> Some(codaOrder seed)
            | "folders" -> Some(NumpyPermutation seed)
            | _ -> None

    let private split name description files sums = { Name = name; Description = description; Files = files; Checksums = sums }

    let private official files sums = [ split "official" "the release's own train/test split" files sums ]

    // ---- CODA-Prompt's split lists (GT-RIPL/CODA-Prompt, dataloaders/splits/) ----

    /// SHA-256 of CODA-Prompt's imagenet-r_train.yaml and imagenet-r_test.yaml (GT-RIPL/CODA-Prompt
    /// at 6417d4f; 24000 and 6000 images).
    let codaImagenetR =
        [ "imagenet-r_train.yaml", SplitSha256 "6bcaa14ca9359915ac3a44c48ae71388146385686eb15da79a37844421a0b845"
          "imagenet-r_test.yaml", SplitSha256 "57275ac242d68983a4f39ccb81ec34f48b1bd920b9cd79e6e8040d7c042db02a" ]

    /// The git blob ids of CODA-Prompt's domainnet_train.yaml and domainnet_test.yaml (the
    /// repository's tree at 6417d4f records them; the files' SHA-256 is not known here).
    let codaDomainNet =
        [ "domainnet_train.yaml", GitBlob "bf86d2fb6a4cafaa8dc413bc25998e9ec9728809"
          "domainnet_test.yaml", GitBlob "3c5407918567c97203c85b074ccc323ed4643a7e" ]

    /// Where a reference split file is looked for: beside the class folders, in DIR/splits/, and
    /// in a CODA-Prompt checkout's dataloaders/splits/ when --data is its data/<name>/ or its data/.
    let splitFileCandidates (data: string) (file: string) =
        [ Path.Combine(data, file)
          Path.Combine(data, "splits", file)
          Path.GetFullPath(Path.Combine(data, "..", "..", "dataloaders", "splits", file))
          Path.GetFullPath(Path.Combine(data, "..", "dataloaders", "splits", file)) ]

    let private findSplitFile (what: string) (data: string) (file: string, sum: SplitChecksum) =
        match splitFileCandidates data file |> List.tryFind File.Exists with
        | Some path ->
            SplitFiles.verify what sum path
            path
        | None ->
            Errors.fail "%s: missing list file %s (the reference's %s, %s; also looked in %s)" what (Path.Combine(data, file)) file sum.Text
                (splitFileCandidates data file |> List.tail |> String.concat ", ")

    let private codaSplit (benchmark: string) (classes: int) (baseNames: string list) (files: (string * SplitChecksum) list) (r: DataRequest) (data: string) =
        let what = sprintf "%s --split coda" benchmark
        let train = findSplitFile what data files[0]
        let test = findSplitFile what data files[1]
        Releases.codaYaml benchmark classes data baseNames r.Options train test |> reported r

    let private codaFiles (release: string) (files: (string * SplitChecksum) list) =
        [ for f, _ in files -> sprintf "%s (CODA-Prompt's dataloaders/splits/%s) beside the class folders of %s" f f release ]

    // ---- the readers of each benchmark ----

    let private imageFolder =
        ClassSplit(fun r -> folder r.Options r.Skipped (required "imagefolder" "a DIR/{train,test}/<class>/ tree" r))

    let private cifar10 =
        ClassSplit(fun r ->
            match r.Data with
            | Some path ->
                let path = existing "cifar10" path
                if isImageTree path then { folder r.Options r.Skipped path with Name = "CIFAR-10" } else Cifar.read10 path
            | None -> Download.loadCifar10 (Download.defaults ()))

    let private cifar100 =
        ClassSplit(fun r ->
            match r.Data with
            | Some path ->
                let path = existing "cifar100" path
                if isImageTree path then { folder r.Options r.Skipped path with Name = "CIFAR-100" } else Cifar.read100 path
            | None -> Download.loadCifar100 (Download.defaults ()))

    /// The IDX files' directory: --data itself, or torchvision's <Name>/raw/ or raw/ below it.
    let private idxDirectory (what: string) (torchvisionName: string) (path: string) =
        let path = existing what path
        [ path; Path.Combine(path, torchvisionName, "raw"); Path.Combine(path, "raw") ]
        |> List.tryFind (fun d -> File.Exists(Path.Combine(d, "train-images-idx3-ubyte")) || File.Exists(Path.Combine(d, "train-images-idx3-ubyte.gz")))
        |> Option.defaultValue path

    let private fashionMnist =
        ClassSplit(fun r ->
            match r.Data with
            | Some path -> Idx.fashionMnist (idxDirectory "fashion-mnist" "FashionMNIST" path)
            | None when Directory.Exists systemFashionMnist -> Idx.fashionMnist systemFashionMnist
            | None -> Download.loadFashionMnist (Download.defaults ()))

    let private mnist =
        ClassSplit(fun r ->
            match r.Data with
            | Some path -> Idx.mnist (idxDirectory "mnist" "MNIST" path)
            | None -> Download.loadMnist (Download.defaults ()))

    let private svhn =
        ClassSplit(fun r ->
            match r.Data with
            | Some path -> Svhn.read (existing "svhn" path)
            | None -> Download.loadSvhn (Download.defaults ()))

    let private notMnist =
        ClassSplit(fun r -> Releases.notMnist r.Options (required "notmnist" "the folder holding notMNIST/{Train,Test}/<A..J>/" r) |> reported r)

    /// ImageNet-R: CODA-Prompt's lists over the release's tree (default), a DIR/{train,test} tree as
    /// it is (the LAMDA-PILOT and DualPrompt preprocessing), or our own seeded 80/20 split.
    let private imagenetR =
        ClassSplit(fun r ->
            let data =
                match r.Data with
                | Some path -> existing "imagenet-r" path
                | None -> Download.imagenetRTree (Download.defaults ())
            match r.Split with
            | "coda" -> codaSplit "imagenet-r" 200 [ "imagenet-r" ] codaImagenetR r data
            | "folders" ->
                if not (isImageTree data) then
                    Errors.fail "imagenet-r --split folders: %s has no train/ and test/ (use --split coda or seeded for the single-folder release)" data
                let d = Releases.folders "ImageNet-R" 200 r.Options data |> reported r
                d
            | _ ->
                if isImageTree data then
                    Errors.fail "imagenet-r --split seeded: %s is already split into train/ and test/ (use --split folders)" data
                let classes, samples, skippedFiles = ImageFolder.readTree r.Options data
                r.Skipped skippedFiles
                if classes.Length <> 200 then Errors.fail "imagenet-r: %s has %d class folders, expected 200" data classes.Length
                Splits.perClass 0.8 0 "ImageNet-R" classes samples)

    let private imagenetRDefault (data: string option) =
        match data with
        | Some path when isImageTree path -> "folders"
        | _ -> "coda"

    let private imagenetRUnrecorded (data: string option) =
        match data with
        | Some path when isImageTree path -> "folders"
        | _ -> "seeded"

    /// A LAMDA-PILOT release: DIR/{train,test}/<class>/ with exactly `classes` classes.
    let private pilot (name: string) (display: string) (classes: int) =
        ClassSplit(fun r ->
            let data = required name (sprintf "LAMDA-PILOT's %s/{train,test}/<class>/ tree" name) r
            Releases.folders display classes r.Options data |> reported r)

    /// DomainNet: CODA-Prompt's lists (default) or the release's <domain>_{train,test}.txt lists.
    let domainNetDomains = [ "clipart"; "infograph"; "painting"; "quickdraw"; "real"; "sketch" ]

    let private domainNet =
        ClassSplit(fun r ->
            let data = required "domainnet" "the DomainNet release: DIR/<domain>/<class>/<image> and the split files" r
            match r.Split with
            | "coda" -> codaSplit "domainnet" 345 [ "DomainNet"; "domainnet" ] codaDomainNet r data
            | _ ->
                let lists side =
                    [ for d in domainNetDomains -> SplitFiles.require "domainnet --split official" (Path.Combine(data, sprintf "%s_%s.txt" d side)) ]
                Releases.pathLabel "DomainNet" 345 data r.Options (lists "train") (lists "test") |> reported r)

    /// VPT's FGVC: `image directory` relative to --data, JSON splits train/val/test.json.
    let private fgvc (name: string) (display: string) (classes: int) (imageDir: string) =
        ClassSplit(fun r ->
            let data = required name (sprintf "the VPT release's %s folder with train.json, val.json, test.json" name) r
            let json f = SplitFiles.require (sprintf "%s --split %s" name r.Split) (Path.Combine(data, f))
            let images = if imageDir = "" then data else Path.Combine(data, imageDir)
            let train, test =
                match r.Split with
                | "tune" -> [ json "train.json" ], [ json "val.json" ]
                | _ -> [ json "train.json"; json "val.json" ], [ json "test.json" ]
            Releases.fgvcJson display classes images r.Options train test |> reported r)

    /// VTAB-1k's list files in the task's folder: train800.txt, val200.txt, train800val200.txt, test.txt.
    let private vtab1k (name: string) (classes: int) =
        ClassSplit(fun r ->
            let data = required name "the task's vtab-1k/<task>/ folder with its list files and images" r
            let list f = SplitFiles.require (sprintf "%s --split %s" name r.Split) (Path.Combine(data, f))
            let train, test =
                match r.Split with
                | "tune" -> [ list "train800.txt" ], [ list "val200.txt" ]
                | _ -> [ list "train800val200.txt" ], [ list "test.txt" ]
            Releases.pathLabel name classes data r.Options train test |> reported r)

    /// The 19 VTAB-1k tasks: folder name (as the widely distributed vtab-1k/ archive names them),
    /// classes.
    let vtab1kTasks =
        [ "caltech101", 102; "cifar", 100; "dtd", 47; "oxford_flowers102", 102; "oxford_iiit_pet", 37; "svhn", 10
          "sun397", 397; "patch_camelyon", 2; "eurosat", 10; "resisc45", 45; "diabetic_retinopathy", 5
          "clevr_count", 8; "clevr_dist", 6; "dmlab", 6; "kitti", 4; "dsprites_loc", 16; "dsprites_ori", 16
          "smallnorb_azi", 18; "smallnorb_ele", 9 ]

    /// VPT's five FGVC sets: name, display name, classes, image directory below --data.
    let fgvcSets =
        [ "fgvc-cub", "CUB-200-2011", 200, "images"
          "fgvc-nabirds", "NABirds", 555, "images"
          "fgvc-flowers", "Oxford Flowers", 102, ""
          "fgvc-dogs", "Stanford Dogs", 120, "Images"
          "fgvc-cars", "Stanford Cars", 196, "" ]

    /// 5-datasets in L2P's order (SVHN, MNIST, CIFAR-10, notMNIST, Fashion-MNIST).
    let fiveDatasets = [ "svhn"; "mnist"; "cifar10"; "notmnist"; "fashion-mnist" ]

    /// A LAMDA-PILOT release; tasks and order as the authors' configurations give them (EASE's
    /// exps/*.json: B0 Inc20 for ImageNet-R/A, Inc10 for CUB and ObjectNet, Inc30 for
    /// OmniBenchmark, Inc10 unshuffled for VTAB; seed 1993).
    let private pilotEntry (name: string) (display: string) (classes: int) (tasks: int) (release: string) (extra: string) (order: string -> int -> ClassOrder option) =
        { Name = name
          Description = sprintf "%s (%d classes; %d x %d, LAMDA-PILOT's B0 Inc%d)%s" display classes tasks (classes / tasks) (classes / tasks) extra
          Classes = Some classes; DefaultTasks = Some tasks; DefaultScenario = ClassIncremental
          Layout = sprintf "required: LAMDA-PILOT's %s/{train,test}/<class>/<image> (torchvision ImageFolder; classes in sorted folder order)" release
          Source = "LAMDA-PILOT's README links (Google Drive / OneDrive); not downloadable from here"
          Checksums = []
          Splits = [ split "pilot" "the release's train/ and test/ folders" [ sprintf "train/<class>/<image> and test/<class>/<image>, %d class folders in each" classes ] [] ]
          DefaultSplit = always "pilot"; UnrecordedSplit = always "pilot"; ReferenceOrder = order
          Kind = pilot name display classes }

    /// Every benchmark, in display order.
    let all =
        [ { Name = "imagefolder"; Description = "any DIR/{train,test}/<class>/<image> tree, or a .tar/.tar.gz of one"
            Classes = None; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "required: the directory or archive"; Source = "your own"; Checksums = []
            Splits = [ split "folders" "train/ and test/ as they are" [ "train/<class>/<image>"; "test/<class>/<image>" ] [] ]
            DefaultSplit = always "folders"; UnrecordedSplit = always "folders"; ReferenceOrder = ourOrder; Kind = imageFolder }
          { Name = "cifar10"; Description = "CIFAR-10 (10 classes; split 5 x 2)"
            Classes = Some 10; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "the binary batches (directory or .tar.gz), or a DIR/{train,test}/<class>/ image tree or tar; downloaded to the cache without --data"
            Source = Download.cifar10.Files.Head.Url; Checksums = checksums Download.cifar10
            Splits = official [ "data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt (cifar-10-batches-bin/)" ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = cifar10 }
          { Name = "cifar100"; Description = "CIFAR-100 (100 classes; Split CIFAR-100 is 10 x 10)"
            Classes = Some 100; DefaultTasks = Some 10; DefaultScenario = ClassIncremental
            Layout = "the binary version (directory or .tar.gz), or a DIR/{train,test}/<class>/ image tree or tar; downloaded to the cache without --data"
            Source = Download.cifar100.Files.Head.Url; Checksums = checksums Download.cifar100
            Splits = official [ "train.bin, test.bin, fine_label_names.txt (cifar-100-binary/)"; "or train/<class>/<image> and test/<class>/<image>, 100 class folders" ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = cifar100 }
          { Name = "fashion-mnist"; Description = "Fashion-MNIST (10 classes of 28x28 grey images; 5 x 2)"
            Classes = Some 10; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = sprintf "the IDX files; %s (apt-get install dataset-fashion-mnist) or the cache otherwise" systemFashionMnist
            Source = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"; Checksums = checksums Download.fashionMnist
            Splits = official [ "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz)" ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = fashionMnist }
          { Name = "mnist"; Description = "MNIST (10 digits, 28x28 grey; 5 x 2)"
            Classes = Some 10; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "the IDX files' directory (or torchvision's root holding MNIST/raw/); downloaded to the cache without --data"
            Source = "https://ossci-datasets.s3.amazonaws.com/mnist/"; Checksums = checksums Download.mnist
            Splits = official [ "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz)" ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = mnist }
          { Name = "svhn"; Description = "SVHN cropped digits (10 classes, 32x32; 5 x 2; label 10 is the digit 0)"
            Classes = Some 10; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "the directory holding train_32x32.mat and test_32x32.mat; downloaded to the cache without --data"
            Source = "http://ufldl.stanford.edu/housenumbers/"; Checksums = checksums Download.svhn
            Splits = official [ "train_32x32.mat"; "test_32x32.mat" ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = svhn }
          { Name = "notmnist"; Description = "notMNIST as L2P's 5-datasets uses it (letters A-J; 5 x 2)"
            Classes = Some 10; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "required: the folder holding notMNIST/Train/<A..J>/ and notMNIST/Test/<A..J>/ (unzipped notMNIST.zip)"
            Source = "https://github.com/facebookresearch/Adversarial-Continual-Learning/raw/main/data/notMNIST.zip (no published checksum; not downloaded)"
            Checksums = []
            Splits = official [ "notMNIST/Train/<A..J>/*.png"; "notMNIST/Test/<A..J>/*.png" ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = notMnist }
          { Name = "imagenet-r"; Description = "ImageNet-R (200 classes; Split ImageNet-R is 10 x 20); CODA-Prompt's split by default"
            Classes = Some 200; DefaultTasks = Some 10; DefaultScenario = ClassIncremental
            Layout = "the released imagenet-r/<wnid>/<image> tree (with CODA-Prompt's split files for --split coda), or DIR/{train,test}/<wnid>/ (--split folders); downloaded to the cache without --data"
            Source = Download.imagenetR.Files.Head.Url; Checksums = checksums Download.imagenetR
            Splits =
              [ split "coda" "CODA-Prompt's lists (24000 train, 6000 test; labels and class order as the lists give them)"
                    (codaFiles "imagenet-r/" codaImagenetR) [ for f, sum in codaImagenetR -> sprintf "%s %s" f sum.Text ]
                split "folders" "a tree already split into train/ and test/ (LAMDA-PILOT's and DualPrompt's preprocessing), read as it is"
                    [ "train/<wnid>/<image> and test/<wnid>/<image>, 200 class folders in each" ] []
                split "seeded" "our own split: 80/20 per class, seed 0, of the single-folder release (Splits.perClass)"
                    [ "<wnid>/<image>, 200 class folders" ] [] ]
            DefaultSplit = imagenetRDefault; UnrecordedSplit = imagenetRUnrecorded; ReferenceOrder = imagenetROrder; Kind = imagenetR }
          pilotEntry "imagenet-a" "ImageNet-A" 200 10 "imagenet-a" "" pilotOrder
          pilotEntry "cub" "CUB-200-2011" 200 20 "cub" "" pilotOrder
          pilotEntry "objectnet" "ObjectNet (the 200-class subset)" 200 20 "objectnet" "" pilotOrder
          pilotEntry "omnibenchmark" "OmniBenchmark" 300 10 "omnibenchmark" "" pilotOrder
          // shuffle false in the authors' VTAB configuration: the sorted folders, one domain per task
          pilotEntry "vtab" "VTAB as LAMDA-PILOT arranges it" 50 5 "vtab-cil/vtab" " (5 domains of 10 classes, unshuffled)" (fun _ _ -> Some Natural)
          { Name = "domainnet"; Description = "DomainNet (345 classes over 6 domains; CODA-Prompt's 5 x 69, class-incremental)"
            Classes = Some 345; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "required: the DomainNet release DIR/<domain>/<class>/<image> with CODA-Prompt's split files (--split coda) or the release's <domain>_{train,test}.txt (--split official)"
            Source = "http://ai.bu.edu/M3SDA/ (zips per domain; not downloaded: no published checksums)"
            Checksums = []
            Splits =
              [ split "coda" "CODA-Prompt's lists (all six domains mixed, class-incremental over 345 classes)"
                    (codaFiles "DomainNet/" codaDomainNet) [ for f, sum in codaDomainNet -> sprintf "%s %s" f sum.Text ]
                split "official" "the release's <domain>_train.txt and <domain>_test.txt lists of all six domains (lines 'path label')"
                    [ for d in domainNetDomains -> sprintf "%s_train.txt, %s_test.txt and %s/<class>/<image>" d d d ] [] ]
            DefaultSplit = always "coda"; UnrecordedSplit = always "coda"; ReferenceOrder = codaListsOrder; Kind = domainNet }
          { Name = "five-datasets"; Description = "5-datasets (L2P): SVHN, MNIST, CIFAR-10, notMNIST, Fashion-MNIST, one task each (50 classes)"
            Classes = Some 50; DefaultTasks = Some 5; DefaultScenario = ClassIncremental
            Layout = "DIR/svhn, DIR/mnist, DIR/cifar10, DIR/notmnist, DIR/fashion-mnist (each as its own benchmark takes it; a missing one comes from the cache or its download), or NAME=PATH pairs"
            Source = "each member's own (see svhn, mnist, cifar10, notmnist, fashion-mnist)"; Checksums = []
            Splits = official [ for m in fiveDatasets -> sprintf "%s/ as `prompting benchmarks %s` says" m m ] []
            DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = DatasetSequence fiveDatasets } ]
        @ [ for name, display, classes, imageDir in fgvcSets ->
              { Name = name; Description = sprintf "VPT's FGVC %s (%d classes; transfer: one joint task)" display classes
                Classes = Some classes; DefaultTasks = Some 1; DefaultScenario = Joint
                Layout = sprintf "required: the data set's folder with VPT's train.json, val.json, test.json%s" (if imageDir = "" then " and the images they name" else sprintf " and %s/" imageDir)
                Source = "the data set's own site and VPT's released split files (KMnP/vpt)"; Checksums = []
                Splits =
                  [ split "final" "train on train.json + val.json, test on test.json (VPT's final runs)" [ "train.json"; "val.json"; "test.json" ] []
                    split "tune" "train on train.json, test on val.json (VPT's choice of learning rate and weight decay)" [ "train.json"; "val.json" ] [] ]
                DefaultSplit = always "final"; UnrecordedSplit = always "final"; ReferenceOrder = ourOrder; Kind = fgvc name display classes imageDir } ]
        @ [ for task, classes in vtab1kTasks ->
              let name = "vtab1k-" + task.Replace('_', '-')
              { Name = name; Description = sprintf "VTAB-1k %s (%d classes; transfer: one joint task)" task classes
                Classes = Some classes; DefaultTasks = Some 1; DefaultScenario = Joint
                Layout = sprintf "required: vtab-1k/%s/ with train800.txt, val200.txt, train800val200.txt, test.txt (lines 'path label', paths relative to it)" task
                Source = "the vtab-1k/ list-file archive (NOAH, SSF) built from TensorFlow Datasets"; Checksums = []
                Splits =
                  [ split "final" "train on train800val200.txt, test on test.txt" [ "train800val200.txt"; "test.txt" ] []
                    split "tune" "train on train800.txt, test on val200.txt (choice of learning rate and weight decay)" [ "train800.txt"; "val200.txt" ] [] ]
                DefaultSplit = always "final"; UnrecordedSplit = always "final"; ReferenceOrder = ourOrder; Kind = vtab1k name classes } ]
        @ [ { Name = "domains"; Description = "domain-incremental: DIR/<domain>/{train,test}/<class>/, one task per domain (sorted), same classes"
              Classes = None; DefaultTasks = None; DefaultScenario = DomainIncremental
              Layout = "required: the directory of domains"; Source = "your own"; Checksums = []
              Splits = [ split "folders" "each domain's train/ and test/ as they are" [ "<domain>/train/<class>/<image>"; "<domain>/test/<class>/<image>" ] [] ]
              DefaultSplit = always "folders"; UnrecordedSplit = always "folders"; ReferenceOrder = ourOrder; Kind = DomainFolders }
            { Name = "sequence"; Description = "5-datasets style: each dataset one task, e.g. --data cifar10=DIR,fashion-mnist=DIR"
              Classes = None; DefaultTasks = None; DefaultScenario = ClassIncremental
              Layout = "required: NAME=PATH pairs separated by commas"; Source = "your own"; Checksums = []
              Splits = official [ "each NAME=PATH as that benchmark takes it" ] []
              DefaultSplit = always "official"; UnrecordedSplit = always "official"; ReferenceOrder = ourOrder; Kind = DatasetSequence [] } ]

    let find (name: string) =
        match all |> List.tryFind (fun b -> b.Name = name.Trim().ToLowerInvariant()) with
        | Some b -> b
        | None -> Errors.fail "benchmark %s: unknown; expected one of %s" name (all |> List.map (fun b -> b.Name) |> String.concat ", ")

    /// The split name, if the benchmark has it.
    let checkSplitName (b: BenchmarkInfo) (name: string) =
        let name = name.Trim().ToLowerInvariant()
        if not (b.Splits |> List.exists (fun s -> s.Name = name)) then
            Errors.fail "--split %s: %s has the splits %s" name b.Name (b.Splits |> List.map (fun s -> s.Name) |> String.concat ", ")
        name

    /// The split a configuration reads: the recorded one, else what the benchmark did before runs
    /// recorded splits.
    let splitOf (b: BenchmarkInfo) (recorded: string option) (data: string option) =
        match recorded with
        | Some name -> checkSplitName b name
        | None -> b.UnrecordedSplit data

    /// Reads a ClassSplit benchmark's dataset with the split, checking the class count.
    let read (b: BenchmarkInfo) (data: string option) (splitName: string) (options: ReadOptions) (skipped: Skipped list -> unit) : Dataset =
        match b.Kind with
        | ClassSplit read ->
            let d = read { Data = data; Split = checkSplitName b splitName; Options = options; Skipped = skipped }
            match b.Classes with
            | Some n when d.ClassNames.Length <> n -> Errors.fail "%s: the data has %d classes, expected %d" b.Name d.ClassNames.Length n
            | _ -> d
        | DomainFolders -> Errors.fail "%s: a domain is an image folder, not a benchmark" b.Name
        | DatasetSequence _ -> Errors.fail "%s: nested sequences are not supported" b.Name

    /// Loads one registered single dataset with its default split; `skipped` receives files dropped
    /// with --skip-corrupt.
    let loadNamed (name: string) (data: string option) (skipCorrupt: bool) (skipped: Skipped list -> unit) : Dataset =
        let b = find name
        read b data (b.DefaultSplit data) { SkipCorrupt = skipCorrupt } skipped

    /// The datasets of a sequence benchmark: "name=path,name=path", or for a fixed sequence
    /// (5-datasets) a directory holding one sub-directory per member (a missing one: None).
    let sequenceParts (b: BenchmarkInfo) (data: string option) =
        let pairs (spec: string) =
            [ for part in spec.Split(',', System.StringSplitOptions.RemoveEmptyEntries ||| System.StringSplitOptions.TrimEntries) ->
                  match part.Split('=', 2) with
                  | [| name; path |] -> name.Trim().ToLowerInvariant(), Some(path.Trim())
                  | _ -> Errors.fail "%s: expected NAME=PATH, got %s" b.Name part ]
        match b.Kind, data with
        | DatasetSequence [], None -> Errors.fail "sequence: --data NAME=PATH[,NAME=PATH...] is required"
        | DatasetSequence [], Some spec -> pairs spec
        | DatasetSequence members, Some spec when spec.Contains "=" ->
            let given = pairs spec
            for name, _ in given do
                if not (List.contains name members) then Errors.fail "%s: %s is not one of %s" b.Name name (String.concat ", " members)
            [ for m in members -> m, given |> List.tryFind (fun (n, _) -> n = m) |> Option.bind snd ]
        | DatasetSequence members, Some dir ->
            if not (Directory.Exists dir) then Errors.fail "%s: --data %s is not a directory" b.Name dir
            [ for m in members ->
                  let candidates = [ m; m.Replace("-", ""); (if m = "notmnist" then "notMNIST" else m) ]
                  m, candidates |> List.map (fun c -> Path.Combine(dir, c)) |> List.tryFind Directory.Exists ]
        | DatasetSequence members, None -> [ for m in members -> m, None ]
        | _ -> Errors.fail "%s: not a sequence of datasets" b.Name

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
        | DatasetSequence _, None -> (sequenceParts b data).Length
        | ClassSplit _, None -> 1

    /// What `prompting benchmarks NAME` prints: which files go where, for each split.
    let describe (b: BenchmarkInfo) =
        [ yield sprintf "%s: %s" b.Name b.Description
          match b.Classes with
          | Some n -> yield sprintf "  classes: %d" n
          | None -> ()
          yield sprintf "  tasks: %s; scenario: %A" (match b.DefaultTasks with Some n -> string n | None -> "one per part of --data") b.DefaultScenario
          yield sprintf "  --data: %s" b.Layout
          yield sprintf "  source: %s" b.Source
          for c in b.Checksums do yield sprintf "  checksum: %s" c
          let byDefault = b.DefaultSplit None
          for s in b.Splits do
              yield sprintf "  --split %s%s: %s" s.Name (if s.Name = byDefault then " (default)" else "") s.Description
              for f in s.Files do yield sprintf "      %s" f
              for c in s.Checksums do yield sprintf "      checksum: %s" c ]

    /// Reads the data as a run would (indexes every file the split names, decodes none) and says
    /// what it found; a problem is a PromptingError of one line.
    let check (b: BenchmarkInfo) (data: string option) (split: string option) =
        let splitName = split |> Option.map (checkSplitName b) |> Option.defaultWith (fun () -> b.DefaultSplit data)
        let summary (d: Dataset) = sprintf "%s: %d classes, %d train and %d test images" d.Name d.ClassNames.Length d.Train.Length d.Test.Length
        match b.Kind with
        | ClassSplit _ -> [ sprintf "ok (--split %s) %s" splitName (summary (read b data splitName ReadOptions.Defaults ignore)) ]
        | DomainFolders -> [ for dir in domainDirectories data -> "ok " + summary (loadNamed "imagefolder" (Some dir) false ignore) ]
        | DatasetSequence _ -> [ for name, path in sequenceParts b data -> "ok " + summary (loadNamed name path false ignore) ]
