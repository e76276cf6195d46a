/// The NuGet packages as a C# application gets them: packed to a folder feed, restored into an
/// empty package folder (so the packages' own native fix-up is what makes libtorch load), and the
/// README's consumer app (docs/examples/consumer) built and run against them.
module Prompting.Tests.Package

open System
open System.Diagnostics
open System.IO
open System.Text.RegularExpressions
open Expecto
open Prompting.Tests.Fixtures
open Prompting.Tests.CliRun

/// Runs a process to completion: exit code and stdout + stderr.
let private exec (dir: string) (environment: (string * string) list) (file: string) (args: string list) =
    let psi = ProcessStartInfo(file, args, WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for name, value in ("DOTNET_CLI_TELEMETRY_OPTOUT", "1") :: ("DOTNET_NOLOGO", "1") :: environment do psi.Environment[name] <- value
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.WaitForExit()
    p.ExitCode, out.Result + err.Result

let private expectSuccess (what: string) (code: int, output: string) =
    if code <> 0 then failtestf "%s exited with %d:\n%s" what code output
    output

/// The global package folder this machine restored into (paket restore fills it): a folder feed
/// of every dependency, so the consumer restores without a network.
let private globalPackages =
    match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
    | null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
    | dir -> dir

let private example = Path.Combine(root, "docs", "examples", "consumer")

/// Packs `projects` (already built) into the folder feed `feed` under `version`.
let private packInto (feed: string) (version: string) (projects: string list) =
    for project in projects do
        exec root [] "dotnet" [ "pack"; Path.Combine(root, project); "-c"; "Release"; "--no-build"; "--nologo"; "-o"; feed; "-p:PackageVersion=" + version ]
        |> expectSuccess ("dotnet pack " + project) |> ignore

/// A nuget.config whose only sources are the test's feed and the machine's restored packages.
let private writeFeedConfig (path: string) (feed: string) =
    File.WriteAllText(path,
                      sprintf """<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="prompting" value="%s" />
    <add key="restored" value="%s" />
  </packageSources>
</configuration>""" feed globalPackages)

[<Tests>]
let tests =
    testSequenced
    <| testList
        "packages"
        [ test "the README's C# example is the consumer app the package test builds" {
              let readme = File.ReadAllText(Path.Combine(root, "README.md")).Replace("\r\n", "\n")
              let program = File.ReadAllText(Path.Combine(example, "Program.cs")).Replace("\r\n", "\n")
              Expect.stringContains readme program "README.md shows docs/examples/consumer/Program.cs verbatim"
              let project = File.ReadAllText(Path.Combine(example, "Consumer.csproj")).Replace("\r\n", "\n")
              Expect.stringContains readme project "README.md shows docs/examples/consumer/Consumer.csproj verbatim"
          }

          test "the prompting .NET tool installs from the packed feed and runs as `prompting`" {
              let work = tempDir ()
              use _ = { new IDisposable with member _.Dispose() = try Directory.Delete(work, true) with _ -> () }
              let version = sprintf "0.1.0-test.%d" (DateTime.UtcNow.Ticks / 10_000_000L)
              let feed = Path.Combine(work, "feed")
              packInto feed version [ "src/Prompting.Cli" ]
              let config = Path.Combine(work, "nuget.config")
              writeFeedConfig config feed
              // What `dotnet fsi build.fsx install` does globally, into a folder of the test's own.
              let tools = Path.Combine(work, "tools")
              let environment = [ "NUGET_PACKAGES", Path.Combine(work, "packages") ]
              exec work environment "dotnet" [ "tool"; "install"; "--tool-path"; tools; "--configfile"; config; "--version"; version; "Prompting.Cli" ]
              |> expectSuccess "dotnet tool install" |> ignore
              let prompting = Path.Combine(tools, "prompting")
              let weights = Path.Combine(work, "tiny.safetensors")
              exec work environment prompting [ "create"; "--arch"; "vit-tiny"; "-o"; weights ] |> expectSuccess "prompting create" |> ignore
              let info = exec work environment prompting [ "info"; weights ] |> expectSuccess "prompting info"
              Expect.stringContains info "192" "the installed tool loads libtorch and reads the checkpoint it wrote (width 192)"
          }

          test "a C# console app built against the packed packages trains a run and classifies with it without the data" {
              let work = tempDir ()
              // The restored packages and the app's copies of libtorch take over a gigabyte.
              use _ = { new IDisposable with member _.Dispose() = try Directory.Delete(work, true) with _ -> () }
              // A version of its own: the consumer cannot pick up an older build of the packages.
              let version = sprintf "0.1.0-test.%d" (DateTime.UtcNow.Ticks / 10_000_000L)
              let feed = Path.Combine(work, "feed")
              packInto feed version [ "src/Prompting"; "src/Prompting.Reports"; "src/Prompting.CSharp" ]
              let app = Path.Combine(work, "app")
              Directory.CreateDirectory app |> ignore
              File.Copy(Path.Combine(example, "Program.cs"), Path.Combine(app, "Program.cs"))
              File.WriteAllText(Path.Combine(app, "Consumer.csproj"),
                                File.ReadAllText(Path.Combine(example, "Consumer.csproj")).Replace("Version=\"0.1.0\"", sprintf "Version=\"%s\"" version))
              writeFeedConfig (Path.Combine(app, "nuget.config")) feed
              // An empty package folder: TorchSharp's libLibTorchSharp.so arrives unpatched, as on a
              // fresh machine, and the packages' build/ targets must fix it.
              let environment = [ "NUGET_PACKAGES", Path.Combine(work, "packages") ]
              exec app environment "dotnet" [ "build"; "-c"; "Release"; "--nologo"; "-v"; "q" ] |> expectSuccess "dotnet build" |> ignore
              let dll = Path.Combine(app, "bin", "Release", "net10.0", "Consumer.dll")
              let data = writeBenchmark (Path.Combine(work, "data"))
              let _, checkpoint = inputs.Force()
              let run = Path.Combine(work, "run")
              let trained = exec work environment "dotnet" [ dll; "train"; data; checkpoint; run ] |> expectSuccess "Consumer train"
              let m = matrix run
              let expected = Array.average m[1]
              let printed = Regex.Match(trained, @"final average accuracy: ([0-9.]+)%")
              Expect.isTrue printed.Success trained
              Expect.isLessThanOrEqual (abs (float printed.Groups[1].Value - expected)) 0.005 "the printed accuracy (F2) is the run's metrics.json"
              // Classified from a copy of the test images, with the training data gone.
              let images = Path.Combine(work, "images")
              Directory.CreateDirectory images |> ignore
              for c in 0 .. 3 do
                  File.Copy(Path.Combine(data, "test", sprintf "class%d" c, "img00.bmp"), Path.Combine(images, sprintf "class%d.bmp" c))
              Directory.Delete(data, true)
              let classified = exec work environment "dotnet" [ dll; "classify"; run; images ] |> expectSuccess "Consumer classify"
              Expect.stringContains classified "linear after task 2/2, 4 classes seen, 32px, cpu" "the model's description"
              let rows = [ for l in classified.Split('\n') do
                               let hit = Regex.Match(l.Trim(), @"^(class\d)\.bmp: (class\d) (class\d)$")
                               if hit.Success then yield hit.Groups[1].Value, hit.Groups[2].Value, hit.Groups[3].Value ]
              Expect.equal (rows |> List.map (fun (f, _, _) -> f)) [ "class0"; "class1"; "class2"; "class3" ] (sprintf "one line per image:\n%s" classified)
              for _, first, second in rows do Expect.notEqual first second "two different classes per image"
          } ]
