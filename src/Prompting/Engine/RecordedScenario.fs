namespace Prompting.Engine

open System.IO
open System.Security.Cryptography
open System.Text
open Prompting
open Prompting.Prompts

/// What a run records of its scenario in `scenario.json`: enough to rebuild and use its model
/// without the data (class names in the scenario's order, the task layout), and an index of the
/// data that identifies it wherever it lies.
type RecordedScenario =
    { ClassNames: string[]
      Layout: TaskLayout
      /// SHA-256 of the class names and, task by task, each sample's label and file name (not
      /// its directory): the same data moved elsewhere has the same index.
      DataIndex: string }

[<RequireQualifiedAccess>]
module RecordedScenario =
    let file dir = Path.Combine(dir, "scenario.json")

    let dataIndex (s: Scenario) =
        use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
        let add (line: string) = hash.AppendData(Encoding.UTF8.GetBytes(line + "\n"))
        for name in s.ClassNames do add name
        for t in s.Tasks do
            for part, samples in [ "train", t.Train; "test", t.Test; "validation", t.Validation ] do
                add (sprintf "task %d %s %d" t.Index part samples.Length)
                for x in samples do add (sprintf "%d %s" x.Label (Path.GetFileName x.Source))
        System.Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant()

    let ofScenario (s: Scenario) =
        { ClassNames = s.ClassNames; Layout = s.Layout; DataIndex = dataIndex s }

    /// The run's record, or None for runs made before runs wrote one.
    let read (dir: string) =
        let path = file dir
        if File.Exists path then
            let r = Json.deserialize<RecordedScenario> path (File.ReadAllText path)
            if isNull r.ClassNames || isNull (box r.Layout.ClassesPerTask) || isNull r.DataIndex then
                Errors.fail "%s: a field is missing" path
            if r.ClassNames.Length < List.max (0 :: r.Layout.ClassesPerTask) then
                Errors.fail "%s: %d class names for tasks of up to %d classes" path r.ClassNames.Length (List.max r.Layout.ClassesPerTask)
            Some r
        else None

    /// Fails when the run recorded a scenario and `s` (read from `data`) is not the same data.
    let check (dir: string) (data: string option) (s: Scenario) =
        match read dir with
        | Some r when r.DataIndex <> dataIndex s ->
            Errors.fail "%s: not the data this run was made with (its index differs from the one in %s)"
                (defaultArg data "the benchmark's data") (file dir)
        | _ -> ()

    /// Writes the record once (a resume keeps the first).
    let writeIfAbsent (dir: string) (s: Scenario) =
        if not (File.Exists(file dir)) then
            let json = Json.serialize (ofScenario s)
            Files.writeAtomic (file dir) (fun tmp -> File.WriteAllText(tmp, json))
