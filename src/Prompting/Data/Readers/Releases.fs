namespace Prompting.Data

open System
open System.IO
open Prompting

/// Datasets assembled from the layouts of the reference releases: split lists (CODA-Prompt's
/// YAML, `path label` files, VPT's FGVC JSON) over an image tree, and notMNIST's folders.
module Releases =
    let private dataset name classNames (train: Sample[]) (test: Sample[]) options =
        let train, skippedTrain = SplitFiles.dropUndecodable options train
        let test, skippedTest = SplitFiles.dropUndecodable options test
        { Dataset = { Name = name; ClassNames = classNames; Train = train; Test = test }
          Skipped = skippedTrain @ skippedTest }

    /// Listed train and test images under `root`, labels 0..classes-1, class names from the paths.
    let listed (name: string) (classes: int) (locate: string -> string list) (options: ReadOptions) (train: Listed[]) (test: Listed[]) =
        let trainSamples = SplitFiles.samples name classes locate train
        let testSamples = SplitFiles.samples name classes locate test
        let names = SplitFiles.classNamesOf classes (Seq.append train test)
        dataset name names trainSamples testSamples options

    /// CODA-Prompt's split YAML files (`data:` paths such as `data/imagenet-r/<wnid>/<file>`,
    /// `targets:` labels) over the release's image tree at `root`.
    let codaYaml (name: string) (classes: int) (root: string) (baseNames: string list) (options: ReadOptions) (trainFile: string) (testFile: string) =
        listed name classes (SplitFiles.underRoot root baseNames) options (SplitFiles.readCodaYaml trainFile) (SplitFiles.readCodaYaml testFile)

    /// `path label` list files, paths relative to `root`; several files of a side are concatenated.
    let pathLabel (name: string) (classes: int) (root: string) (options: ReadOptions) (trainFiles: string list) (testFiles: string list) =
        let read files = files |> List.map SplitFiles.readPathLabel |> Array.concat
        listed name classes (fun p -> [ Path.Combine(root, p) ]) options (read trainFiles) (read testFiles)

    /// VPT's FGVC JSON split files over `imageDir`: labels are the class ids in sorted order; the
    /// number of distinct ids must be `classes`.
    let fgvcJson (name: string) (classes: int) (imageDir: string) (options: ReadOptions) (trainFiles: string list) (testFiles: string list) =
        let entries, ids = SplitFiles.readJsonLabels (trainFiles @ testFiles)
        if ids.Length <> classes then
            Errors.fail "%s: %s name %d distinct class ids, expected %d" name (String.Join(", ", trainFiles @ testFiles)) ids.Length classes
        let index = ids |> Array.mapi (fun i id -> id, i) |> dict
        let toListed (file, items: (string * string * int)[]) =
            items |> Array.map (fun (p, l, i) -> { ListFile = file; Line = i; Path = p; Label = index[l] })
        let side files = entries |> List.filter (fun (f, _) -> List.contains f files) |> List.map toListed |> Array.concat
        listed name classes (fun p -> [ Path.Combine(imageDir, p) ]) options (side trainFiles) (side testFiles)

    /// The split layout `root/{train,test}/<class>/` with exactly `classes` class folders (the
    /// LAMDA-PILOT releases: ImageNet-A, CUB, ObjectNet, OmniBenchmark, VTAB).
    let folders (name: string) (classes: int) (options: ReadOptions) (root: string) =
        let result = ImageFolder.read options root
        let found = result.Dataset.ClassNames.Length
        if found <> classes then
            Errors.fail "%s: %s has %d class folders under train/, expected %d" name root found classes
        { result with Dataset = { result.Dataset with Name = name } }

    /// notMNIST as L2P's 5-datasets reads it (Adversarial-Continual-Learning's notMNIST.zip):
    /// `notMNIST/{Train,Test}/<A..J>/*.png`, label = letter - 'A'. `dir` is the folder holding
    /// notMNIST/ or notMNIST itself.
    let notMnist (options: ReadOptions) (dir: string) =
        let root =
            [ Path.Combine(dir, "notMNIST"); dir ]
            |> List.tryFind (fun d -> Directory.Exists(Path.Combine(d, "Train")) && Directory.Exists(Path.Combine(d, "Test")))
            |> Option.defaultWith (fun () -> Errors.fail "%s: expected notMNIST/Train/<A..J>/ and notMNIST/Test/<A..J>/ (unzip notMNIST.zip here)" dir)
        let letters = [| for c in 'A' .. 'J' -> string c |]
        let side part =
            let classes, samples, skipped = ImageFolder.readTree options (Path.Combine(root, part))
            if classes <> letters then
                Errors.fail "%s: class folders %s, expected A to J" (Path.Combine(root, part)) (String.Join(",", classes))
            samples, skipped
        let train, skippedTrain = side "Train"
        let test, skippedTest = side "Test"
        { Dataset = { Name = "notMNIST"; ClassNames = letters; Train = train; Test = test }
          Skipped = skippedTrain @ skippedTest }
