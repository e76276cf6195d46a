module Prompting.Cli.Commands.Pretrain

open System.IO
open Argu
open Prompting
open Prompting.Vit
open Prompting.Engine
open Prompting.Pretrain
open Prompting.Cli

/// The pretraining configuration: the demo's defaults with the flags given.
let configure (args: ParseResults<PretrainArgs>) : MaeConfig =
    let d = MaeConfig.demo
    let encoder =
        { d.Encoder with
            ImageSize = args.GetResult(PretrainArgs.Image_Size, defaultValue = d.Encoder.ImageSize)
            PatchSize = args.GetResult(PretrainArgs.Patch_Size, defaultValue = d.Encoder.PatchSize)
            Depth = args.GetResult(PretrainArgs.Depth, defaultValue = d.Encoder.Depth)
            Width = args.GetResult(PretrainArgs.Width, defaultValue = d.Encoder.Width)
            Heads = args.GetResult(PretrainArgs.Heads, defaultValue = d.Encoder.Heads) }
    MaeConfig.validate
        { d with
            Encoder = { encoder with MlpHidden = 4 * encoder.Width }
            DecoderWidth = args.GetResult(PretrainArgs.Decoder_Width, defaultValue = d.DecoderWidth)
            DecoderDepth = args.GetResult(PretrainArgs.Decoder_Depth, defaultValue = d.DecoderDepth)
            DecoderHeads = args.GetResult(PretrainArgs.Decoder_Heads, defaultValue = d.DecoderHeads)
            MaskRatio = args.GetResult(PretrainArgs.Mask_Ratio, defaultValue = d.MaskRatio)
            Epochs = args.GetResult(PretrainArgs.Epochs, defaultValue = d.Epochs)
            BatchSize = args.GetResult(PretrainArgs.Batch_Size, defaultValue = d.BatchSize)
            LearningRate = args.GetResult(PretrainArgs.Lr, defaultValue = d.LearningRate)
            WarmupEpochs = min d.WarmupEpochs (float (args.GetResult(PretrainArgs.Epochs, defaultValue = d.Epochs)))
            Images = args.TryGetResult PretrainArgs.Images |> Option.orElse d.Images
            CropScaleMin = args.GetResult(PretrainArgs.Crop_Scale, defaultValue = d.CropScaleMin)
            HorizontalFlip = not (args.Contains PretrainArgs.No_Flip)
            Seed = args.GetResult(PretrainArgs.Seed, defaultValue = d.Seed) }

/// The training split of a benchmark, labels dropped.
let trainingImages (benchmark: string) (data: string option) =
    let info = Benchmarks.find benchmark
    if info.Name = "sequence" || info.Name = "domains" then
        Errors.fail "pretrain: benchmark %s is a sequence of datasets; pretrain on one of them" info.Name
    let dataset = Benchmarks.loadNamed info.Name data false ignore
    UnlabelledImages.ofSamples dataset.Name dataset.Train

let run (args: ParseResults<PretrainArgs>) =
    let config = configure args
    let device = Devices.parse (args.GetResult(PretrainArgs.Device, defaultValue = "auto"))
    let cacheDir = args.GetResult(PretrainArgs.Cache_Dir, defaultValue = Cache.defaultDirectory ())
    let images = trainingImages (args.GetResult(PretrainArgs.Benchmark, defaultValue = "fashion-mnist")) (args.TryGetResult PretrainArgs.Data)
    CpuThreads.configure (args.TryGetResult PretrainArgs.Threads) (eprintfn "%s") |> ignore
    let backbone = Cache.getOrTrain config images cacheDir (args.Contains PretrainArgs.Force) device (eprintfn "%s")
    let path =
        match args.TryGetResult PretrainArgs.Output with
        | None -> backbone.Path
        | Some output ->
            Files.writeAtomic output (fun tmp -> File.Copy(backbone.Path, tmp, true))
            output
    printfn "checkpoint: %s" (Path.GetFullPath path)
    0
