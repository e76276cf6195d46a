namespace Prompting

open System
open System.IO
open System.Runtime.InteropServices

module private Native =
    [<DllImport("libc", EntryPoint = "open", SetLastError = true)>]
    extern int openFile(string path, int flags)

    [<DllImport("libc", EntryPoint = "fsync", SetLastError = true)>]
    extern int fsync(int fd)

    [<DllImport("libc", EntryPoint = "close", SetLastError = true)>]
    extern int closeFile(int fd)

module Files =
    /// Temporary files of writeAtomic end in ".<8 hex digits>.tmp".
    let private temporaryPattern = Text.RegularExpressions.Regex(@"\.[0-9a-f]{8}\.tmp$")

    /// Makes a file's contents durable (fsync), so that a rename after it cannot expose an empty
    /// or partial file after a power loss.
    let syncFile (path: string) =
        use stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite)
        stream.Flush true

    /// Makes a directory's entries durable (fsync of the directory, Linux), so that a rename in it
    /// survives a power loss. Elsewhere a no-op.
    let syncDirectory (dir: string) =
        if OperatingSystem.IsLinux() then
            let fd = Native.openFile (dir, 0) // O_RDONLY
            if fd >= 0 then
                Native.fsync fd |> ignore
                Native.closeFile fd |> ignore

    /// Writes through a temporary file beside the target, flushes it to disk, renames it into place
    /// and flushes the directory entry, so neither a killed process nor a power loss leaves a
    /// partial file or destroys an earlier one. IO errors name the target.
    let writeAtomic (path: string) (write: string -> unit) =
        let full =
            try Path.GetFullPath path
            with e -> Errors.fail "%s: invalid output path (%s)" path e.Message
        let tmp = sprintf "%s.%s.tmp" full (Guid.NewGuid().ToString("N").Substring(0, 8))
        try
            let dir = Path.GetDirectoryName full
            Directory.CreateDirectory dir |> ignore
            write tmp
            syncFile tmp
            File.Move(tmp, full, true)
            syncDirectory dir
        with
        | :? IOException
        | :? UnauthorizedAccessException as e ->
            try File.Delete tmp with _ -> ()
            Errors.fail "%s: cannot write (%s)" path e.Message

    /// Removes temporary files that writeAtomic left in `dir` (not below it) when its process was
    /// killed mid-write; returns their names. Only for a directory this process owns (a locked run).
    let removeLeftovers (dir: string) =
        if Directory.Exists dir then
            [ for f in Directory.GetFiles dir do
                  if temporaryPattern.IsMatch f then
                      try
                          File.Delete f
                          yield Path.GetFileName f
                      with _ -> () ]
        else []
