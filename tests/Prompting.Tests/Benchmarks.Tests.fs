/// The registered benchmarks of the papers (issue 17): every reader and split on miniature copies
/// of the real layouts, generated here with the releases' file and folder names (tiny BMP images
/// under the releases' .jpg/.png names; the decoder goes by content), the failure cases (missing
/// list file, a list naming a missing image, a label out of range, a split file whose checksum
/// differs: one line each), and the reference class orders against real NumPy/CPython output.
module Prompting.Tests.Benchmarks

open System
open System.IO
open System.Text.Json
open Expecto
open Prompting
open Prompting.Data
open Prompting.Engine
open Prompting.Tests.TestSupport
open Prompting.Tests.Cli

// ---------------------------------------------------------------- helpers

let private image (path: string) (seed: int) =
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    writeBmp path 6 5 (fun x y -> byte (seed * 37 + x), byte (seed * 11 + y), byte seed)

let private lines (path: string) (xs: string seq) =
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    File.WriteAllText(path, String.Join("\n", xs) + "\n")

/// WordNet-like ids n00000000 .. for `count` classes.
let private wnids count = [ for c in 0 .. count - 1 -> sprintf "n%08d" (1440000 + c * 7) ]

/// `root/{train,test}/<class>/` with `classes` folders of one image each (LAMDA-PILOT's releases).
let private pilotTree (root: string) (classNames: string list) =
    for split in [ "train"; "test" ] do
        for i, c in List.indexed classNames do
            image (Path.Combine(root, split, c, sprintf "%s_%d.jpg" split i)) i

let private read (name: string) (data: string) (split: string option) =
    let b = Benchmarks.find name
    Benchmarks.read b (Some data) (defaultArg split (b.DefaultSplit(Some data))) ReadOptions.Defaults ignore

/// The reference orders made by tests/fixtures/make_class_orders.py with NumPy 1.24 / CPython 3.11.
let private referenceOrders (key: string) =
    use doc = JsonDocument.Parse(File.ReadAllText(fixture "class_orders.json"))
    [ for c in doc.RootElement.GetProperty(key).EnumerateArray() ->
          c.GetProperty("seed").GetInt64(), c.GetProperty("n").GetInt32(), [| for x in c.GetProperty("order").EnumerateArray() -> x.GetInt32() |] ]

/// A miniature ImageNet-R release with CODA-Prompt's split files (their format, their `data/imagenet-r/`
/// prefix, labels in an order of their own): 200 classes, 2 train and 1 test image each.
let private codaImagenetR (root: string) =
    let ids = wnids 200
    // CODA-Prompt's labels are not the sorted order of the folders: label k is class (k * 7) % 200
    let classOfLabel k = ids[(k * 7) % 200]
    let train, test = ResizeArray(), ResizeArray()
    for k in 0..199 do
        let wnid = classOfLabel k
        for i, style in List.indexed [ "art"; "cartoon"; "sketch" ] do
            let file = sprintf "%s_%d.jpg" style i
            image (Path.Combine(root, wnid, file)) k
            (if i < 2 then train else test).Add(sprintf "data/imagenet-r/%s/%s" wnid file, k)
    let yaml (path: string) (items: ResizeArray<string * int>) =
        lines path [ yield "data:"; for p, _ in items do yield "- " + p
                     yield "targets:"; for _, k in items do yield sprintf "- %d" k ]
    yaml (Path.Combine(root, "imagenet-r_train.yaml")) train
    yaml (Path.Combine(root, "imagenet-r_test.yaml")) test
    classOfLabel

/// vtab-1k/<task>/ with images/ and the four list files (`path label`), `perClass` images per
/// class in train800 and val200, one in test.
let vtabTask (root: string) (classes: int) =
    let entries prefix count = [ for c in 0 .. classes - 1 do for i in 0 .. count - 1 -> sprintf "images/%s/%06d.jpg" prefix (c * 10 + i), c ]
    let train800 = entries "train800" 2
    let val200 = entries "val200" 1
    let test = entries "test" 1
    for p, c in train800 @ val200 @ test do image (Path.Combine(root, p)) c
    let write name (xs: (string * int) list) = lines (Path.Combine(root, name)) [ for p, c in xs -> sprintf "%s %d" p c ]
    write "train800.txt" train800
    write "val200.txt" val200
    write "train800val200.txt" (train800 @ val200)
    write "test.txt" test

