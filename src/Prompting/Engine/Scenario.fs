namespace Prompting.Engine

open Prompting
open Prompting.Data
open Prompting.Prompts

/// One task of a scenario: its classes (as remapped labels) and its samples, relabelled.
[<NoEquality; NoComparison>]
type TaskData =
    { Index: int
      /// Remapped labels of this task's classes.
      Classes: int[]
      Train: Sample[]
      Test: Sample[]
      /// Held out of the training data for choosing hyperparameters (`--validation`); empty without.
      Validation: Sample[] }

/// A sequence of tasks with labels remapped so that task t owns a contiguous block of classes.
[<NoEquality; NoComparison>]
type Scenario =
    { Kind: ScenarioKind
      /// Class names in remapped order.
      ClassNames: string[]
      Layout: TaskLayout
      Tasks: TaskData[] }

/// Class orders by name, as `--class-order` and the scripts take them.
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module ClassOrder =
    let private seedOf (text: string) (prefix: string) (what: string) =
        match System.Int32.TryParse(text.Substring prefix.Length) with
        | true, k when k >= 0 -> k
        | _ -> Errors.fail "--class-order %s: expected %sK with K a non-negative integer (%s)" text prefix what

    /// The names: natural; seed:K (our seeded shuffle); pilot-K or numpy:K (LAMDA-PILOT's
    /// `np.random.seed(K); np.random.permutation(n)`, pilot-1993 being its default); coda-K
    /// (CODA-Prompt's repeat K: the split file's order for K = 0, else `random.seed(K);
    /// random.shuffle`); python:K (`random.seed(K); random.shuffle` for any K); or a file of
    /// class indices, one per line.
    let parse (text: string) =
        let text = text.Trim()
        match text.ToLowerInvariant() with
        | "natural" -> Natural
        | t when t.StartsWith "seed:" ->
            match System.Int32.TryParse(text.Substring 5) with
            | true, k -> Shuffled k
            | _ -> Errors.fail "--class-order %s: expected seed:K" text
        | t when t.StartsWith "pilot-" -> NumpyPermutation(seedOf text "pilot-" "LAMDA-PILOT's NumPy permutation")
        | t when t.StartsWith "numpy:" -> NumpyPermutation(seedOf text "numpy:" "NumPy's seeded permutation")
        | t when t.StartsWith "coda-" ->
            match seedOf text "coda-" "CODA-Prompt's repeat seed" with
            | 0 -> Natural
            | k -> PythonShuffle k
        | t when t.StartsWith "python:" -> PythonShuffle(seedOf text "python:" "CPython's random.shuffle")
        | _ ->
            if not (System.IO.File.Exists text) then
                Errors.fail "--class-order %s: not natural, seed:K, pilot-K, numpy:K, coda-K, python:K or an existing file" text
            let numbers =
                System.IO.File.ReadAllLines text
                |> Array.filter (fun l -> l.Trim() <> "")
                |> Array.map (fun l ->
                    match System.Int32.TryParse(l.Trim()) with
                    | true, v -> v
                    | _ -> Errors.fail "%s: class order lines must be integers, found '%s'" text (l.Trim()))
            Given(List.ofArray numbers)

    /// The name `parse` reads back (a Given order is shown as its list).
    let name (order: ClassOrder) =
        match order with
        | Natural -> "natural"
        | Shuffled k -> sprintf "seed:%d" k
        | NumpyPermutation k -> sprintf "pilot-%d" k
        | PythonShuffle k -> sprintf "python:%d" k
        | Given order -> sprintf "given [%s]" (order |> List.map string |> String.concat ",")

