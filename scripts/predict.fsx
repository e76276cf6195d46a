// Classifies images or an .npy batch with a ViT checkpoint, through the same code path as
// `prompting predict`. Usage:
//   dotnet fsi scripts/predict.fsx -- --checkpoint FILE (--input X.npy | --images DIR...) --output OUT
#load "Prompting.fsx"

let args = fsi.CommandLineArgs |> Array.skip 1 |> Array.filter (fun a -> a <> "--")
exit (Prompting.Cli.Program.run (Array.append [| "predict" |] args))
