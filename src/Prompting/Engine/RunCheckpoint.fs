namespace Prompting.Engine

open System
open System.IO
open System.Security.Cryptography
open Prompting
open Prompting.Vit

/// A run's checkpoint, read and hashed once: its parsed tensors build the backbone, its SHA-256 goes
/// into config.json and is checked when the run resumes or is evaluated again.
[<NoEquality; NoComparison>]
type RunCheckpoint =
    { Path: string
      Checkpoint: Checkpoint
      Sha256: string }

/// A configuration ready to run: the config and its checkpoint, read once.
[<NoEquality; NoComparison>]
type PreparedRun =
    { Config: RunConfig
      Checkpoint: RunCheckpoint
      /// Resuming may change recipe fields of the recorded configuration (an explicit choice).
      AcceptRecipeChange: bool }

module RunCheckpoint =
    let sha256 (path: string) =
        if not (File.Exists path) then Errors.fail "%s: checkpoint not found" path
        use s = File.OpenRead path
        Convert.ToHexString(SHA256.HashData s).ToLowerInvariant()

    /// Reads and validates the whole file, then hashes it.
    let read (path: string) (heads: int option) =
        if not (File.Exists path) then Errors.fail "%s: checkpoint not found" path
        let checkpoint = Checkpoint.read path heads
        { Path = path; Checkpoint = checkpoint; Sha256 = sha256 path }

    /// The backbone at the run's resolution.
    let backbone (config: RunConfig) (c: RunCheckpoint) =
        Checkpoint.toModel { ImageSize = Some config.ImageSize; Heads = config.Heads; Classes = None } c.Checkpoint

module PreparedRun =
    /// Reads the configuration's checkpoint (once).
    let ofConfig (config: RunConfig) =
        { Config = config; Checkpoint = RunCheckpoint.read config.Checkpoint config.Heads; AcceptRecipeChange = false }
