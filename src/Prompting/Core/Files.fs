namespace Prompting

open System
open System.IO

module Files =
    /// Writes through a temporary file beside the target and renames it into place, so a failure
    /// never leaves a partial file nor destroys an earlier one. IO errors name the target.
    let writeAtomic (path: string) (write: string -> unit) =
        let full =
            try Path.GetFullPath path
            with e -> Errors.fail "%s: invalid output path (%s)" path e.Message
        let tmp = sprintf "%s.%s.tmp" full (Guid.NewGuid().ToString("N").Substring(0, 8))
        try
            Directory.CreateDirectory(Path.GetDirectoryName full) |> ignore
            write tmp
            File.Move(tmp, full, true)
        with
        | :? IOException
        | :? UnauthorizedAccessException as e ->
            try File.Delete tmp with _ -> ()
            Errors.fail "%s: cannot write (%s)" path e.Message