module Scenario =
    /// The order in which classes are assigned to tasks.
    let classOrder (order: ClassOrder) (classes: int) =
        match order with
        | Natural -> [| 0 .. classes - 1 |]
        | Shuffled seed ->
            let rng = System.Random seed
            let a = [| 0 .. classes - 1 |]
            // Fisher–Yates with an explicit generator, so the order is a pure function of the seed.
            for i in classes - 1 .. -1 .. 1 do
                let j = rng.Next(i + 1)
                let t = a[i]
                a[i] <- a[j]
                a[j] <- t
            a
        | Given order ->
            let a = Array.ofList order
            if Array.sort a <> [| 0 .. classes - 1 |] then
                Errors.fail "class order: expected a permutation of 0..%d, got %d entries" (classes - 1) a.Length
            a
        | NumpyPermutation seed -> NumpyRandom.permutation (int64 seed) classes
        | PythonShuffle seed -> PythonRandom.shuffled (int64 seed) classes

    /// Splits a dataset into tasks over disjoint classes (class- or task-incremental, or joint).
    let build (kind: ScenarioKind) (tasks: int) (order: ClassOrder) (dataset: Dataset) =
        let classes = dataset.ClassNames.Length
        let tasks = if kind = Joint then 1 else tasks
        if tasks < 1 || tasks > classes then
            Errors.fail "%s: cannot split %d classes into %d tasks" dataset.Name classes tasks
        if kind = DomainIncremental then
            Errors.fail "%s: domain-incremental scenarios are built from domains, not from one dataset's classes" dataset.Name
        let perm = classOrder order classes
        // newLabel[original] = position of the class in the order
        let newLabel = Array.zeroCreate classes
        perm |> Array.iteri (fun position original -> newLabel[original] <- position)
        let layout = TaskLayout.uniform tasks classes
        let relabel (samples: Sample[]) = samples |> Array.map (fun s -> { s with Label = newLabel[s.Label] })
        let train, test = relabel dataset.Train, relabel dataset.Test
        let taskData t =
            let first = TaskLayout.offset layout t
            let count = TaskLayout.count layout t
            let inTask (s: Sample) = s.Label >= first && s.Label < first + count
            { Index = t
              Classes = [| first .. first + count - 1 |]
              Train = train |> Array.filter inTask
              Test = test |> Array.filter inTask
              Validation = [||] }
        { Kind = kind
          ClassNames = perm |> Array.map (fun original -> dataset.ClassNames[original])
          Layout = layout
          Tasks = Array.init tasks taskData }

    /// 5-datasets style: each dataset is one task; labels are offset so classes stay disjoint.
    let ofDatasets (datasets: Dataset list) =
        if datasets.IsEmpty then Errors.fail "a dataset sequence needs at least one dataset"
        let offsets = datasets |> List.scan (fun acc d -> acc + d.ClassNames.Length) 0
        let shift offset (samples: Sample[]) = samples |> Array.map (fun s -> { s with Label = s.Label + offset })
        { Kind = ClassIncremental
          ClassNames = datasets |> List.collect (fun d -> d.ClassNames |> Array.map (fun n -> d.Name + "/" + n) |> List.ofArray) |> Array.ofList
          Layout = TaskLayout.ofSizes (datasets |> List.map (fun d -> d.ClassNames.Length))
          Tasks =
            datasets
            |> List.mapi (fun t d ->
                let offset = offsets[t]
                { Index = t
                  Classes = [| offset .. offset + d.ClassNames.Length - 1 |]
                  Train = shift offset d.Train
                  Test = shift offset d.Test
                  Validation = [||] })
            |> Array.ofList }

    /// Domain-incremental: each dataset is a domain (one task) over the same classes.
    let ofDomains (domains: Dataset list) =
        match domains with
        | [] -> Errors.fail "a domain-incremental scenario needs at least one domain"
        | first :: _ ->
            for d in domains do
                if d.ClassNames <> first.ClassNames then
                    Errors.fail "domain %s: classes differ from domain %s's (%s vs %s)" d.Name first.Name
                        (String.concat "," d.ClassNames) (String.concat "," first.ClassNames)
            let classes = first.ClassNames.Length
            { Kind = DomainIncremental
              ClassNames = first.ClassNames
              Layout = TaskLayout.domains domains.Length classes
              Tasks =
                domains
                |> List.mapi (fun t d -> { Index = t; Classes = [| 0 .. classes - 1 |]; Train = d.Train; Test = d.Test; Validation = [||] })
                |> Array.ofList }

    /// The tasks of `onTest` with, as their validation samples, the test samples of the same tasks
    /// of `onValidation` (the same data and class order, whose test split is the held-out part).
    let withValidation (onValidation: Scenario) (onTest: Scenario) =
        if onValidation.Tasks.Length <> onTest.Tasks.Length || onValidation.ClassNames <> onTest.ClassNames then
            Errors.fail "validation: the held-out scenario does not match the test scenario"
        { onTest with Tasks = Array.map2 (fun (t: TaskData) (v: TaskData) -> { t with Validation = v.Test }) onTest.Tasks onValidation.Tasks }
