module Prompting.Tests.ImagesTests

open System
open System.IO
open Expecto
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Tests.TestSupport

/// One 8-bit step in the normalised units of mean = std = 0.5: (1/255) / 0.5.
let step = 2.0 / 255.0

let imagePath name = fixture ("images/" + name)

/// An (H, W, 3) uint8 array read from .npy as an RgbImage.
let rgbOfHwc (t: HostTensor) =
    Expect.equal t.Shape.Length 3 "HWC array"
    Expect.equal t.Shape[2] 3L "3 channels"
    { Width = int t.Shape[1]
      Height = int t.Shape[0]
      Pixels = t.Values |> Array.map (fun v -> byte v) }

/// (max abs, mean abs) difference.
let errors (actual: float32[]) (expected: float32[]) =
    Expect.equal actual.Length expected.Length "lengths"
    let d = Array.map2 (fun (a: float32) (b: float32) -> abs (float a - float b)) actual expected
    Array.max d, Array.average d

let report (what: string) (maxErr: float, meanErr: float) =
    printfn "  [images] %s: max abs error %.6g (%.3f 8-bit steps), mean abs error %.6g" what maxErr (maxErr / step) meanErr

/// An image whose red channel is x and green channel is y, to read crop offsets back.
let coordinateImage width height =
    { Width = width
      Height = height
      Pixels =
        [| for y in 0 .. height - 1 do
               for x in 0 .. width - 1 do
                   yield byte x
                   yield byte y
                   yield 0uy |] }

[<Tests>]
let againstPil =
    testList
        "images vs PIL"
        [ test "PNG decodes to exactly PIL's pixels" {
              let ours = Images.decode (imagePath "grad_37x29.png")
              let pil = rgbOfHwc (Npy.read (imagePath "grad_37x29_decoded.npy"))
              Expect.equal (ours.Width, ours.Height) (37, 29) "size"
              Expect.sequenceEqual ours.Pixels pil.Pixels "pixels"
          }

          test "JPEG decodes close to PIL's (libjpeg) pixels" {
              let ours = Images.decode (imagePath "grad_20x52.jpg")
              let pil = rgbOfHwc (Npy.read (imagePath "grad_20x52_decoded.npy"))
              Expect.equal (ours.Width, ours.Height) (20, 52) "size"
              let maxErr, meanErr = errors (ours.Pixels |> Array.map float32) (pil.Pixels |> Array.map float32)
              printfn "  [images] JPEG decode stb_image vs libjpeg: max abs %g levels, mean abs %.4f levels" maxErr meanErr
              Expect.isLessThan meanErr 0.5 "mean difference below half a level"
              Expect.isLessThanOrEqual maxErr 8.0 "max difference in levels"
          }

          test "bicubic resize is bit-exact with PIL (shrink, enlarge, exact-tie cases)" {
              let members = Npz.read (imagePath "resize_cases.npz") |> Map.ofList
              let source = rgbOfHwc members["source"]
              let cases = members |> Map.filter (fun k _ -> k.StartsWith "bicubic_")
              Expect.isGreaterThanOrEqual cases.Count 8 "cases"
              for KeyValue(name, expected) in cases do
                  let expected = rgbOfHwc expected
                  let ours = Images.resizeBicubic expected.Width expected.Height source
                  let differing = Array.map2 (fun (a: byte) (b: byte) -> a <> b) ours.Pixels expected.Pixels |> Array.filter id |> Array.length
                  Expect.equal differing 0 (sprintf "%s: values differing from PIL" name)
          }

          test "PNG eval transform matches PIL + torchvision (shrink 29 -> 26, crop 24)" {
              let img = Images.decode (imagePath "grad_37x29.png")
              let ours = Images.preprocess 24 Preprocessing.augreg img
              let expected = Npy.read (imagePath "grad_37x29_eval24.npy")
              Expect.sequenceEqual expected.Shape [| 3L; 24L; 24L |] "expected shape"
              let maxErr, meanErr = errors ours expected.Values
              report "PNG 37x29 -> 24" (maxErr, meanErr)
              Expect.isLessThanOrEqual maxErr (2.0 * step) "at most ±1 in 8-bit steps"
          }

          test "JPEG eval transform is close to PIL + torchvision (enlarge 20 -> 26, crop 24)" {
              let img = Images.decode (imagePath "grad_20x52.jpg")
              let ours = Images.preprocess 24 Preprocessing.augreg img
              let expected = Npy.read (imagePath "grad_20x52_eval24.npy")
              Expect.sequenceEqual expected.Shape [| 3L; 24L; 24L |] "expected shape"
              let maxErr, meanErr = errors ours expected.Values
              report "JPEG 20x52 -> 24" (maxErr, meanErr)
              Expect.isLessThan meanErr 0.02 "mean abs error (decoder differences only)"
              Expect.isLessThan maxErr 0.2 "max abs error"
          }

          test "JPEG eval transform from PIL's decoded pixels matches exactly" {
              // Separates decoding from resampling: the same pipeline on PIL's own decode of the JPEG.
              let pil = rgbOfHwc (Npy.read (imagePath "grad_20x52_decoded.npy"))
              let ours = Images.preprocess 24 Preprocessing.augreg pil
              let expected = Npy.read (imagePath "grad_20x52_eval24.npy")
              let maxErr, meanErr = errors ours expected.Values
              report "JPEG (PIL-decoded pixels) 20x52 -> 24" (maxErr, meanErr)
              Expect.isLessThanOrEqual maxErr (2.0 * step) "at most ±1 in 8-bit steps"
          } ]

