namespace Prompting.Sweep

open System
open System.IO
open System.Threading
open Prompting

/// The Slurm executor: one job array per submission (`sbatch --array=0-K%P`) whose task i runs
/// point i of the submission through DIR/point.sh; waiting polls `squeue` (and `scontrol` for a
/// task that left the queue without an exit status), so no accounting database is needed.
module Slurm =
    type Resources =
        { Partition: string option
          Time: string option
          CpusPerTask: int option
          Mem: string option
          Gres: string option
          /// Free-form extra lines, with or without the leading `#SBATCH`.
          Extra: string list }

    let noResources = { Partition = None; Time = None; CpusPerTask = None; Mem = None; Gres = None; Extra = [] }

    let private notInstalled (command: string) =
        Errors.fail "sweep: %s not found (the slurm executor needs Slurm's client commands on PATH)" command

    /// Fails in one line unless Slurm's client commands can be started.
    let requireClients () =
        for command in [ "sbatch"; "squeue"; "scontrol" ] do
            if (Exec.capture command [ "--version" ] []).IsNone then notInstalled command

    /// The job-array script for `names` (task i runs names[i]), at most `concurrency` at once.
    let script (dir: string) (workDir: string) (names: string list) (concurrency: int) (r: Resources) =
        let dir = Path.GetFullPath dir
        let sbatch (line: string) = "#SBATCH " + line
        let extra =
            [ for line in r.Extra ->
                  let l = line.Trim()
                  if l.Contains '\n' || l.Contains '\r' then Errors.fail "sweep: --sbatch-line must be one line"
                  if l.StartsWith "#SBATCH" then l else sbatch l ]
        let limit = if concurrency > 0 then sprintf "%%%d" concurrency else ""
        String.concat "\n"
            [ yield "#!/bin/bash"
              yield "# A prompting sweep's job array, written by `prompting sweep`: task i runs point i below."
              yield sbatch "--job-name=prompting-sweep"
              yield sbatch (sprintf "--array=0-%d%s" (names.Length - 1) limit)
              yield sbatch (sprintf "--output=%s" (Path.Combine(Layout.slurmDir dir, "%A_%a.out")))
              yield sbatch (sprintf "--chdir=%s" workDir)
              match r.Partition with Some p -> yield sbatch ("--partition=" + p) | None -> ()
              match r.Time with Some t -> yield sbatch ("--time=" + t) | None -> ()
              match r.CpusPerTask with Some c -> yield sbatch (sprintf "--cpus-per-task=%d" c) | None -> ()
              match r.Mem with Some m -> yield sbatch ("--mem=" + m) | None -> ()
              match r.Gres with Some g -> yield sbatch ("--gres=" + g) | None -> ()
              yield! extra
              yield "points=(" + String.Join(" ", names |> List.map Exec.quote) + ")"
              yield "export OMP_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\""
              yield "export MKL_NUM_THREADS=\"$OMP_NUM_THREADS\""
              yield sprintf "exec bash %s \"${points[$SLURM_ARRAY_TASK_ID]}\"" (Exec.quote (Layout.pointScript dir))
              yield "" ]

    /// Submits the named points as one job array; records each point's array task id
    /// (DIR/state/NAME.job) and returns the array job id. The last attempt's exit files go first,
    /// so a task that never starts does not show an old outcome.
    let submit (dir: string) (workDir: string) (names: string list) (concurrency: int) (resources: Resources) =
        let slurmDir = Layout.slurmDir dir
        Directory.CreateDirectory slurmDir |> ignore
        let number = (Directory.GetFiles(slurmDir, "array-*.sh").Length + 1)
        let path = Path.Combine(slurmDir, sprintf "array-%d.sh" number)
        let text = script dir workDir names concurrency resources
        Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, text))
        // Set aside until sbatch has accepted the array (a task may start, and write its own, at once);
        // put back when it refuses, so a failed point keeps its reason.
        let aside n = Layout.exitFile dir n + ".previous"
        for n in names do
            if File.Exists(Layout.exitFile dir n) then File.Move(Layout.exitFile dir n, aside n, true)
        let restore () =
            for n in names do
                if File.Exists(aside n) then File.Move(aside n, Layout.exitFile dir n, true)
        match Exec.capture "sbatch" [ "--parsable"; path ] [] with
        | None ->
            restore ()
            notInstalled "sbatch"
        | Some(code, out, err) when code <> 0 ->
            restore ()
            let reason = Exec.firstLine err
            Errors.fail "sweep: sbatch refused %s (exit %d): %s" path code (if reason = "" then Exec.firstLine out else reason)
        | Some(_, out, err) ->
            for n in names do
                try File.Delete(aside n) with _ -> ()
            let id = ((Exec.firstLine out).Split(';')[0]).Trim()
            if id = "" || not (id |> Seq.forall Char.IsAsciiDigit) then
                Errors.fail "sweep: sbatch printed no job id for %s (%s)" path (Exec.firstLine (out + "\n" + err))
            names |> List.iteri (fun i n -> Files.writeAtomic (Layout.jobFile dir n) (fun tmp -> File.WriteAllText(tmp, sprintf "%s_%d\n" id i)))
            id

    /// This user's array tasks in the queue: "12_3" -> "PENDING" / "RUNNING" / ... (one line per
    /// array element, `squeue -r`).
    let queue () : Map<string, string> =
        match Exec.capture "squeue" [ "-h"; "-r"; "--me"; "-o"; "%i|%T" ] [] with
        | None -> notInstalled "squeue"
        | Some(code, _, err) when code <> 0 -> Errors.fail "sweep: squeue failed (exit %d): %s" code (Exec.firstLine err)
        | Some(_, out, _) ->
            [ for line in out.Split('\n') do
                  match line.Trim().Split('|') with
                  | [| id; state |] -> yield id, state
                  | _ -> () ]
            |> Map.ofList

    /// What Slurm says of an array task that left the queue without an exit status.
    let describeGone (job: string) =
        let remembered =
            match Exec.capture "scontrol" [ "show"; "job"; job ] [] with
            | Some(0, out, _) ->
                let field (name: string) =
                    out.Split([| ' '; '\n' |], StringSplitOptions.RemoveEmptyEntries)
                    |> Array.tryFind (fun w -> w.StartsWith(name + "="))
                    |> Option.map (fun w -> w.Substring(name.Length + 1))
                match field "JobState", field "Reason" with
                | Some state, Some reason when reason <> "None" -> Some(sprintf "%s (%s)" state reason)
                | Some state, _ -> Some state
                | _ -> None
            | _ -> None
        match remembered with
        | Some state -> sprintf "Slurm job %s ended %s without an exit status (cancelled or killed)" job state
        | None -> sprintf "Slurm job %s left the queue without an exit status (cancelled or killed)" job

    /// Polls the queue until none of `jobs` (array task ids) is in it. Transient squeue failures
    /// are retried a few times.
    let wait (jobs: string list) (poll: TimeSpan) (log: string -> unit) =
        let mutable last = ""
        let mutable failures = 0
        let mutable finished = false
        while not finished do
            let q =
                try
                    let q = queue ()
                    failures <- 0
                    Some q
                with PromptingError message when failures < 5 ->
                    failures <- failures + 1
                    log (sprintf "%s; retrying" message)
                    None
            match q with
            | None -> Thread.Sleep poll
            | Some q ->
                let active = jobs |> List.choose q.TryFind
                if active.IsEmpty then finished <- true
                else
                    let running = active |> List.filter ((=) "RUNNING") |> List.length
                    let line = sprintf "slurm: %d running, %d waiting, %d done" running (active.Length - running) (jobs.Length - active.Length)
                    if line <> last then
                        log line
                        last <- line
                    Thread.Sleep poll
