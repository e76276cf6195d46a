// Shared include for the .fsx scripts: references the built Prompting assemblies and loads the
// libtorch natives explicitly (dotnet fsi does not resolve a package's native libraries itself).
// Build first with `dotnet fsi build.fsx build` (the demo and test targets build too).
#r "../src/Prompting.Cli/bin/Release/net10.0/TorchSharp.dll"
#r "../src/Prompting.Cli/bin/Release/net10.0/Prompting.Core.dll"
#r "../src/Prompting.Cli/bin/Release/net10.0/Prompting.Reports.dll"
#r "../src/Prompting.Cli/bin/Release/net10.0/Prompting.Tools.dll"
#r "../src/Prompting.Cli/bin/Release/net10.0/prompting.dll"

module PromptingNatives =
    open System.IO
    open System.Runtime.InteropServices

    let directory =
        Path.Combine(__SOURCE_DIRECTORY__, "..", "src", "Prompting.Cli", "bin", "Release", "net10.0", "runtimes", "linux-x64", "native")
        |> Path.GetFullPath

    /// Loads libtorch and TorchSharp's glue by absolute path (the build has already patched the glue).
    /// Later DllImports of "LibTorchSharp" find the library that is already loaded.
    let load () =
        if System.OperatingSystem.IsLinux() then
            for lib in [ "libtorch.so"; "libLibTorchSharp.so" ] do
                let path = Path.Combine(directory, lib)
                if not (File.Exists path) then
                    failwithf "%s not found: run `dotnet fsi build.fsx build` first" path
                NativeLibrary.Load path |> ignore

PromptingNatives.load ()
