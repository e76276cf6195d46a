/// Hostile images (issue 18): truncated JPEG/PNG/BMP decoded strictly, a header-only JPEG,
/// huge dimensions claimed by a tiny file, extreme aspect ratios; the check of every image of a
/// run before the first step (ImageCheck) and its cache; resuming with --skip-corrupt added.
module Prompting.Tests.HostileImages

open System
open System.IO
open System.Text
open Expecto
open Prompting
open Prompting.Data
open Prompting.Engine
open Prompting.Tests.TestSupport
open Prompting.Tests.HostileSupport

let private jpeg () = File.ReadAllBytes(fixture "images/grad_20x52.jpg")
let private png () = File.ReadAllBytes(fixture "images/grad_37x29.png")

let private decodeError (name: string) (bytes: byte[]) =
    failsWithin 10.0 name (fun () -> Images.decodeBytes name bytes)

let private bigEndian (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]

/// The PNG with IHDR's width and height replaced (and its CRC fixed, so only the size is wrong).
let private pngClaiming (width: int) (height: int) =
    let b = png ()
    Array.blit (bigEndian width) 0 b 16 4
    Array.blit (bigEndian height) 0 b 20 4
    let crc (bytes: byte[]) =
        let mutable c = 0xFFFFFFFFu
        for x in bytes do
            c <- c ^^^ uint32 x
            for _ in 0..7 do
                c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
        c ^^^ 0xFFFFFFFFu
    Array.blit (bigEndian (int (crc b[12..28]))) 0 b 29 4
    b

/// The JPEG's tables and frame header, then EOI: no scan.
let private headerOnlyJpeg () =
    let b = jpeg ()
    let sos = [ 0 .. b.Length - 2 ] |> List.find (fun i -> b[i] = 0xFFuy && b[i + 1] = 0xDAuy)
    Array.append b[.. sos - 1] [| 0xFFuy; 0xD9uy |]

let private sample (source: string) (load: unit -> RgbImage) = { Source = source; Label = 0; Load = load }

[<Tests>]
let decoding =
    testList
        "hostile images"
        [ test "a JPEG cut to a third or two thirds of its bytes is an error, not a grey image" {
              let b = jpeg ()
              for keep in [ b.Length / 3; 2 * b.Length / 3; b.Length - 2 ] do
                  let msg = decodeError "cut.jpg" b[.. keep - 1]
                  expectMessage msg [ "cut.jpg"; "truncated" ] (sprintf "JPEG cut to %d bytes" keep)
          }

          test "a JPEG with bytes after its end-of-image marker still decodes" {
              let b = Array.append (jpeg ()) (Array.create 100 0uy)
              let img = Images.decodeBytes "padded.jpg" b
              Expect.equal (img.Width, img.Height) (20, 52) "decoded"
          }

          test "a header-only JPEG (no scan) is an error" {
              let msg = decodeError "header-only.jpg" (headerOnlyJpeg ())
              expectMessage msg [ "header-only.jpg"; "no scan" ] "header only"
          }

          test "a truncated PNG and a PNG with a corrupt chunk are errors" {
              let b = png ()
              expectMessage (decodeError "cut.png" b[.. 2 * b.Length / 3]) [ "cut.png"; "truncated" ] "PNG cut"
              let flipped = Array.copy b
              flipped[b.Length / 2] <- flipped[b.Length / 2] ^^^ 0x10uy
              expectMessage (decodeError "flipped.png" flipped) [ "flipped.png"; "CRC" ] "PNG bit flip"
          }

          test "a truncated BMP is an error" {
              use dir = new TempDir()
              let path = dir.File "x.bmp"
              Prompting.Tests.Cli.writeBmp path 16 16 (fun x y -> byte x, byte y, 0uy)
              let b = File.ReadAllBytes path
              expectMessage (decodeError "cut.bmp" b[.. b.Length / 2]) [ "cut.bmp"; "truncated" ] "BMP cut"
          }

          test "a tiny PNG claiming 10000 x 10000 pixels is refused from its header, before decoding" {
              // (stb_image itself refuses more than 2^30 bytes; this is under that, over our budget)
              let b = pngClaiming 10000 10000
              Expect.isLessThan b.Length 4000 "tiny file"
              let msg, seconds = timed (fun () -> decodeError "huge.png" b)
              expectMessage msg [ "huge.png"; "10000x10000"; "budget" ] "huge dimensions"
              Expect.isLessThan seconds 1.0 "no decoding"
          }

          test "a 1 x 12,000 image is refused with one line naming it (aspect ratio)" {
              use dir = new TempDir()
              let path = dir.File "strip.bmp"
              Prompting.Tests.Cli.writeBmp path 1 12000 (fun _ y -> byte y, 0uy, 0uy)
              let msg = failsWithin 10.0 path (fun () -> Images.decode path |> Images.preprocess 224 Vit.Preprocessing.augreg)
              expectMessage msg [ path; "aspect ratio" ] "1 x 12000"
          }

          test "resizing beyond the pixel budget is an error, never an overflowing buffer" {
              let img = { Width = 1; Height = 90; Pixels = Array.zeroCreate 270 }
              let msg = failsWithin 10.0 "resize" (fun () -> Images.resizeShorter 100_000 img)
              expectMessage msg [ "1x90"; "budget" ] "resize"
          }

          test "the loader names the sample whose transform fails" {
              let s = sample "tiny/x.png" (fun () -> { Width = 1; Height = 1; Pixels = [| 0uy; 0uy; 0uy |] })
              let eval: Transform = { Size = 8; Apply = fun _ _ -> Errors.fail "crop does not fit" }
              let msg = promptingError "loader" (fun () -> Loader.epochSequential LoaderOptions.Defaults eval [| s |] 0)
              expectMessage msg [ "tiny/x.png"; "crop does not fit" ] "loader"
          } ]

