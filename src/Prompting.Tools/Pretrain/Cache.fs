namespace Prompting.Pretrain

open System
open System.IO
open System.Security.Cryptography
open System.Text
open TorchSharp
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Engine

/// What the cache records beside a backbone (`mae-<key>.json`): enough to see what made it.
type BackboneInfo =
    { Key: string
      Objective: string
      Config: MaeConfig
      Data: string
      DataIdentity: string
      Images: int
      EpochLosses: float list
      Seconds: float
      Created: string }

/// A backbone from the cache: its checkpoint path, its key, and whether it was already there.
type CachedBackbone =
    { Path: string
      Key: string
      Reused: bool }

/// Pretrained backbones cached by a hash of the whole pretraining configuration and of the images
/// it saw, so a later run with the same inputs reuses the file and any change makes a new one.
module Cache =
    /// Part of every key: bump it when the training code changes what a configuration produces.
    [<Literal>]
    let FormatVersion = "prompting-mae-2"

    /// $XDG_CACHE_HOME/prompting/backbones, else ~/.cache/prompting/backbones.
    let defaultDirectory () =
        let cache =
            Environment.GetEnvironmentVariable "XDG_CACHE_HOME"
            |> Option.ofObj
            |> Option.filter (fun v -> v <> "")
            |> Option.defaultWith (fun () -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".cache"))
        Path.Combine(cache, "prompting", "backbones")

    /// 16 hex digits of SHA-256 over the format version, the configuration's JSON and the data identity.
    let key (c: MaeConfig) (dataIdentity: string) =
        let text = String.Join("\n", [ FormatVersion; Json.serialize c; dataIdentity ])
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes text)).ToLowerInvariant().Substring(0, 16)

    let checkpointPath (dir: string) (key: string) = Path.Combine(dir, sprintf "mae-%s.safetensors" key)
    let infoPath (dir: string) (key: string) = Path.Combine(dir, sprintf "mae-%s.json" key)

    /// The cached checkpoint when it exists, reads as a valid ViT and records this key.
    let tryFind (dir: string) (key: string) =
        let path = checkpointPath dir key
        if not (File.Exists path) then None
        else
            try
                let _, metadata = Safetensors.readWithMetadata path
                Checkpoint.read path None |> ignore
                if metadata.TryFind "cache_key" = Some key then Some path else None
            with PromptingError _ -> None

    /// Writes the encoder as a timm-named safetensors checkpoint that `run --checkpoint` loads,
    /// recording heads and image size (which the tensors do not determine) and the cache key.
    let writeCheckpoint (path: string) (c: MaeConfig) (key: string) (tensors: (string * HostTensor) list) =
        let metadata =
            Map.ofList
                [ "format", "pt"
                  "producer", "Prompting"
                  "image_size", string c.Encoder.ImageSize
                  "heads", string c.Encoder.Heads
                  "pretraining", "mae"
                  "cache_key", key ]
        Safetensors.writeWithMetadata path metadata tensors

    /// The backbone for this configuration and these images: the cached file when there is one
    /// (unless `force`), otherwise pretrained now (progress on the terminal) and stored atomically.
    let getOrTrain (config: MaeConfig) (images: UnlabelledImages) (dir: string) (force: bool) (device: torch.Device) (log: string -> unit) =
        let c = MaeConfig.validate config
        let chosen = UnlabelledImages.take c.Seed c.Images images
        if chosen.Load.Length = 0 then Errors.fail "pretrain: %s has no training images" images.Name
        let identity = UnlabelledImages.identity chosen
        let key = key c identity
        match (if force then None else tryFind dir key) with
        | Some path ->
            log (sprintf "backbone: reusing %s (cache key %s)" path key)
            { Path = path; Key = key; Reused = true }
        | None ->
            let path = checkpointPath dir key
            if File.Exists path && not force then log (sprintf "backbone: %s is unreadable or not this configuration's; pretraining again" path)
            log (sprintf "backbone: pretraining a %d-block ViT (width %d, patch %d, %d px) with MAE on %d unlabelled %s training images; cache key %s"
                    c.Encoder.Depth c.Encoder.Width c.Encoder.PatchSize c.Encoder.ImageSize chosen.Load.Length images.Name key)
            let result =
                Progress.run "pretrain (MAE)" (Pretraining.totalSteps c chosen.Load.Length) (fun reporter ->
                    Pretraining.train c chosen device reporter)
            let info =
                { Key = key
                  Objective = "MAE: masked patches, normalised-pixel MSE on hidden patches only"
                  Config = c
                  Data = images.Name
                  DataIdentity = identity
                  Images = chosen.Load.Length
                  EpochLosses = result.EpochLosses
                  Seconds = result.Seconds
                  Created = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ") }
            // The description first: a checkpoint that exists always has one beside it.
            Files.writeAtomic (infoPath dir key) (fun tmp -> File.WriteAllText(tmp, Json.serialize info))
            writeCheckpoint path c key result.Tensors
            log (sprintf "backbone: pretrained in %.0f s, wrote %s" result.Seconds path)
            { Path = path; Key = key; Reused = false }
