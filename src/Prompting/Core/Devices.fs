namespace Prompting

open TorchSharp

/// Device selection shared by the CLI, the C# facade and the scripts.
module Devices =
    /// CUDA when this libtorch build can see a GPU, the CPU otherwise.
    let defaultDevice () =
        if torch.cuda.is_available () then torch.CUDA else torch.CPU

    /// Parses "cpu", "cuda" or "cuda:N"; "auto" or an empty string picks the default.
    let parse (name: string) : torch.Device =
        match (if isNull name then "" else name.Trim().ToLowerInvariant()) with
        | ""
        | "auto" -> defaultDevice ()
        | "cpu" -> torch.CPU
        | n when n = "cuda" || n.StartsWith "cuda:" ->
            if not (torch.cuda.is_available ()) then
                Errors.fail "device %s: CUDA is not available in this libtorch build (see README: GPU)" n
            torch.Device n
        | other -> Errors.fail "device %s: unknown device, expected cpu or cuda[:N]" other
