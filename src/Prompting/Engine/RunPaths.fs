namespace Prompting.Engine

open System
open System.IO

/// The paths a run records, and where a reopened run looks for them. New runs record canonical
/// (absolute) paths, so a run works from any directory. Runs made before recorded paths as typed:
/// a relative one is looked for against the working directory, then against the run directory and
/// each of its ancestors, nearest first (where such a run was most likely started from).
module RunPaths =
    let private entries (data: string) =
        data.Split(',', StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)

    /// `--data` of a dataset sequence: NAME=PATH[,NAME=PATH...], names without a path separator.
    let private isSequence (data: string) =
        let parts = entries data
        parts.Length > 0
        && parts |> Array.forall (fun p -> let i = p.IndexOf '=' in i > 0 && p.Substring(0, i).IndexOfAny([| '/'; '\\' |]) < 0)

    /// The canonical form of a `--data` value: an absolute path, or a sequence's NAME=PATH list
    /// with absolute paths.
    let canonicalData (data: string) =
        if String.IsNullOrWhiteSpace data then Prompting.Errors.fail "--data: is empty"
        if isSequence data then
            String.Join(",", [ for p in entries data -> let i = p.IndexOf '=' in p.Substring(0, i) + "=" + Path.GetFullPath(p.Substring(i + 1).Trim()) ])
        else Path.GetFullPath data

    /// Where a recorded path may be: itself when absolute; else against the working directory,
    /// then against the run directory and its ancestors, nearest first.
    let candidates (runDir: string) (recorded: string) =
        if Path.IsPathRooted recorded then [ recorded ]
        else
            let rec ancestors (d: DirectoryInfo) = if isNull d then [] else d.FullName :: ancestors d.Parent
            Path.GetFullPath recorded :: [ for a in ancestors (DirectoryInfo(Path.GetFullPath runDir)) -> Path.GetFullPath(Path.Combine(a, recorded)) ]
            |> List.distinct

    /// A recorded path found again: the first candidate that exists, else the path as recorded
    /// made absolute against the working directory.
    let locate (runDir: string) (recorded: string) =
        candidates runDir recorded
        |> List.tryFind (fun p -> File.Exists p || Directory.Exists p)
        |> Option.defaultWith (fun () -> Path.GetFullPath recorded)

    /// The recorded `--data` found again (a sequence's list with each path found again).
    let locateData (runDir: string) (recorded: string) =
        if isSequence recorded then
            String.Join(",", [ for p in entries recorded -> let i = p.IndexOf '=' in p.Substring(0, i) + "=" + locate runDir (p.Substring(i + 1).Trim()) ])
        else locate runDir recorded
