// The bench, through the same code path as `prompting bench` (children are the built CLI).
// Usage:
//   dotnet fsi scripts/bench.fsx -- [--methods l2p coda-prompt] [--threads 2] [--output out/bench] ...
// See docs/performance.md for what it measures and `prompting bench --help` for every option.
#load "Prompting.fsx"

let args = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")
exit (Prompting.Cli.Program.run (Array.append [| "bench" |] args))