/// VPT's FGVC CUB: images/<class folder>/<file>.jpg and train/val/test.json with ids 1..200.
let fgvcCub (root: string) =
    let folder c = sprintf "%03d.Bird_%d" (c + 1) c
    let json (name: string) (entries: (string * int) list) =
        let body = entries |> List.map (fun (p, id) -> sprintf "\"%s\": %d" p id) |> String.concat ", "
        File.WriteAllText(Path.Combine(root, name), "{" + body + "}")
    let side tag = [ for c in 0..199 -> sprintf "%s/Bird_%s_%d.jpg" (folder c) tag c, c + 1 ]
    let train, valid, test = side "train", side "val", side "test"
    for p, id in train @ valid @ test do image (Path.Combine(root, "images", p)) id
    json "train.json" train
    json "val.json" valid
    json "test.json" test

// ---------------------------------------------------------------- tests

[<Tests>]
let tests =
    testList
        "benchmarks"
        [ test "NumPy's legacy seed and permutation, bit for bit (LAMDA-PILOT's class orders)" {
              let cases = referenceOrders "numpy_permutation"
              Expect.isGreaterThanOrEqual cases.Length 10 "fixture cases"
              for seed, n, order in cases do
                  Expect.equal (NumpyRandom.permutationFrom (Mt19937.InitGenrand(uint32 seed)) n) order (sprintf "np.random.seed(%d); permutation(%d)" seed n)
                  if seed <= int64 Int32.MaxValue then
                      Expect.equal (Scenario.classOrder (NumpyPermutation(int seed)) n) order "the class order pilot-K"
          }

          test "CPython's random.seed and random.shuffle, bit for bit (CODA-Prompt's rand_split)" {
              for seed, n, order in referenceOrders "python_shuffle" do
                  Expect.equal (PythonRandom.shuffled seed n) order (sprintf "random.seed(%d); shuffle(range(%d))" seed n)
          }

          test "class orders by name" {
              Expect.equal (ClassOrder.parse "pilot-1993") (NumpyPermutation 1993) "LAMDA-PILOT's default"
              Expect.equal (ClassOrder.parse "numpy:7") (NumpyPermutation 7) "numpy:K"
              Expect.equal (ClassOrder.parse "coda-0") Natural "CODA-Prompt's first repeat keeps the lists' order"
              Expect.equal (ClassOrder.parse "coda-2") (PythonShuffle 2) "later repeats shuffle with random.seed(K)"
              Expect.equal (ClassOrder.parse "seed:4") (Shuffled 4) "our own seeded shuffle"
              Expect.equal (ClassOrder.parse "natural") Natural "natural"
              let msg = promptingError "bad" (fun () -> ClassOrder.parse "pilot-x")
              Expect.stringContains msg "pilot-K" "says the form"
              for order in [ Natural; Shuffled 3; NumpyPermutation 1993; PythonShuffle 2 ] do
                  Expect.equal (ClassOrder.parse (ClassOrder.name order)) order "name reads back"
          }

          test "the registry: class counts, task splits, scenarios and splits of the papers' benchmarks" {
              let expect name classes tasks scenario =
                  let b = Benchmarks.find name
                  Expect.equal (b.Classes, b.DefaultTasks, b.DefaultScenario) (Some classes, Some tasks, scenario) name
              expect "cifar100" 100 10 ClassIncremental
              expect "imagenet-r" 200 10 ClassIncremental
              expect "imagenet-a" 200 10 ClassIncremental
              expect "cub" 200 20 ClassIncremental
              expect "objectnet" 200 20 ClassIncremental
              expect "omnibenchmark" 300 10 ClassIncremental
              expect "vtab" 50 5 ClassIncremental
              expect "domainnet" 345 5 ClassIncremental
              expect "five-datasets" 50 5 ClassIncremental
              expect "fgvc-nabirds" 555 1 Joint
              expect "vtab1k-sun397" 397 1 Joint
              Expect.equal (Benchmarks.vtab1kTasks.Length, Benchmarks.fgvcSets.Length) (19, 5) "19 VTAB-1k tasks, 5 FGVC sets"
              let splits name = (Benchmarks.find name).Splits |> List.map (fun s -> s.Name)
              Expect.equal (splits "imagenet-r") [ "coda"; "folders"; "seeded" ] "ImageNet-R: CODA's lists, a split tree, our seeded split"
              Expect.equal (splits "domainnet") [ "coda"; "official" ] "DomainNet"
              Expect.equal (splits "vtab1k-dtd") [ "final"; "tune" ] "VTAB-1k"
              let ir = Benchmarks.find "imagenet-r"
              Expect.equal (ir.DefaultSplit None) "coda" "the reference split by default"
              Expect.equal (ir.UnrecordedSplit None) "seeded" "runs that recorded no split made the seeded one"
              let msg = promptingError "unknown split" (fun () -> Benchmarks.checkSplitName ir "pilot")
              Expect.stringContains msg "coda, folders, seeded" "lists the splits"
              for b in Benchmarks.all do
                  Expect.isNonEmpty b.Splits b.Name
                  Expect.contains (b.Splits |> List.map (fun s -> s.Name)) (b.DefaultSplit None) (b.Name + ": the default is a split")
          }

          test "ImageNet-R --split coda: CODA-Prompt's lists, labels and class names as the lists give them" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "imagenet-r")
              let classOfLabel = codaImagenetR root
              let d =
                  Releases.codaYaml "imagenet-r" 200 root [ "imagenet-r" ] ReadOptions.Defaults
                      (Path.Combine(root, "imagenet-r_train.yaml")) (Path.Combine(root, "imagenet-r_test.yaml"))
              Expect.equal (d.Dataset.Train.Length, d.Dataset.Test.Length) (400, 200) "every listed image"
              Expect.equal d.Dataset.ClassNames[0] (classOfLabel 0) "label 0 is the lists' label 0"
              Expect.equal d.Dataset.ClassNames[13] (classOfLabel 13) "label k names its WordNet id"
              let first = d.Dataset.Train[0]
              Expect.equal first.Source (Path.Combine(root, classOfLabel 0, "art_0.jpg")) "data/imagenet-r/ prefix resolved under --data"
              Expect.equal (first.Load()).Width 6 "decodes"
          }

          test "ImageNet-R --split coda refuses split files that are not the reference's (one line)" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "imagenet-r")
              codaImagenetR root |> ignore
              let msg = promptingError "checksum" (fun () -> read "imagenet-r" root (Some "coda"))
              Expect.stringContains msg "imagenet-r_train.yaml" "names the file"
              Expect.stringContains msg "6bcaa14ca9359915ac3a44c48ae71388146385686eb15da79a37844421a0b845" "and the reference's SHA-256"
              Expect.isFalse (msg.Contains "\n") "one line"
              File.Delete(Path.Combine(root, "imagenet-r_train.yaml"))
              let missing = promptingError "missing" (fun () -> read "imagenet-r" root (Some "coda"))
              Expect.stringContains missing "missing list file" "a missing list file"
          }

          test "CODA-Prompt's lists inside a CODA-Prompt checkout: data/imagenet-r/ and dataloaders/splits/" {
              use dir = new TempDir()
              let checkout = dir.File "CODA-Prompt"
              let data = Path.Combine(checkout, "data")
              let root = Path.Combine(data, "imagenet-r")
              codaImagenetR root |> ignore
              let splits = Path.Combine(checkout, "dataloaders", "splits")
              Directory.CreateDirectory splits |> ignore
              for f in [ "imagenet-r_train.yaml"; "imagenet-r_test.yaml" ] do File.Move(Path.Combine(root, f), Path.Combine(splits, f))
              for top in [ root; data ] do
                  let d =
                      Releases.codaYaml "imagenet-r" 200 top [ "imagenet-r" ] ReadOptions.Defaults
                          (Path.Combine(splits, "imagenet-r_train.yaml")) (Path.Combine(splits, "imagenet-r_test.yaml"))
                  Expect.equal (d.Dataset.Train.Length, d.Dataset.Test.Length) (400, 200) (sprintf "paths resolved under %s" top)
                  // the miniature lists are not the reference's: found, then refused by checksum
                  let msg = promptingError "checksum" (fun () -> read "imagenet-r" top (Some "coda"))
                  Expect.stringContains msg (Path.Combine(splits, "imagenet-r_train.yaml")) "found in the checkout's dataloaders/splits/"
                  Expect.stringContains msg "differs" "and checked"
          }

          test "SplitFiles: SHA-256 and git blob checks, YAML and list errors name file and line" {
              use dir = new TempDir()
              let path = dir.File "list.yaml"
              let content = "data:\n- data/imagenet-r/n1/a.jpg\ntargets:\n- 0\n"
              File.WriteAllText(path, content)
              SplitFiles.verify "test" (SplitSha256(SplitFiles.sha256Of path)) path
              // what `git hash-object` prints for this content
              Expect.equal (SplitFiles.gitBlobOf path) "43cedd6fe8dd72761bff8426b4d322ac61020191" "git's blob id"
              SplitFiles.verify "test" (GitBlob(SplitFiles.gitBlobOf path)) path
              let msg = promptingError "blob" (fun () -> SplitFiles.verify "CODA" (GitBlob "0000") path)
              Expect.stringContains msg "git blob id" "names the kind of checksum"
              File.WriteAllText(path, "data:\n- a.jpg\n- b.jpg\ntargets:\n- 0\n")
              Expect.stringContains (promptingError "lengths" (fun () -> SplitFiles.readCodaYaml path)) "2 paths under data: but 1 labels" "lengths differ"
              let list = dir.File "train800.txt"
              File.WriteAllText(list, "images/a.jpg 0\nimages/b.jpg\n")
              Expect.stringContains (promptingError "line" (fun () -> SplitFiles.readPathLabel list)) "train800.txt:2" "file and line"
          }

          test "ImageNet-R --split seeded and folders; the default follows the layout" {
              use dir = new TempDir()
              let single = Path.Combine(dir.Path, "imagenet-r")
              for i, w in List.indexed (wnids 200) do
                  for k in 0..4 do image (Path.Combine(single, w, sprintf "art_%d.jpg" k)) i
              let seeded = read "imagenet-r" single (Some "seeded")
              Expect.equal (seeded.Train.Length, seeded.Test.Length) (800, 200) "80/20 per class"
              let tree = Path.Combine(dir.Path, "split")
              pilotTree tree (wnids 200)
              let b = Benchmarks.find "imagenet-r"
              Expect.equal (b.DefaultSplit(Some tree)) "folders" "a split tree is read as it is"
              Expect.equal (b.DefaultSplit(Some single)) "coda" "the release: CODA's lists"
              let folders = read "imagenet-r" tree None
              Expect.equal (folders.ClassNames.Length, folders.Train.Length) (200, 200) "folders"
              Expect.stringContains (promptingError "seeded on a tree" (fun () -> read "imagenet-r" tree (Some "seeded"))) "--split folders" "says which split fits"
          }

          test "LAMDA-PILOT's releases: ImageNet-A, CUB, ObjectNet, OmniBenchmark, VTAB class counts" {
              use dir = new TempDir()
              for name, classes in [ "imagenet-a", 200; "cub", 200; "objectnet", 200; "omnibenchmark", 300; "vtab", 50 ] do
                  let root = Path.Combine(dir.Path, name)
                  pilotTree root [ for c in 0 .. classes - 1 -> sprintf "%03d.class_%d" (c + 1) c ]
                  let d = read name root None
                  Expect.equal (d.ClassNames.Length, d.Train.Length, d.Test.Length) (classes, classes, classes) name
              let short = Path.Combine(dir.Path, "short")
              pilotTree short [ for c in 0..198 -> sprintf "c%03d" c ]
              let msg = promptingError "199 classes" (fun () -> read "imagenet-a" short None)
              Expect.stringContains msg "199 class folders under train/, expected 200" "one line with the counts"
          }

          test "--class-order pilot-1993 orders a LAMDA-PILOT release as LAMDA-PILOT does" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "imagenet-a")
              let names = [ for c in 0..199 -> sprintf "n%08d" (7000000 + c) ]
              pilotTree root names
              let _, _, reference = referenceOrders "numpy_permutation" |> List.find (fun (s, n, _) -> s = 1993L && n = 200)
              let config =
                  { Method = Prompting.Prompts.Methods.linear; Benchmark = "imagenet-a"; Data = Some root; Checkpoint = ""; Heads = None
                    ImageSize = 32; Tasks = 10; Scenario = ClassIncremental; Split = Some "pilot"; ClassOrder = NumpyPermutation 1993
                    TrainPerClass = None; TestPerClass = None; Normalisation = Normalised; Seed = 0; SkipCorrupt = false; Validation = None }
              let scenario = Experiment.scenario config ignore
              Expect.equal scenario.ClassNames (reference |> Array.map (fun i -> names[i])) "class k of the stream is sorted folder order[k]"
              Expect.equal scenario.Tasks.Length 10 "B0 Inc20"
              Expect.equal scenario.Tasks[0].Train.Length 20 "20 classes of one image in the first task"
              let first = scenario.Tasks[0].Train |> Array.map (fun s -> Path.GetFileName(Path.GetDirectoryName s.Source)) |> Set.ofArray
              Expect.equal first (set [ for i in reference[0..19] -> names[i] ]) "the first task holds order[0..19]"
          }

          test "VTAB-1k list files: final (train800val200/test) and tune (train800/val200)" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "vtab-1k", "dtd")
              vtabTask root 47
              let final = read "vtab1k-dtd" root None
              Expect.equal (final.ClassNames.Length, final.Train.Length, final.Test.Length) (47, 141, 47) "train800val200 / test"
              let tune = read "vtab1k-dtd" root (Some "tune")
              Expect.equal (tune.Train.Length, tune.Test.Length) (94, 47) "train800 / val200"
          }

          test "VTAB-1k failures: a missing list file, a listed image not on disk, a label out of range" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "vtab-1k", "dtd")
              vtabTask root 47
              File.Delete(Path.Combine(root, "test.txt"))
              let missing = promptingError "list" (fun () -> read "vtab1k-dtd" root None)
              Expect.stringContains missing "missing list file" "missing list file"
              Expect.stringContains missing "test.txt" "names it"
              File.WriteAllText(Path.Combine(root, "val200.txt"), "images/val200/000000.jpg 0\nimages/nowhere.jpg 3\n")
              let image = promptingError "image" (fun () -> read "vtab1k-dtd" root (Some "tune"))
              Expect.stringContains image "val200.txt:2: names images/nowhere.jpg, which is not on disk" "file, line, path"
              File.WriteAllText(Path.Combine(root, "val200.txt"), "images/val200/000000.jpg 47\n")
              let label = promptingError "label" (fun () -> read "vtab1k-dtd" root (Some "tune"))
              Expect.stringContains label "val200.txt:1: label 47 is out of range 0..46" "the range"
          }

          test "VPT's FGVC JSON splits (CUB): ids 1..200 become labels 0..199; final and tune" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "CUB_200_2011")
              fgvcCub root
              let final = read "fgvc-cub" root None
              Expect.equal (final.ClassNames.Length, final.Train.Length, final.Test.Length) (200, 400, 200) "train+val / test"
              Expect.equal final.ClassNames[0] "001.Bird_0" "class names from the image folders"
              Expect.equal (final.Train |> Array.map (fun s -> s.Label) |> Array.max) 199 "contiguous labels"
              let tune = read "fgvc-cub" root (Some "tune")
              Expect.equal (tune.Train.Length, tune.Test.Length) (200, 200) "train / val"
              File.WriteAllText(Path.Combine(root, "val.json"), "{\"001.Bird_0/Bird_val_0.jpg\": 1}")
              File.WriteAllText(Path.Combine(root, "test.json"), "{\"001.Bird_0/Bird_test_0.jpg\": 201}")
              let msg = promptingError "ids" (fun () -> read "fgvc-cub" root None)
              Expect.stringContains msg "201 distinct class ids, expected 200" "a label beyond the classes"
          }

          test "DomainNet --split official: the release's <domain>_{train,test}.txt lists" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "DomainNet")
              for di, domain in List.indexed Benchmarks.domainNetDomains do
                  let classes = [ for c in 0..344 do if c % 6 = di || c < 6 then yield c ]
                  let entries side = [ for c in classes -> sprintf "%s/class_%03d/%s_%03d_%s.jpg" domain c domain c side, c ]
                  for side in [ "train"; "test" ] do
                      for p, c in entries side do image (Path.Combine(root, p)) c
                      lines (Path.Combine(root, sprintf "%s_%s.txt" domain side)) [ for p, c in entries side -> sprintf "%s %d" p c ]
              let d = read "domainnet" root (Some "official")
              Expect.equal d.ClassNames.Length 345 "345 classes"
              Expect.equal d.ClassNames[7] "class_007" "names from the folders"
              Expect.equal d.Train.Length (345 + 5 * 6) "every listed image of every domain"
              let coda = promptingError "coda" (fun () -> read "domainnet" root None)
              Expect.stringContains coda "domainnet_train.yaml" "the default (CODA's lists) says which file is missing"
          }

          test "SVHN .mat files written by SciPy (compressed level-5): labels 10 -> 0, pixels column-major" {
              let d = Svhn.read (fixture "svhn")
              Expect.equal (d.Train.Length, d.Test.Length) (12, 10) "counts"
              Expect.equal (d.Train |> Array.map (fun s -> s.Label)) [| 1; 2; 3; 4; 5; 6; 7; 8; 9; 0; 0; 3 |] "labels"
              let img = d.Test[3].Load()
              Expect.equal (img.Width, img.Height) (32, 32) "32 x 32"
              let pixel r c ch = img.Pixels[(r * 32 + c) * 3 + ch]
              for r, c, ch in [ 0, 0, 0; 5, 9, 1; 31, 2, 2 ] do
                  Expect.equal (int (pixel r c ch)) ((r * 7 + c * 3 + ch * 50 + 3 * 11) % 256) (sprintf "pixel (%d, %d, %d)" r c ch)
              use dir = new TempDir()
              File.WriteAllBytes(dir.File "train_32x32.mat", Array.zeroCreate 64)
              File.Copy(fixture "svhn/test_32x32.mat", dir.File "test_32x32.mat")
              Expect.stringContains (promptingError "short" (fun () -> Svhn.read dir.Path)) "not a MAT file" "a broken file"
          }

          test "notMNIST as L2P reads it, and 5-datasets from one directory in L2P's order" {
              use dir = new TempDir()
              let data = dir.Path
              for part, count in [ "Train", 2; "Test", 1 ] do
                  for li, letter in List.indexed [ 'A' .. 'J' ] do
                      for k in 0 .. count - 1 do
                          image (Path.Combine(data, "notmnist", "notMNIST", part, string letter, sprintf "%c%d.png" letter k)) li
              let nm = read "notmnist" (Path.Combine(data, "notmnist")) None
              Expect.equal (nm.ClassNames, nm.Train.Length) ([| for c in 'A' .. 'J' -> string c |], 20) "A..J"
              Directory.CreateDirectory(Path.Combine(data, "svhn")) |> ignore
              for f in [ "train_32x32.mat"; "test_32x32.mat" ] do File.Copy(fixture ("svhn/" + f), Path.Combine(data, "svhn", f))
              Prompting.Tests.Data.writeCifar10 (Path.Combine(data, "cifar10")) |> ignore
              for name, sub in [ "mnist", "MNIST/raw"; "fashion-mnist", "" ] do
                  // MNIST as torchvision keeps it (mnist/MNIST/raw/), Fashion-MNIST as the files alone
                  let d = Path.Combine(data, name, sub)
                  Directory.CreateDirectory d |> ignore
                  for prefix, n in [ "train", 3; "t10k", 2 ] do
                      File.WriteAllBytes(Path.Combine(d, prefix + "-images-idx3-ubyte"), Prompting.Tests.Data.idxBytes [ n; 28; 28 ] (Array.init (n * 784) byte))
                      File.WriteAllBytes(Path.Combine(d, prefix + "-labels-idx1-ubyte"), Prompting.Tests.Data.idxBytes [ n ] (Array.init n byte))
              let b = Benchmarks.find "five-datasets"
              let parts = Benchmarks.sequenceParts b (Some data)
              Expect.equal (parts |> List.map fst) [ "svhn"; "mnist"; "cifar10"; "notmnist"; "fashion-mnist" ] "L2P's order"
              Expect.isTrue (parts |> List.forall (fun (_, p) -> p.IsSome)) "each from its sub-directory"
              let checkedLines = Benchmarks.check b (Some data) None
              Expect.equal checkedLines.Length 5 "one line per dataset"
              Expect.stringContains checkedLines[0] "SVHN: 10 classes, 12 train and 10 test images" "SVHN first"
          }

          test "downloads: SVHN's files from a (local) server with their MD5, then read; a tar unpacked once" {
              use dir = new TempDir()
              let train = File.ReadAllBytes(fixture "svhn/train_32x32.mat")
              let test = File.ReadAllBytes(fixture "svhn/test_32x32.mat")
              use server = new Prompting.Tests.Data.TestServer(Map [ "/h/train_32x32.mat", train; "/h/test_32x32.mat", test ], true)
              let local =
                  { Download.svhn with
                      Files =
                        [ for f in Download.svhn.Files ->
                              { f with
                                  Url = server.Url("/h/" + f.FileName)
                                  Checksum = Md5(Prompting.Tests.Data.md5Hex (if f.FileName.StartsWith "train" then train else test)) } ] }
              Expect.equal (Download.svhn.Files |> List.map (fun f -> f.FileName)) [ "train_32x32.mat"; "test_32x32.mat" ] "SVHN's files"
              let options = { Prompting.Tests.Data.quietOptions dir.Path with Attempts = 3 }
              let d = Svhn.read (Download.dataset options local)
              Expect.equal d.Train.Length 12 "downloaded (resumed after a broken transfer) and read"
              let tree = dir.File "tree"
              image (Path.Combine(tree, "imagenet-r", "n01443537", "art_0.jpg")) 1
              let tar = dir.File "imagenet-r.tar"
              Formats.Tar.TarFile.CreateFromDirectory(tree, tar, false)
              let unpacked = Download.unpacked tar
              Expect.isTrue (File.Exists(Path.Combine(unpacked, "imagenet-r", "n01443537", "art_0.jpg"))) "unpacked"
              Expect.equal (Download.unpacked tar) unpacked "once"
          }

          test "config.json without Split (older runs) loads as None; a new run records its split" {
              let json = Json.serialize { Method = Prompting.Prompts.Methods.linear; Benchmark = "imagenet-r"; Data = Some "x"; Checkpoint = "c"; Heads = None
                                          ImageSize = 32; Tasks = 10; Scenario = ClassIncremental; Split = Some "coda"; ClassOrder = NumpyPermutation 1993
                                          TrainPerClass = None; TestPerClass = None; Normalisation = Normalised; Seed = 0; SkipCorrupt = false; Validation = None }
              Expect.stringContains json "\"Split\": \"coda\"" "the split is recorded"
              Expect.stringContains json "NumpyPermutation" "and the order"
              let node = Nodes.JsonNode.Parse(json).AsObject()
              node.Remove "Split" |> ignore
              let old = Json.deserialize<RunConfig> "old" (node.ToJsonString())
              Expect.equal old.Split None "absent: None"
              Expect.equal old.ClassOrder (NumpyPermutation 1993) "order read back"
              Expect.equal (Benchmarks.splitOf (Benchmarks.find "imagenet-r") old.Split (Some "x")) "seeded" "what imagenet-r did before"
          }

          test "prompting benchmarks NAME says what goes where and checks it (one line per problem)" {
              use dir = new TempDir()
              let code, out, err = runCli [ "benchmarks"; "imagenet-r" ]
              Expect.equal code 0 err
              Expect.stringContains out "imagenet-r_train.yaml" "the split files"
              Expect.stringContains out "sha256 6bcaa14ca9359915ac3a44c48ae71388146385686eb15da79a37844421a0b845" "their checksums"
              let root = Path.Combine(dir.Path, "vtab-1k", "kitti")
              vtabTask root 4
              let code, out, err = runCli [ "benchmarks"; "vtab1k-kitti"; "--data"; root; "--split"; "tune" ]
              Expect.equal code 0 err
              Expect.stringContains out "ok (--split tune) vtab1k-kitti: 4 classes, 8 train and 4 test images" "checked"
              File.WriteAllText(Path.Combine(root, "test.txt"), "images/test/000000.jpg 9\n")
              expectOneLineError [ "benchmarks"; "vtab1k-kitti"; "--data"; root ] [ "test.txt:1"; "label 9 is out of range 0..3" ] |> ignore
              File.Delete(Path.Combine(root, "test.txt"))
              expectOneLineError [ "benchmarks"; "vtab1k-kitti"; "--data"; root ] [ "missing list file"; "test.txt" ] |> ignore
              File.WriteAllText(Path.Combine(root, "val200.txt"), "images/gone.jpg 1\n")
              expectOneLineError [ "benchmarks"; "vtab1k-kitti"; "--data"; root; "--split"; "tune" ] [ "val200.txt:1"; "images/gone.jpg"; "not on disk" ] |> ignore
              let ir = Path.Combine(dir.Path, "imagenet-r")
              codaImagenetR ir |> ignore
              expectOneLineError [ "benchmarks"; "imagenet-r"; "--data"; ir ] [ "imagenet-r_train.yaml"; "SHA-256"; "differs" ] |> ignore
              expectOneLineError [ "benchmarks"; "imagenet-r"; "--data"; ir; "--split"; "pilot" ] [ "--split pilot"; "coda, folders, seeded" ] |> ignore
          } 
          test "a run with no --class-order takes the reference's rule for its split, and records split and order" {
              let resolve benchmark seed split =
                  (Configure.resolve
                      { RunRequest.empty with
                          Method = Some(MethodNamed "linear"); Benchmark = Some benchmark; Data = Some "/nonexistent/imagenet-r"
                          Checkpoint = Some(fixture "vit_micro.safetensors"); Heads = Some 3; Seed = Some seed; Split = split }).Config
              let c = resolve "imagenet-r" 0 None
              Expect.equal (c.Split, c.ClassOrder) (Some "coda", Natural) "CODA's lists, their own order for repeat 0"
              Expect.equal (resolve "imagenet-r" 2 None).ClassOrder (PythonShuffle 2) "CODA's random.seed(2) shuffle for repeat 2"
              Expect.equal (resolve "imagenet-r" 2 (Some "seeded")).ClassOrder (Shuffled 2) "our split: our seeded shuffle"
              Expect.equal (resolve "imagenet-r" 1993 (Some "folders")).ClassOrder (NumpyPermutation 1993) "a train/test tree (LAMDA-PILOT's release): its rule"
              Expect.equal (resolve "cub" 1993 None).ClassOrder (NumpyPermutation 1993) "LAMDA-PILOT's release: np.random.seed(seed)"
              Expect.equal (resolve "vtab" 1993 None).ClassOrder Natural "LAMDA-PILOT's VTAB is not shuffled (one domain per task)"
              Expect.equal (resolve "cifar100" 5 None).ClassOrder (Shuffled 5) "no reference order: ours"
          }

          test "prompting run on a VTAB-1k task (joint, list files) records its split; older run directories resume" {
              use dir = new TempDir()
              let root = Path.Combine(dir.Path, "vtab-1k", "kitti")
              vtabTask root 4
              let out = dir.File "run"
              let args extra =
                  [ "run"; "--method"; "linear"; "--benchmark"; "vtab1k-kitti"; "--data"; root
                    "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"; "--image-size"; "32"; "--epochs"; "1"
                    "--batch-size"; "4"; "--device"; "cpu"; "--out"; out ] @ extra
              let code, stdout, err = runCli (args [])
              Expect.equal code 0 (stdout + err)
              let configPath = Path.Combine(out, "config.json")
              let config = File.ReadAllText configPath
              Expect.stringContains config "\"Split\": \"final\"" "the split is recorded"
              Expect.stringContains config "\"Benchmark\": \"vtab1k-kitti\"" "the benchmark"
              let log = File.ReadAllText(Path.Combine(out, "log.txt"))
              Expect.stringContains log "12 train and 4 test images" "train800val200 / test"
              // a run directory from before splits were recorded
              let node = Nodes.JsonNode.Parse(config).AsObject()
              node["Config"].AsObject().Remove "Split" |> ignore
              File.WriteAllText(configPath, node.ToJsonString())
              let code, stdout, err = runCli (args [])
              Expect.equal code 0 (stdout + err + " (the same options resume a run that recorded no split)")
              expectOneLineError (args [ "--split"; "tune" ]) [ "different configuration"; "Split" ] |> ignore
          }

          test "the imagenet-r protocol scripts read CODA-Prompt's lists by default" {
              use dir = new TempDir()
              let data = Path.Combine(dir.Path, "imagenet-r")
              for i, w in List.indexed (wnids 200) do image (Path.Combine(data, w, "art_0.jpg")) i
              let script = Path.Combine(Fixtures.root, "scripts", "l2p-imagenet-r.fsx")
              let psi =
                  Diagnostics.ProcessStartInfo(
                      "dotnet", [ "fsi"; script; "--"; "--data"; data; "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"; "--device"; "cpu" ],
                      RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
              use p = Diagnostics.Process.Start psi
              let err = p.StandardError.ReadToEndAsync()
              let stdout = p.StandardOutput.ReadToEnd()
              p.WaitForExit()
              Expect.equal p.ExitCode 1 (stdout + err.Result)
              Expect.stringContains err.Result "imagenet-r --split coda: missing list file" "asks for CODA-Prompt's split files"
              Expect.stringContains err.Result "imagenet-r_train.yaml" "by name"
          } ]
