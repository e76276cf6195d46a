module Prompting.Cli.Commands.Predict

open System.IO
open System.Text
open Argu
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Cli

/// file,top1..top5: class indices, or a run's class names.
let private writeCsv (path: string) (rows: (string * string[])[]) =
    let sb = StringBuilder("file,top1,top2,top3,top4,top5\n")
    let quote (s: string) =
        if s.IndexOfAny([| ','; '"'; '\n' |]) >= 0 then "\"" + s.Replace("\"", "\"\"") + "\"" else s
    for name, top in rows do
        sb.Append(quote name).Append(',').Append(System.String.Join(",", top |> Array.map quote)).Append('\n') |> ignore
    Files.writeAtomic path (fun tmp -> File.WriteAllText(tmp, sb.ToString()))

/// `predict --run DIR`: the run's model after its last task, with its own image size,
/// normalisation and evaluation transform; the CSV names the run's classes.
let private withRun (args: ParseResults<PredictArgs>) (dir: string) =
    for flag, given in [ "--features", args.Contains PredictArgs.Features; "--image-size", args.Contains PredictArgs.Image_Size
                         "--heads", args.Contains PredictArgs.Heads; "--crop-pct", args.Contains PredictArgs.Crop_Pct
                         "--mean", args.Contains PredictArgs.Mean; "--std", args.Contains PredictArgs.Std ] do
        if given then Errors.fail "predict --run: %s is the run's own; it cannot be given" flag
    let output = args.GetResult PredictArgs.Output
    let device = Devices.parse (args.GetResult(PredictArgs.Device, defaultValue = "auto"))
    let run = Engine.Experiment.reopen dir device { Engine.ReopenOptions.defaults with Checkpoint = args.TryGetResult PredictArgs.Checkpoint }
    use model = run.Model
    for note in run.Notes do eprintfn "note: %s" note
    let config = run.Recorded.Config
    let batchSize = args.GetResult(PredictArgs.Batch_Size, defaultValue = config.Method.Recipe.BatchSize)
    match args.TryGetResult PredictArgs.Input, args.TryGetResult PredictArgs.Images with
    | Some npy, None ->
        let result = Engine.RunPredict.onArray model device config batchSize npy (Npy.read npy)
        Npy.write output result
        eprintfn "wrote %s %s (logits over the %d classes seen)" output (HostTensor.shapeText result.Shape) (int result.Shape[1])
    | None, Some paths ->
        let files = Images.collect paths
        let logits = Engine.RunPredict.onImages model device config batchSize (Array.map snd files)
        writeCsv output (files |> Array.mapi (fun i (name, _) -> name, Predict.topK 5 logits[i] |> Array.map (fun c -> run.ClassNames[c])))
        eprintfn "wrote %s (%d images)" output files.Length
    | _ -> Errors.fail "predict: give exactly one of --input or --images"
    0

let private withCheckpoint (args: ParseResults<PredictArgs>) =
    let checkpoint =
        match args.TryGetResult PredictArgs.Checkpoint with
        | Some c -> c
        | None -> Errors.fail "predict: give --checkpoint FILE or --run DIR"
    let output = args.GetResult PredictArgs.Output
    let device = Devices.parse (args.GetResult(PredictArgs.Device, defaultValue = "auto"))
    let batchSize = args.GetResult(PredictArgs.Batch_Size, defaultValue = 32)
    let kind = if args.Contains PredictArgs.Features then PredictOutput.Features else PredictOutput.Logits
    let triple (r, g, b) = [| float32 r; float32 g; float32 b |]
    let preprocessing =
        { CropPct = args.GetResult(PredictArgs.Crop_Pct, defaultValue = Preprocessing.augreg.CropPct)
          Mean = args.TryGetResult PredictArgs.Mean |> Option.map triple |> Option.defaultValue Preprocessing.augreg.Mean
          Std = args.TryGetResult PredictArgs.Std |> Option.map triple |> Option.defaultValue Preprocessing.augreg.Std }
    if preprocessing.CropPct <= 0.0 || preprocessing.CropPct > 1.0 then
        Errors.fail "--crop-pct %g: must be in (0, 1]" preprocessing.CropPct
    if preprocessing.Std |> Array.exists (fun s -> s <= 0.0f) then Errors.fail "--std: values must be positive"
    let ck = Checkpoint.read checkpoint (args.TryGetResult PredictArgs.Heads)
    match args.TryGetResult PredictArgs.Input, args.TryGetResult PredictArgs.Images with
    | Some npy, None ->
        let input = Npy.read npy
        // Default resolution: the array's own when it is square, so resampling is implicit.
        let size =
            match args.TryGetResult PredictArgs.Image_Size with
            | Some s -> s
            | None when input.Shape.Length = 4 && input.Shape[2] = input.Shape[3] -> int input.Shape[2]
            | None -> ck.Config.ImageSize
        let options = { LoadOptions.defaults with ImageSize = Some size }
        use model = Checkpoint.toModel options ck |> Predict.prepare device
        let result = Predict.onArray model device batchSize kind input
        Npy.write output result
        eprintfn "wrote %s %s" output (HostTensor.shapeText result.Shape)
    | None, Some paths ->
        let files = Images.collect paths
        let options = { LoadOptions.defaults with ImageSize = args.TryGetResult PredictArgs.Image_Size }
        use model = Checkpoint.toModel options ck |> Predict.prepare device
        let result = Predict.onImages model device batchSize kind preprocessing (Array.map snd files)
        match kind with
        | PredictOutput.Features -> Npy.write output result
        | PredictOutput.Logits ->
            let width = int result.Shape[1]
            let rows =
                files |> Array.mapi (fun i (name, _) -> name, Predict.topK 5 result.Values[i * width .. (i + 1) * width - 1] |> Array.map string)
            writeCsv output rows
        eprintfn "wrote %s (%d images)" output files.Length
    | _ -> Errors.fail "predict: give exactly one of --input or --images"
    0

let run (args: ParseResults<PredictArgs>) =
    match args.TryGetResult PredictArgs.Run with
    | Some dir -> withRun args dir
    | None -> withCheckpoint args
