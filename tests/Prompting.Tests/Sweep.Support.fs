/// What the sweep tests share: a tiny benchmark and checkpoint, the CLI with a chosen environment,
/// and a real single-node Slurm cluster started for the tests.
module Prompting.Tests.SweepSupport

open System
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Sockets
open System.Text.Json
open System.Threading
open Prompting
open Prompting.Sweep
open Prompting.Tests.Fixtures

let cliDll =
    let config = if AppContext.BaseDirectory.Contains "/Debug/" then "Debug" else "Release"
    Path.Combine(root, "src", "Prompting.Cli", "bin", config, "net10.0", "prompting.dll")

/// The dotnet host running these tests (so a test can empty PATH and still start the CLI).
let dotnet =
    let p = Environment.ProcessPath
    if Path.GetFileNameWithoutExtension p = "dotnet" then p else "dotnet"

/// Runs a program with extra environment variables, in `workDir`: exit code, stdout, stderr.
let runIn (workDir: string) (env: (string * string) list) (program: string) (args: string list) =
    let psi = ProcessStartInfo(program, args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workDir)
    for k, v in env do psi.Environment[k] <- v
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.WaitForExit()
    p.ExitCode, out.Result, err.Result

/// The CLI in a child process with extra environment variables.
let runCliEnv (env: (string * string) list) (args: string list) = runIn Environment.CurrentDirectory env dotnet (cliDll :: args)

/// The benchmark of the CLI run tests (4 classes × (8 train + 4 test) 16×16 BMPs).
let private writeBenchmark (dir: string) = CliRun.writeBenchmark dir

/// The tiny benchmark and a tiny random checkpoint (made by `prompting create`), absolute paths.
let inputs =
    lazy
        (let dir = tempDir ()
         let data = writeBenchmark (Path.Combine(dir, "data"))
         let checkpoint = Path.Combine(dir, "tiny.safetensors")
         let code, _, err =
             runCliEnv [] [ "create"; "--image-size"; "32"; "--patch-size"; "8"; "--depth"; "2"; "--width"; "64"; "--heads"; "1"
                            "--classes"; "10"; "-o"; checkpoint ]
         if code <> 0 then failwithf "create failed: %s" err
         data, checkpoint)

/// The run options every sweep test shares: 2 tasks, 1 epoch, batch 8, 32 px, CPU.
let runOptions () =
    let data, checkpoint = inputs.Force()
    [ "--benchmark"; "imagefolder"; "--data"; data; "--checkpoint"; checkpoint; "--tasks"; "2"; "--epochs"; "1"
      "--batch-size"; "8"; "--image-size"; "32"; "--device"; "cpu" ]

/// One thread per run everywhere, so that sweeps and single runs compute in the same order.
let oneThread = [ "OMP_NUM_THREADS", "1"; "MKL_NUM_THREADS", "1" ]

/// The comparable results of a run directory: both accuracy matrices and the epoch losses.
let results (run: string) =
    let m = Metrics.readJson (Path.Combine(run, "metrics.json"))
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "progress.json")))
    m.ClassIncremental.Matrix, m.TaskIncremental.Matrix, doc.RootElement.GetProperty("EpochLosses").GetRawText()

/// Every file under a directory with its bytes.
let snapshot (dir: string) =
    Directory.GetFiles(dir, "*", SearchOption.AllDirectories)
    |> Array.sort
    |> Array.map (fun f -> Path.GetRelativePath(dir, f), File.ReadAllBytes f)
    |> Map.ofArray

/// The point names a sweep directory's state/*.job files name, with their array task ids.
let jobs (sweep: string) =
    Directory.GetFiles(Path.Combine(sweep, "state"), "*.job")
    |> Array.map (fun f -> Path.GetFileNameWithoutExtension f, File.ReadAllText(f).Trim())
    |> Map.ofArray

/// The lines of stderr that are not blank.
let errorLines (err: string) = err.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.filter (fun l -> l.Trim() <> "")

// ---- a real single-node Slurm ----

