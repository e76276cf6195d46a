namespace Prompting.Demo

open System
open System.Diagnostics
open System.IO
open Prompting
open Prompting.Data

/// The effects the demo's data step may use, so the decisions can be tested without root, apt or
/// a network.
[<NoEquality; NoComparison>]
type DataEnvironment =
    { /// Running as root (apt-get works directly).
      IsRoot: bool
      /// apt-get is on the PATH.
      HasAptGet: bool
      /// `sudo -n true` succeeds: sudo works without a password.
      PasswordlessSudo: unit -> bool
      /// Runs a program with its output on the terminal; returns the exit code (127 when it cannot start).
      Exec: string -> string list -> int
      /// The downloader: fetches the dataset into the cache and returns its directory, or raises.
      Download: unit -> string
      /// Where the Debian package puts the files.
      SystemDirectory: string
      /// Where the downloader keeps them.
      CacheDirectory: string
      Log: string -> unit }

/// Gets Fashion-MNIST onto the machine: the Debian package's directory, the download cache, apt
/// (as root or with password-less sudo), the downloader, and otherwise a message that says which
/// files to put where.
module DemoData =
    [<Literal>]
    let PackageName = "dataset-fashion-mnist"

    [<Literal>]
    let SystemDirectory = "/usr/share/datasets/fashion-mnist"

    /// The four IDX files, as the package and the project's site publish them.
    let fileNames = Download.fashionMnist.Files |> List.map _.FileName

    let private baseUrl = Download.fashionMnist.Files.Head.Url.Substring(0, Download.fashionMnist.Files.Head.Url.LastIndexOf '/' + 1)

    /// Whether `dir` holds all four files (gzipped or not).
    let isComplete (dir: string) =
        Directory.Exists dir
        && fileNames |> List.forall (fun f -> File.Exists(Path.Combine(dir, f)) || File.Exists(Path.Combine(dir, f.Substring(0, f.Length - 3))))

    /// The command that installs the package, when apt can be used here: apt-get as root, or
    /// through `sudo -n` when sudo needs no password. None otherwise.
    let aptCommand (env: DataEnvironment) : (string * string list) option =
        let install = [ "install"; "-y"; PackageName ]
        if not env.HasAptGet then None
        elif env.IsRoot then Some("apt-get", install)
        elif env.PasswordlessSudo () then Some("sudo", "-n" :: "apt-get" :: install)
        else None

    /// What to do by hand, as one line.
    let manualInstructions (dir: string) =
        sprintf "put %s (from %s) into %s, or install the Debian package as root (apt-get install -y %s, files in %s), then run the demo again"
            (String.Join(", ", fileNames)) baseUrl dir PackageName SystemDirectory

    /// apt-get install, and when the package is unknown (a fresh machine has no package lists)
    /// apt-get update and install again. True when the files are then in place.
    let private tryApt (env: DataEnvironment) (program: string, args: string list) =
        env.Log(sprintf "data: Fashion-MNIST is missing; installing %s with %s %s" PackageName program (String.Join(" ", args)))
        let update = if program = "sudo" then [ "-n"; "apt-get"; "update" ] else [ "update" ]
        let installed =
            env.Exec program args = 0
            || (env.Log "data: apt-get install failed; updating the package lists and trying again"
                env.Exec program update = 0 && env.Exec program args = 0)
        installed && isComplete env.SystemDirectory

    /// The directory to read Fashion-MNIST from. `given` (--data) must hold the files; otherwise
    /// the package's directory, the cache, apt, then the downloader are tried in that order.
    let ensure (env: DataEnvironment) (given: string option) : string =
        match given with
        | Some dir ->
            if not (isComplete dir) then Errors.fail "Fashion-MNIST not found in %s: %s" dir (manualInstructions dir)
            dir
        | None when isComplete env.SystemDirectory -> env.SystemDirectory
        | None when isComplete env.CacheDirectory -> env.CacheDirectory
        | None ->
            let aptNote =
                match aptCommand env with
                | Some command when tryApt env command -> None
                | Some _ -> Some "apt-get could not install it"
                | None when not env.HasAptGet -> Some "apt-get is not available"
                | None -> Some "apt-get needs root or password-less sudo"
            match aptNote with
            | None -> env.SystemDirectory
            | Some note ->
                env.Log(sprintf "data: %s; trying the downloader" note)
                try env.Download ()
                with PromptingError reason ->
                    Errors.fail "Fashion-MNIST is not available (%s; download failed: %s): %s" note reason (manualInstructions env.CacheDirectory)

    /// Whether sudo runs without asking for a password.
    let private sudoWithoutPassword () =
        try
            use p = Process.Start(ProcessStartInfo("sudo", [ "-n"; "true" ], UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true))
            p.WaitForExit()
            p.ExitCode = 0
        with _ -> false

    let private onPath (program: string) =
        (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(':', StringSplitOptions.RemoveEmptyEntries)
        |> Array.exists (fun dir -> File.Exists(Path.Combine(dir, program)))

    let private exec (program: string) (args: string list) =
        try
            use p = Process.Start(ProcessStartInfo(program, args, UseShellExecute = false))
            p.WaitForExit()
            p.ExitCode
        with :? ComponentModel.Win32Exception -> 127

    /// This machine: real apt, sudo and downloader.
    let system (log: string -> unit) : DataEnvironment =
        let options = { Download.defaults () with Log = log }
        { IsRoot = Environment.IsPrivilegedProcess
          HasAptGet = OperatingSystem.IsLinux() && onPath "apt-get"
          PasswordlessSudo = fun () -> onPath "sudo" && sudoWithoutPassword ()
          Exec = exec
          Download = fun () -> Download.dataset options Download.fashionMnist
          SystemDirectory = SystemDirectory
          CacheDirectory = Path.Combine(options.CacheDirectory, Download.fashionMnist.Directory)
          Log = log }
