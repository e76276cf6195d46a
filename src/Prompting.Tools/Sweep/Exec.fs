namespace Prompting.Sweep

open System
open System.ComponentModel
open System.Diagnostics
open System.IO
open Prompting

/// Child processes and the script that runs one point, shared by both executors.
module Exec =
    /// Single-quoted for bash.
    let quote (s: string) = "'" + s.Replace("'", "'\\''") + "'"

    /// How to start this same `prompting` tool: the running executable, plus the entry assembly
    /// when it runs under `dotnet prompting.dll`.
    let selfCommand () : string list =
        let exe = Environment.ProcessPath
        let entry = Reflection.Assembly.GetEntryAssembly()
        let name = Path.GetFileNameWithoutExtension exe
        if name = "dotnet" && not (isNull entry) then [ exe; entry.Location ] else [ exe ]

    /// Runs a program to the end: exit code, standard output, standard error. None when the
    /// program cannot be started (not installed).
    let capture (program: string) (args: string list) (env: (string * string) list) =
        let psi = ProcessStartInfo(program, args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
        for k, v in env do psi.Environment[k] <- v
        try
            use p = Process.Start psi
            let out = p.StandardOutput.ReadToEndAsync()
            let err = p.StandardError.ReadToEndAsync()
            p.WaitForExit()
            Some(p.ExitCode, out.Result, err.Result)
        with :? Win32Exception -> None

    /// The first non-empty line of a text ("" when none).
    let firstLine (text: string) =
        text.Split('\n') |> Array.map _.Trim() |> Array.tryFind (fun l -> l <> "") |> Option.defaultValue ""

    /// DIR/point.sh NAME: appends a header line to DIR/logs/NAME.log, runs
    /// `prompting run --config DIR/points/NAME.json --out DIR/runs/NAME` with its output appended
    /// to the same log, and writes the exit code to DIR/state/NAME.exit. Runs in `workDir`, so
    /// relative paths in the configurations mean what they meant where the sweep was started.
    let pointScript (dir: string) (workDir: string) (command: string list) (childOptions: string list) =
        let dir = Path.GetFullPath dir
        let run = String.Join(" ", (command @ [ "run" ]) |> List.map quote)
        let extra = String.Join("", childOptions |> List.map (fun o -> " " + quote o))
        String.concat "\n"
            [ "#!/bin/bash"
              "# One point of a prompting sweep: prompting run --config points/NAME.json --out runs/NAME."
              "# Written by `prompting sweep`; used by the local and the Slurm executor alike."
              "set -u"
              sprintf "dir=%s" (quote dir)
              "name=\"$1\""
              sprintf "cd %s || exit 1" (quote workDir)
              "mkdir -p \"$dir/logs\" \"$dir/state\""
              "rm -f \"$dir/state/$name.exit\""
              "echo \"$$\" > \"$dir/state/$name.pid\""
              "where=\"$(hostname -s)\""
              "if [ -n \"${SLURM_ARRAY_JOB_ID:-}\" ]; then where=\"$where, Slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"; fi"
              "echo \"== $(date -u '+%Y-%m-%d %H:%M:%S') start on $where, ${OMP_NUM_THREADS:-all} threads\" >> \"$dir/logs/$name.log\""
              sprintf "%s --config \"$dir/points/$name.json\" --out \"$dir/runs/$name\"%s >> \"$dir/logs/$name.log\" 2>&1 < /dev/null" run extra
              "code=$?"
              "rm -f \"$dir/state/$name.pid\""
              "echo \"$code\" > \"$dir/state/$name.exit.tmp\" && mv \"$dir/state/$name.exit.tmp\" \"$dir/state/$name.exit\""
              "exit \"$code\""
              "" ]

    /// Writes DIR/point.sh (executable).
    let writePointScript (dir: string) (workDir: string) (command: string list) (childOptions: string list) =
        let path = Layout.pointScript dir
        Files.writeAtomic path (fun tmp ->
            File.WriteAllText(tmp, pointScript dir workDir command childOptions)
            if not (OperatingSystem.IsWindows()) then
                File.SetUnixFileMode(tmp, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute
                                          ||| UnixFileMode.GroupRead ||| UnixFileMode.GroupExecute ||| UnixFileMode.OtherRead ||| UnixFileMode.OtherExecute))
        path
