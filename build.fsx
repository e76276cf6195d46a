// The one build entry point.  dotnet fsi build.fsx [setup|build|test|pack|install|demo|clean]
//   setup    restore the local tools (Paket) and the packages pinned in paket.lock
//   build    setup, then build Prompting.sln in Release (the native fix-up runs as part of the build,
//            see build/NativeFixup.targets)
//   test     build, then run every test project; ends with "N passed, M failed"
//   pack     build, then NuGet packages in out/packages: Prompting.Core, Prompting.Reports,
//            Prompting.CSharp (libraries) and Prompting.Cli (the `prompting` .NET tool)
//   install  pack, then install the `prompting` tool for this user (dotnet tool install --global)
//   demo     build, then the offline continual-learning demo (`prompting demo`, see docs/demo.md)
open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions
open System.Xml.Linq

let root = __SOURCE_DIRECTORY__
let configuration = "Release"

let fail (message: string) =
    eprintfn "build: %s" message
    exit 1

/// Runs a process in the repository root, echoing its output; returns exit code and captured stdout.
let run (capture: bool) (file: string) (args: string list) =
    printfn "> %s %s" file (String.Join(" ", args))
    let psi = ProcessStartInfo(file, args, WorkingDirectory = root, UseShellExecute = false, RedirectStandardOutput = capture)
    psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
    psi.Environment["DOTNET_NOLOGO"] <- "1"
    use p = Process.Start psi
    let output = Text.StringBuilder()
    if capture then
        let mutable line = p.StandardOutput.ReadLine()
        while not (isNull line) do
            printfn "%s" line
            output.AppendLine line |> ignore
            line <- p.StandardOutput.ReadLine()
    p.WaitForExit()
    p.ExitCode, output.ToString()

let exec file args =
    match run false file args with
    | 0, _ -> ()
    | code, _ -> fail (sprintf "%s %s exited with %d" file (String.Join(" ", args)) code)

let setup () =
    exec "dotnet" [ "tool"; "restore" ]
    exec "dotnet" [ "paket"; "restore" ]

let build () =
    setup ()
    exec "dotnet" [ "build"; "Prompting.sln"; "-c"; configuration; "--nologo"; "-v"; "minimal" ]

let cli = Path.Combine(root, "src", "Prompting.Cli", "bin", configuration, "net10.0", "prompting.dll")

/// Counts from Expecto's summary line: passed, ignored, failed + errored.
let expecto () =
    let exe = Path.Combine(root, "tests", "Prompting.Tests", "bin", configuration, "net10.0", "Prompting.Tests.dll")
    // Sequenced: parallel tests allocate while others are inside libtorch calls, which exposes
    // TorchSharp's finalizer race on native handles (see src/Prompting/Runtime.fs).
    let code, output = run true "dotnet" [ exe; "--colours"; "0"; "--no-spinner"; "--sequenced" ]
    let m = Regex.Match(output, @"(\d+) passed, (\d+) ignored, (\d+) failed, (\d+) errored")
    if not m.Success then
        eprintfn "build: Expecto exited with %d without a summary line" code
        0, 0, 1
    else
        let n (i: int) = int m.Groups[i].Value
        n 1, n 2, n 3 + n 4 + (if code <> 0 && n 3 + n 4 = 0 then 1 else 0)

/// Counts from the xUnit run's TRX report: passed, skipped, failed.
let xunit () =
    let results = Path.Combine(root, "TestResults")
    let trx = Path.Combine(results, "csharp.trx")
    if File.Exists trx then File.Delete trx
    let code, _ =
        run false "dotnet" [ "test"; "tests/Prompting.CSharp.Tests"; "-c"; configuration; "--no-build"; "--nologo"
                             "--logger"; "trx;LogFileName=csharp.trx"; "--results-directory"; results ]
    if not (File.Exists trx) then
        eprintfn "build: dotnet test exited with %d and wrote no TRX report" code
        0, 0, 1
    else
        let counters = XDocument.Load(trx).Descendants() |> Seq.find (fun e -> e.Name.LocalName = "Counters")
        let get (name: string) = int (counters.Attribute(XName.Get name).Value)
        let failed = get "failed" + get "error" + get "timeout" + get "aborted"
        get "passed", get "notExecuted", failed + (if code <> 0 && failed = 0 then 1 else 0)

let test () =
    build ()
    let results = [ expecto (); xunit () ]
    let passed = results |> List.sumBy (fun (p, _, _) -> p)
    let skipped = results |> List.sumBy (fun (_, s, _) -> s)
    let failed = results |> List.sumBy (fun (_, _, f) -> f)
    if skipped > 0 then printfn "%d passed, %d failed, %d skipped" passed failed skipped
    else printfn "%d passed, %d failed" passed failed
    if failed > 0 then exit 1

/// The offline demo: `prompting demo` gets Fashion-MNIST (apt, the cache or the downloader),
/// pretrains a small ViT without labels (or reuses the cached one), compares prompt methods with
/// sequential fine-tuning on Split Fashion-MNIST, prints the table and writes out/demo/report.html.
let demo () =
    build ()
    exec "dotnet" [ cli; "demo"; "--out"; Path.Combine(root, "out", "demo") ]

/// The packed projects: the libraries a C# or F# application references, and the tool.
let packedProjects = [ "src/Prompting"; "src/Prompting.Reports"; "src/Prompting.CSharp"; "src/Prompting.Cli" ]
let packages = Path.Combine(root, "out", "packages")

let pack () =
    build ()
    for project in packedProjects do
        exec "dotnet" [ "pack"; project; "-c"; configuration; "--no-build"; "--nologo"; "-v"; "minimal"; "-o"; packages ]
    printfn "packages in %s" packages

/// Installs the tool from out/packages for this user; a reinstall replaces it (same version, new build).
let install () =
    pack ()
    // Uninstalling first: `update` keeps an installed tool of the same version.
    match run true "dotnet" [ "tool"; "list"; "--global" ] with
    | 0, listed when Regex.IsMatch(listed, @"(?im)^prompting\.cli\s") -> exec "dotnet" [ "tool"; "uninstall"; "--global"; "Prompting.Cli" ]
    | _ -> ()
    exec "dotnet" [ "tool"; "install"; "--global"; "--add-source"; packages; "--no-http-cache"; "Prompting.Cli" ]
    let tools = Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".dotnet", "tools")
    let onPath =
        (Environment.GetEnvironmentVariable "PATH" |> Option.ofObj |> Option.defaultValue "").Split(Path.PathSeparator)
        |> Array.exists (fun d -> d.TrimEnd('/') = tools)
    if onPath then printfn "installed: run `prompting --help`"
    else printfn "installed in %s, which is not on PATH: run  export PATH=\"$PATH:%s\"  (add it to ~/.profile to keep it)" tools tools

let clean () =
    for dir in Directory.EnumerateDirectories(root, "*", SearchOption.AllDirectories) |> Array.ofSeq do
        let name = Path.GetFileName dir
        if (name = "bin" || name = "obj") && Directory.Exists dir then Directory.Delete(dir, true)

match fsi.CommandLineArgs |> Array.skip 1 |> List.ofArray with
| []
| [ "build" ] -> build ()
| [ "setup" ] -> setup ()
| [ "test" ] -> test ()
| [ "pack" ] -> pack ()
| [ "install" ] -> install ()
| [ "demo" ] -> demo ()
| [ "clean" ] -> clean ()
| other -> fail (sprintf "unknown target %s; expected setup, build, test, pack, install, demo or clean" (String.Join(" ", other)))