[<Tests>]
let imageCheck =
    testList
        "hostile image check"
        [ test "every image is checked before any work: the first bad one is named with its problem" {
              use dir = new TempDir()
              let good = dir.File "a/good.jpg"
              let bad = dir.File "a/bad.jpg"
              Directory.CreateDirectory(dir.File "a") |> ignore
              File.WriteAllBytes(good, jpeg ())
              File.WriteAllBytes(bad, (jpeg ())[.. 600])
              let samples = [| for p in [ good; bad; good ] -> sample p (fun () -> Images.decode p) |]
              let options: ImageCheck.Options = { CacheFile = Some(dir.File "cache.json"); SkipCorrupt = false }
              let msg = promptingError "check" (fun () -> ImageCheck.samples options samples)
              expectMessage msg [ bad; "truncated"; "--skip-corrupt" ] "check"
              let kept, skipped = ImageCheck.samples { options with SkipCorrupt = true } samples
              Expect.equal kept.Length 2 "the bad image is left out"
              Expect.equal (skipped |> List.map (fun s -> s.Path)) [ bad ] "and listed"
          }

          test "verdicts are cached by path, size and time; a changed file is checked again" {
              use dir = new TempDir()
              let path = dir.File "img.jpg"
              File.WriteAllBytes(path, jpeg ())
              let options: ImageCheck.Options = { CacheFile = Some(dir.File "cache.json"); SkipCorrupt = false }
              let mutable decodes = 0
              let counting () =
                  Threading.Interlocked.Increment &decodes |> ignore
                  Images.decode path
              Expect.isEmpty (ImageCheck.problems options [| sample path counting |]) "good"
              Expect.isEmpty (ImageCheck.problems options [| sample path counting |]) "good (cached)"
              Expect.equal decodes 1 "decoded once, then the cached verdict"
              File.WriteAllBytes(path, (jpeg ())[.. 1000])
              let problems = ImageCheck.problems options [| sample path counting |]
              Expect.equal decodes 2 "a changed file is decoded again"
              Expect.equal problems.Length 1 "and found bad"
              // A corrupt cache file is ignored, not an error.
              File.WriteAllText(dir.File "cache.json", "{ not json")
              Expect.equal (ImageCheck.problems options [| sample path counting |]).Length 1 "corrupt cache ignored"
          }

          test "images inside an archive are keyed by the archive file" {
              use dir = new TempDir()
              let archive = dir.File "data.tar"
              File.WriteAllBytes(archive, [| 1uy |])
              Expect.equal (ImageCheck.fileOf (archive + "#train/a/x#1.jpg")) (Some archive) "archive#member"
              Expect.equal (ImageCheck.fileOf archive) (Some archive) "a plain file"
              Expect.isNone (ImageCheck.fileOf (dir.File "none.jpg")) "nothing"
              Expect.isFalse (ImageCheck.isImageSample (sample (archive + "#7") (fun () -> failwith "unused"))) "rows of binary datasets are not re-checked"
          }

          test "leaving out every image of a class is an error naming the class" {
              let bad = sample "b.jpg" (fun () -> Errors.fail "b.jpg: truncated JPEG data")
              let good = { sample "a.jpg" (fun () -> { Width = 1; Height = 1; Pixels = [| 0uy; 0uy; 0uy |] }) with Label = 0 }
              let d = { Name = "d"; ClassNames = [| "zero"; "one" |]; Train = [| good; { bad with Label = 1 } |]; Test = [| good |] }
              let msg = promptingError "class" (fun () -> ImageCheck.dataset { CacheFile = None; SkipCorrupt = true } ignore d)
              expectMessage msg [ "one"; "left" ] "empty class"
          }

          test "a resume may add --skip-corrupt; nothing else, and not the reverse" {
              Expect.isTrue (Run.resumeAllows "Config.SkipCorrupt: false -> true") "adding it"
              Expect.isFalse (Run.resumeAllows "Config.SkipCorrupt: true -> false") "removing it"
              Expect.isFalse (Run.resumeAllows "Config.Seed: 1 -> 2") "another field"
              use dir = new TempDir()
              let prepared =
                  Configure.resolve
                      { RunRequest.empty with
                          Method = Some(MethodNamed "linear"); Benchmark = Some "imagefolder"; Data = Some dir.Path
                          Checkpoint = Some(fixture "vit_micro.safetensors"); Heads = Some 3; Tasks = Some 2; Epochs = Some 1
                          BatchSize = Some 4; Seed = Some 1 }
              let config = prepared.Config
              let withConfig c = { prepared with Config = c }
              let run = dir.File "run"
              Run.prepare prepared run ignore |> ignore
              // A first epoch saved: from here on the recorded configuration binds the directory.
              let trained: RunProgress =
                  { CompletedTasks = 0; EpochsDone = 1; Evaluations = []; EpochLosses = [ [ 0.5 ] ]; TrainSeconds = 1.0
                    PeakMemoryBytes = 0L; TrainableParameters = 1L; EpochState = None; EpochOptimizers = []
                    GcRegionOverruns = None; GcUnguardedSteps = None; ValidationEvaluations = None; TaskClasses = None; Warnings = None }
              File.WriteAllText(Run.progressFile run, Json.serialize trained)
              Run.checkResumable (withConfig { config with SkipCorrupt = true }) run
              Run.prepare (withConfig { config with SkipCorrupt = true }) run ignore |> ignore
              Expect.stringContains (File.ReadAllText(Run.configFile run)) "\"SkipCorrupt\": true" "the resume records the option"
              let msg = promptingError "reverse" (fun () -> Run.checkResumable prepared run)
              expectMessage msg [ "different configuration"; "SkipCorrupt" ] "true -> false is refused"
              let msg2 = promptingError "with seed" (fun () -> Run.checkResumable (withConfig { config with SkipCorrupt = true; Seed = 2 }) run)
              expectMessage msg2 [ "Seed" ] "another change is still refused"
          } ]