[<Tests>]
let geometry =
    testList
        "images geometry"
        [ // torchvision Resize(int): the longer side is int(size * long / short), evaluated in that
          // order in double precision (values from Python; 26·15/13 = 30 exactly, whereas
          // int(26 · (15/13)) would be 29)
          for (w, h), size, expected in
              [ (37, 29), 26, (33, 26)
                (20, 52), 26, (26, 67)
                (13, 15), 26, (26, 30)
                (15, 13), 26, (30, 26)
                (52, 126), 26, (26, 63)
                (56, 61), 224, (224, 244)
                (500, 375), 26, (34, 26)
                (33, 33), 26, (26, 26)
                (1000, 3), 26, (8666, 26) ] do
              test (sprintf "resize shorter side of %dx%d to %d gives %dx%d" w h size (fst expected) (snd expected)) {
                  let img = { Width = w; Height = h; Pixels = Array.zeroCreate (w * h * 3) }
                  let out = Images.resizeShorter size img
                  Expect.equal (out.Width, out.Height) expected "size"
              }

          test "resize to the same shorter side leaves the image alone" {
              let img = coordinateImage 40 26
              let out = Images.resizeShorter 26 img
              Expect.isTrue (obj.ReferenceEquals(out, img)) "unchanged"
          }

          // torchvision CenterCrop: top = int(round((H - S) / 2)), Python rounds half to even
          for (w, h), size, (left, top) in
              [ (33, 26), 24, (4, 1) // 4.5 -> 4, 1.0 -> 1
                (35, 24), 24, (6, 0) // 5.5 -> 6
                (26, 67), 24, (1, 22) // 21.5 -> 22
                (25, 27), 24, (0, 2) // 0.5 -> 0, 1.5 -> 2
                (31, 29), 24, (4, 2) // 3.5 -> 4, 2.5 -> 2
                (24, 24), 24, (0, 0)
                (7, 6), 1, (3, 2) ] do // 3.0, 2.5 -> 2
              test (sprintf "center crop %d of %dx%d starts at (%d, %d)" size w h left top) {
                  let out = Images.centerCrop size (coordinateImage w h)
                  Expect.equal (out.Width, out.Height) (size, size) "size"
                  Expect.equal (int out.Pixels[0], int out.Pixels[1]) (left, top) "top-left pixel"
                  let last = (size * size - 1) * 3
                  Expect.equal (int out.Pixels[last], int out.Pixels[last + 1]) (left + size - 1, top + size - 1) "bottom-right pixel"
              }

          test "center crop larger than the image is a PromptingError" {
              let msg = promptingError "crop" (fun () -> Images.centerCrop 24 (coordinateImage 30 20))
              expectMessage msg [ "30x20"; "24" ] "crop"
          }

          test "preprocess output is CHW of the requested size" {
              let out = Images.preprocess 24 Preprocessing.augreg (coordinateImage 40 30)
              Expect.equal out.Length (3 * 24 * 24) "length"
              Expect.isTrue (out |> Array.forall (fun v -> v >= -1.0f && v <= 1.0f)) "range of mean = std = 0.5"
          }

          test "normalize uses (v / 255 - mean) / std per channel in CHW order" {
              let img = { Width = 2; Height = 1; Pixels = [| 0uy; 128uy; 255uy; 51uy; 102uy; 153uy |] }
              let out = Images.normalize Preprocessing.imagenet img
              let expect ch (v: byte) = (float32 v / 255.0f - Preprocessing.imagenet.Mean[ch]) / Preprocessing.imagenet.Std[ch]
              Expect.sequenceEqual out [| expect 0 0uy; expect 0 51uy; expect 1 128uy; expect 1 102uy; expect 2 255uy; expect 2 153uy |] "values"
          }

          test "undecodable file is a PromptingError naming it" {
              use dir = new TempDir()
              let path = dir.File "broken.png"
              File.WriteAllBytes(path, Array.append (File.ReadAllBytes(imagePath "grad_37x29.png")).[.. 40] [| 1uy; 2uy; 3uy |])
              let msg = promptingError "broken png" (fun () -> Images.decode path)
              expectMessage msg [ path; "cannot decode" ] "broken png"
          } ]