/// A single-node Slurm cluster in a temporary directory: this machine (`hostname -s`) as
/// controller and only node, munge for authentication, no accounting database. Installs Debian's
/// slurm-wlm and munge with apt when they are missing (as the project's set-up does; needs root).
type SlurmCluster private (dir: string, conf: string, startedMunge: int option) =
    static let which (program: string) =
        (Environment.GetEnvironmentVariable "PATH").Split(':')
        |> Array.append [| "/usr/sbin"; "/sbin" |]
        |> Array.map (fun d -> Path.Combine(d, program))
        |> Array.tryFind File.Exists

    static let sh (command: string) = runIn "/" [ "DEBIAN_FRONTEND", "noninteractive" ] "/bin/sh" [ "-c"; command ]

    static let freePort () =
        let l = new TcpListener(IPAddress.Loopback, 0)
        l.Start()
        let port = (l.LocalEndpoint :?> IPEndPoint).Port
        l.Stop()
        port

    static let programs = [ "slurmctld"; "slurmd"; "sbatch"; "squeue"; "scontrol"; "scancel"; "munged"; "munge" ]

    static let tail (path: string) =
        try File.ReadAllLines path |> Array.filter (fun l -> l.Trim() <> "") |> Array.rev |> Array.truncate 3 |> Array.rev |> String.concat " | "
        with _ -> "(no log)"

    member _.Dir = dir
    member _.Conf = conf
    /// The environment Slurm's clients need.
    member _.Env = [ "SLURM_CONF", conf ]

    /// Installs what is missing, starts munged (when it is not running), slurmctld and slurmd,
    /// and waits until the node is idle. Error: the reason Slurm cannot start.
    static member Start() : Result<SlurmCluster, string> =
        try
            let missing () = programs |> List.filter (fun p -> (which p).IsNone)
            if not (missing ()).IsEmpty then
                if Environment.UserName <> "root" then
                    failwithf "Slurm is not installed (%s missing) and the tests are not root, so they cannot apt-get install slurm-wlm munge" (String.Join(", ", missing ()))
                let install () = sh "apt-get install -y -q slurm-wlm munge"
                match install () with
                | 0, _, _ -> ()
                | _ ->
                    sh "apt-get update -q" |> ignore
                    match install () with
                    | 0, _, _ -> ()
                    | code, out, err -> failwithf "apt-get install slurm-wlm munge failed (%d): %s" code (Exec.firstLine (err + "\n" + out))
                if not (missing ()).IsEmpty then failwithf "still missing after apt-get install: %s" (String.Join(", ", missing ()))
            let path p = (which p).Value
            // munge: a key, and a daemon answering on its socket.
            if not (File.Exists "/etc/munge/munge.key") then
                match sh (sprintf "%s -c && chown munge:munge /etc/munge/munge.key" (defaultArg (which "mungekey") "mungekey")) with
                | 0, _, _ -> ()
                | code, _, err -> failwithf "mungekey -c failed (%d): %s" code (Exec.firstLine err)
            let mungeWorks () = match sh "munge -n | unmunge > /dev/null" with | 0, _, _ -> true | _ -> false
            let startedMunge =
                if mungeWorks () then None
                else
                    match sh (sprintf "mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge && runuser -u munge -- %s" (path "munged")) with
                    | 0, _, _ -> ()
                    | code, out, err -> failwithf "munged did not start (%d): %s" code (Exec.firstLine (err + "\n" + out))
                    let deadline = DateTime.UtcNow.AddSeconds 20.0
                    while not (mungeWorks ()) && DateTime.UtcNow < deadline do Thread.Sleep 200
                    if not (mungeWorks ()) then failwith "munged started but `munge -n | unmunge` fails"
                    try Some(int (File.ReadAllText("/run/munge/munged.pid").Trim())) with _ -> None
            let host =
                match sh "hostname -s" with
                | 0, out, _ when out.Trim() <> "" -> out.Trim()
                | _ -> failwith "hostname -s failed"
            let dir = Path.Combine(Path.GetTempPath(), "prompting-slurm-" + Guid.NewGuid().ToString("N").Substring(0, 8))
            Directory.CreateDirectory(Path.Combine(dir, "state")) |> ignore
            Directory.CreateDirectory(Path.Combine(dir, "spool")) |> ignore
            let conf = Path.Combine(dir, "slurm.conf")
            let f name = Path.Combine(dir, name)
            File.WriteAllLines(
                conf,
                [ "ClusterName=promptingtest"
                  sprintf "SlurmctldHost=%s(127.0.0.1)" host
                  "SlurmUser=root"
                  "SlurmdUser=root"
                  "AuthType=auth/munge"
                  "CredType=cred/munge"
                  sprintf "SlurmctldPort=%d" (freePort ())
                  sprintf "SlurmdPort=%d" (freePort ())
                  sprintf "StateSaveLocation=%s" (f "state")
                  sprintf "SlurmdSpoolDir=%s" (f "spool")
                  sprintf "SlurmctldPidFile=%s" (f "slurmctld.pid")
                  sprintf "SlurmdPidFile=%s" (f "slurmd.pid")
                  sprintf "SlurmctldLogFile=%s" (f "slurmctld.log")
                  sprintf "SlurmdLogFile=%s" (f "slurmd.log")
                  "ProctrackType=proctrack/linuxproc"
                  "TaskPlugin=task/none"
                  "SelectType=select/cons_tres"
                  "SelectTypeParameters=CR_CPU"
                  "SchedulerType=sched/backfill"
                  "AccountingStorageType=accounting_storage/none"
                  "JobAcctGatherType=jobacct_gather/none"
                  "JobCompType=jobcomp/none"
                  "MpiDefault=none"
                  "ReturnToService=2"
                  "MinJobAge=600"
                  sprintf "NodeName=%s NodeAddr=127.0.0.1 CPUs=%d State=UNKNOWN" host Environment.ProcessorCount
                  sprintf "PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP" host ]
            )
            let env = [ "SLURM_CONF", conf ]
            for daemon in [ "slurmctld"; "slurmd" ] do
                match runIn dir env (path daemon) [ "-f"; conf ] with
                | 0, _, _ -> ()
                | code, out, err ->
                    failwithf "%s -f %s failed (%d): %s %s" daemon conf code (Exec.firstLine (err + "\n" + out)) (tail (f (daemon + ".log")))
            let idle () =
                match runIn dir env (path "sinfo") [ "-h"; "-o"; "%t" ] with
                | 0, out, _ -> out.Trim() = "idle"
                | _ -> false
            let deadline = DateTime.UtcNow.AddSeconds 60.0
            while not (idle ()) && DateTime.UtcNow < deadline do Thread.Sleep 500
            if not (idle ()) then
                failwithf "the node did not become idle within 60 s; slurmctld: %s; slurmd: %s" (tail (f "slurmctld.log")) (tail (f "slurmd.log"))
            Ok(new SlurmCluster(dir, conf, startedMunge))
        with e -> Error e.Message

    /// Stops slurmctld and slurmd (and munged when this fixture started it).
    member _.Stop() =
        runIn dir [ "SLURM_CONF", conf ] "scontrol" [ "shutdown" ] |> ignore
        for pidFile in [ "slurmctld.pid"; "slurmd.pid" ] do
            try
                let pid = int (File.ReadAllText(Path.Combine(dir, pidFile)).Trim())
                let deadline = DateTime.UtcNow.AddSeconds 10.0
                while File.Exists(sprintf "/proc/%d/status" pid) && DateTime.UtcNow < deadline do Thread.Sleep 200
                if File.Exists(sprintf "/proc/%d/status" pid) then (Process.GetProcessById pid).Kill()
            with _ -> ()
        match startedMunge with
        | Some pid -> try (Process.GetProcessById pid).Kill() with _ -> ()
        | None -> ()
        try Directory.Delete(dir, true) with _ -> ()

    interface IDisposable with
        member this.Dispose() = this.Stop()

/// The cluster of this test run, started on first use and stopped when the test process exits.
let cluster =
    lazy
        (let started = SlurmCluster.Start()
         match started with
         | Ok c -> AppDomain.CurrentDomain.ProcessExit.Add(fun _ -> c.Stop())
         | Error _ -> ()
         started)

/// The running cluster, or a failed test naming why Slurm cannot start.
let slurm () =
    match cluster.Force() with
    | Ok c -> c
    | Error reason -> Expecto.Tests.failtestf "Slurm cannot start here: %s" reason
