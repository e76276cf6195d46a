namespace Prompting.Pretrain

open System
open System.Diagnostics
open System.Security.Cryptography
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Tensors
open Prompting.Vit
open Prompting.Engine

/// Training images without their labels: how to load each one and nothing else, so pretraining
/// cannot read a label even by mistake.
[<NoEquality; NoComparison>]
type UnlabelledImages =
    { Name: string
      Load: (unit -> RgbImage)[] }

module UnlabelledImages =
    /// The images of a split; the labels are dropped here, before pretraining sees anything.
    let ofSamples (name: string) (samples: Sample[]) =
        { Name = name; Load = samples |> Array.map (fun s -> s.Load) }

    /// At most `count` images: a seeded choice, kept in the original order.
    let take (seed: int) (count: int option) (images: UnlabelledImages) =
        match count with
        | Some n when n < images.Load.Length ->
            let chosen = Seed.permutation (Seed.random seed [ 7 ]) images.Load.Length |> Array.truncate n |> Array.sort
            { images with Load = chosen |> Array.map (fun i -> images.Load[i]) }
        | _ -> images

    /// SHA-256 over every image's width, height and pixels, in order (lowercase hex): what the
    /// pretraining saw, whatever file or folder it came from.
    let identity (images: UnlabelledImages) =
        use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
        hash.AppendData(BitConverter.GetBytes images.Load.Length)
        for load in images.Load do
            let image = load ()
            hash.AppendData(BitConverter.GetBytes image.Width)
            hash.AppendData(BitConverter.GetBytes image.Height)
            hash.AppendData image.Pixels
        Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant()

/// What pretraining produced: the encoder's tensors under timm's names, and how it went.
[<NoEquality; NoComparison>]
type PretrainResult =
    { Tensors: (string * HostTensor) list
      EpochLosses: float list
      Seconds: float }

/// MAE pretraining on unlabelled images: one dispose scope per step, masks and augmentation drawn
/// from generators seeded by (seed, epoch, ...), so a seed gives the same weights on a machine.
module Pretraining =
    /// The learning rate at a global step: linear warm-up, then cosine decay to zero.
    let learningRate (c: MaeConfig) (stepsPerEpoch: int) (step: int) =
        let total = float (c.Epochs * max 1 stepsPerEpoch)
        let warmup = c.WarmupEpochs * float (max 1 stepsPerEpoch)
        let s = float step
        if s < warmup then c.LearningRate * (s + 1.0) / warmup
        else
            let progress = if total <= warmup then 1.0 else min 1.0 ((s - warmup) / (total - warmup))
            c.LearningRate * 0.5 * (1.0 + cos (Math.PI * progress))

    /// Batches per epoch: equal batches as MAE trains (the rest of a shuffle is dropped); a set
    /// smaller than one batch is one batch.
    let batchesPerEpoch (c: MaeConfig) (count: int) = max 1 (count / c.BatchSize)

    /// Optimiser steps of the whole pretraining.
    let totalSteps (c: MaeConfig) (count: int) = int64 c.Epochs * int64 (batchesPerEpoch c count)

    /// The image indices of each batch of an epoch: a permutation seeded by (seed, epoch).
    let epochBatches (c: MaeConfig) (count: int) (epoch: int) =
        let order = Seed.permutation (Seed.random c.Seed [ 0; epoch ]) count
        let size = min c.BatchSize count
        Array.init (batchesPerEpoch c count) (fun b -> order[b * size .. b * size + size - 1])

    /// Trains a masked autoencoder on the images and returns its encoder's tensors.
    let train (config: MaeConfig) (images: UnlabelledImages) (device: torch.Device) (reporter: IProgressReporter) =
        let c = MaeConfig.validate config
        if images.Load.Length = 0 then Errors.fail "pretrain: %s has no training images" images.Name
        let clock = Stopwatch.StartNew()
        use bank = ImageBank.ofImages c.Encoder.ImageSize images.Load
        let perEpoch = batchesPerEpoch c bank.Count
        torch.manual_seed (int64 c.Seed) |> ignore
        use mae = new MaskedAutoencoder(c)
        mae.``to`` device |> ignore
        let trainable = [ for struct (_, p) in mae.named_parameters () do if p.requires_grad then yield p ]
        // MAE decays weights, not biases, norms or tokens.
        let decayed, plain = trainable |> List.partition (fun p -> p.dim () >= 2L && p.shape[0] <> 1L)
        use withDecay = torch.optim.AdamW(decayed, lr = c.LearningRate, beta1 = 0.9, beta2 = 0.95, weight_decay = c.WeightDecay)
        use withoutDecay = torch.optim.AdamW(plain, lr = c.LearningRate, beta1 = 0.9, beta2 = 0.95, weight_decay = 0.0)
        let optimizers = [ withDecay :> torch.optim.Optimizer; withoutDecay ]
        let keep = mae.VisiblePatches
        let losses = ResizeArray<float>()
        mae.train ()
        for epoch in 0 .. c.Epochs - 1 do
            use generator = new torch.Generator(uint64 (Seed.derive c.Seed [ 3; epoch ]))
            let views = Seed.random c.Seed [ 4; epoch ]
            use total = torch.zeros ([||], device = device)
            let batches = epochBatches c bank.Count epoch
            for step, indices in Array.indexed batches do
                use _ = Runtime.noCollection (64L <<< 20)
                use scope = torch.NewDisposeScope()
                let rate = learningRate c perEpoch (epoch * perEpoch + step)
                for o in optimizers do
                    for g in o.ParamGroups do g.LearningRate <- rate
                let batch = bank.Batch(indices, device)
                let first = Views.random views c.CropScaleMin c.HorizontalFlip batch
                let masking = Masking.random generator indices.Length mae.Patches keep device
                let loss = mae.Loss(first, masking)
                for o in optimizers do o.zero_grad ()
                loss.backward ()
                for o in optimizers do o.step () |> ignore
                total.add_ (loss.detach ()) |> ignore
                reporter.Advance 1
            let mean = float (total.item<float32> ()) / float batches.Length
            losses.Add mean
            reporter.Status(sprintf "epoch %d/%d · loss %.4f" (epoch + 1) c.Epochs mean)
            reporter.Message(sprintf "pretraining epoch %d/%d: loss %.4f" (epoch + 1) c.Epochs mean)
        mae.eval ()
        // By timm's names in timm's order (the checkpoint writer's key order).
        let state = mae.Encoder.state_dict ()
        let tensors = [ for name, _ in Checkpoint.expectedShapes c.Encoder -> name, HostTensor.ofTensor state[name] ]
        { Tensors = tensors; EpochLosses = List.ofSeq losses; Seconds = clock.Elapsed.TotalSeconds }
