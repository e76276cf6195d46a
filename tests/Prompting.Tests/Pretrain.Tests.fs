/// MAE pretraining: masking, the patch target and loss, label independence, the cache.
module Prompting.Tests.Pretrain

open System
open System.IO
open Expecto
open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Tensors
open Prompting.Vit
open Prompting.Pretrain
open Prompting.Tests.Fixtures
open Prompting.Tests.TestSupport

let private int64s (t: torch.Tensor) = t.to_type(torch.int64).data<int64>().ToArray()
let private floats (t: torch.Tensor) = t.contiguous().data<float32>().ToArray()

/// A tiny configuration: 8 px images, 2 px patches (16 of them), one small block each side.
let tiny =
    { MaeConfig.demo with
        Encoder = VitConfig.custom 8 2 1 16 2 0
        DecoderWidth = 8
        DecoderDepth = 1
        DecoderHeads = 2
        Epochs = 3
        BatchSize = 8
        LearningRate = 3e-3
        WarmupEpochs = 0.0
        Images = None }

/// Grey 8×8 images with a bright square whose place and size depend on the index.
let syntheticImages (count: int) =
    Array.init count (fun i ->
        let size = 2 + i % 4
        let top, left = (i / 4) % (8 - size + 1), (i * 3) % (8 - size + 1)
        let pixels = Array.zeroCreate<byte> (8 * 8 * 3)
        for y in 0 .. 7 do
            for x in 0 .. 7 do
                let v = if y >= top && y < top + size && x >= left && x < left + size then 230uy else byte (20 + (x * y + i) % 17)
                for ch in 0 .. 2 do pixels[(y * 8 + x) * 3 + ch] <- v
        { Width = 8; Height = 8; Pixels = pixels })

let private samplesOf (labels: int[]) (images: RgbImage[]) =
    Array.init images.Length (fun i -> { Source = sprintf "synthetic %d" i; Label = labels[i]; Load = fun () -> images[i] })

let private silent =
    { new IProgressReporter with
        member _.Advance _ = ()
        member _.Status _ = ()
        member _.Message _ = () }

let private train (c: MaeConfig) (images: UnlabelledImages) = Pretraining.train c images torch.CPU silent

[<Tests>]
let masking =
    testSequenced
    <| testList
        "pretrain masking"
        [ test "a hand-computed case: the lowest noise is visible, restore undoes the shuffle" {
              use noise = tensorOf2 [| 0.5f; 0.1f; 0.9f; 0.3f |] [| 1L; 4L |]
              use m = Masking.ofNoise noise 2
              Expect.sequenceEqual (int64s m.Keep) [| 1L; 3L |] "visible: patches 1 (0.1) and 3 (0.3)"
              Expect.sequenceEqual (floats m.Hidden) [| 1.0f; 0.0f; 1.0f; 0.0f |] "hidden: patches 0 and 2"
              // shuffle = [1, 3, 0, 2]: patch 0 sits at position 2, patch 1 at 0, patch 2 at 3, patch 3 at 1
              Expect.sequenceEqual (int64s m.Restore) [| 2L; 0L; 3L; 1L |] "restore"
          }

          test "every sample shows exactly `keep` distinct patches and hides the rest" {
              use generator = new torch.Generator(11UL)
              use m = Masking.random generator 16 49 12 torch.CPU
              Expect.sequenceEqual m.Keep.shape [| 16L; 12L |] "keep shape"
              let keep = int64s m.Keep
              let hidden = floats m.Hidden
              for b in 0 .. 15 do
                  let visible = keep[b * 12 .. b * 12 + 11]
                  Expect.equal (Array.distinct visible).Length 12 "distinct visible patches"
                  Expect.isTrue (visible |> Array.forall (fun p -> p >= 0L && p < 49L)) "in range"
                  let row = hidden[b * 49 .. b * 49 + 48]
                  Expect.equal (Array.sum row) 37.0f "37 hidden"
                  for p in visible do Expect.equal row[int p] 0.0f "a visible patch is not hidden"
          }

          test "each sample draws its own mask, and only its own noise decides it" {
              use generator = new torch.Generator(5UL)
              use m = Masking.random generator 8 49 12 torch.CPU
              let sets = [ for b in 0 .. 7 -> set (int64s (m.Keep.select (0, int64 b))) ]
              Expect.equal (List.distinct sets).Length 8 "eight different masks in one batch"
              // Reversing the batch's noise rows reverses the masks: no sample depends on another.
              use noise = torch.rand ([| 4L; 10L |], generator = generator)
              use reversed = noise.flip (0L)
              use a = Masking.ofNoise noise 3
              use b = Masking.ofNoise reversed 3
              use bBack = b.Hidden.flip (0L)
              Expect.isTrue (sameValues a.Hidden bBack) "mask of sample i follows its noise row"
          }

          test "the same seed gives the same masks, another seed others" {
              let masks (seed: uint64) =
                  use g = new torch.Generator(seed)
                  use m = Masking.random g 4 16 4 torch.CPU
                  int64s m.Keep
              Expect.sequenceEqual (masks 3UL) (masks 3UL) "same seed"
              Expect.notEqual (masks 3UL) (masks 4UL) "another seed"
          }

          test "keep outside 1 .. L-1 is refused" {
              use noise = torch.rand (2L, 4L)
              let message = promptingError "keep 4 of 4" (fun () -> Masking.ofNoise noise 4)
              expectMessage message [ "4 visible of 4 patches" ] "keep = L"
          } ]

[<Tests>]
let views =
    testSequenced
    <| testList
        "pretrain views"
        [ test "the whole-image crop gives the image back, the mirrored one mirrors it" {
              use image = torch.arange(96L, dtype = torch.float32).reshape (2L, 3L, 4L, 4L)
              let sample (theta: float[]) =
                  use t = tensorOf2 (Array.concat [ theta; theta ] |> Array.map float32) [| 2L; 2L; 3L |]
                  use grid = torch.nn.functional.affine_grid (t, image.shape, false)
                  torch.nn.functional.grid_sample (image, grid, torch.GridSampleMode.Bilinear, torch.GridSamplePaddingMode.Border, false)
              use same = sample (Views.cropTheta 1.0 1.0 0.0 0.0 false)
              Expect.isLessThan (relativeError (floats same) (floats image)) 1e-6 "identity"
              use mirrored = sample (Views.cropTheta 1.0 1.0 0.0 0.0 true)
              use expected = image.flip (3L)
              Expect.isLessThan (relativeError (floats mirrored) (floats expected)) 1e-6 "mirror"
              // The left half, stretched: output columns sample x = -0.875 .. -0.125 of [-1, 1], that is
              // pixel positions -0.25 (held at the border, 0), 0.25, 0.75 and 1.25 of the row 0 1 2 3.
              use left = sample (Views.cropTheta 0.5 1.0 -0.5 0.0 false)
              let row = (floats left)[0..3]
              Expect.isLessThan (relativeError row [| 0.0f; 0.25f; 0.75f; 1.25f |]) 1e-6 "left half, bilinear, border"
          }

          test "random crops stay inside the image with an area of at least the minimum" {
              let rng = Random 3
              for _ in 1 .. 500 do
                  let t = Views.drawCrop rng 0.2 true
                  let w, h, cx, cy = abs t[0], t[4], t[2], t[5]
                  Expect.isTrue (w <= 1.0 && h <= 1.0 && w > 0.0 && h > 0.0) "size"
                  Expect.isTrue (abs cx <= 1.0 - w + 1e-12 && abs cy <= 1.0 - h + 1e-12) "inside"
                  Expect.isGreaterThanOrEqual (w * h) (0.2 * 0.75 - 1e-9) "area (clamping a side can only shrink it by the ratio)"
          }

          test "the bank gives the images normalised as `run` feeds them" {
              let pictures = syntheticImages 3
              use bank = ImageBank.ofImages 8 (pictures |> Array.map (fun p () -> p))
              use batch = bank.Batch([| 2; 0 |], torch.CPU)
              let toFloat = Transforms.toFloat Normalised Preprocessing.augreg
              let expected = Array.append (toFloat pictures[2]) (toFloat pictures[0])
              Expect.isLessThan (relativeError (floats batch) expected) 1e-6 "(v / 255 - 0.5) / 0.5"
          } ]

[<Tests>]
let objective =
    testSequenced
    <| testList
        "pretrain objective"
        [ test "patchify orders patches row-major and pixels row, column, channel" {
              use image = torch.arange(16L, dtype = torch.float32).reshape (1L, 1L, 4L, 4L)
              use patches = Mae.patchify 2 image
              Expect.sequenceEqual patches.shape [| 1L; 4L; 4L |] "shape"
              Expect.sequenceEqual (floats patches) [| 0f; 1f; 4f; 5f; 2f; 3f; 6f; 7f; 8f; 9f; 12f; 13f; 10f; 11f; 14f; 15f |] "values"
              // Channels last inside a patch: (y, x, c).
              use rgb = torch.arange(12L, dtype = torch.float32).reshape (1L, 3L, 2L, 2L)
              use one = Mae.patchify 2 rgb
              Expect.sequenceEqual (floats one) [| 0f; 4f; 8f; 1f; 5f; 9f; 2f; 6f; 10f; 3f; 7f; 11f |] "channels last"
          }

          test "the normalised target uses the patch's own mean and unbiased variance" {
              use patch = tensorOf2 [| 1f; 2f; 3f; 4f |] [| 1L; 1L; 4L |]
              use t = Mae.target true patch
              let sd = sqrt (5.0 / 3.0 + 1e-6)
              let expected = [| -1.5; -0.5; 0.5; 1.5 |] |> Array.map (fun v -> float32 (v / sd))
              Expect.isLessThan (relativeError (floats t) expected) 1e-6 "normalised"
              use raw = Mae.target false patch
              Expect.sequenceEqual (floats raw) [| 1f; 2f; 3f; 4f |] "unnormalised"
          }

          test "the loss averages the per-patch squared error over hidden patches only" {
              // Three patches of two values: errors (1, 1), (3, 0), (2, 2) → per patch 1, 4.5, 4.
              use prediction = tensorOf2 [| 1f; 1f; 3f; 0f; 2f; 2f |] [| 1L; 3L; 2L |]
              use target = torch.zeros (1L, 3L, 2L)
              use hidden = tensorOf2 [| 1f; 0f; 1f |] [| 1L; 3L |]
              use loss = Mae.maskedLoss prediction target hidden
              Expect.floatClose Accuracy.high (float (loss.item<float32> ())) 2.5 "(1 + 4) / 2"
              // Whatever is predicted for the visible patch does not count.
              use other = tensorOf2 [| 1f; 1f; 100f; -50f; 2f; 2f |] [| 1L; 3L; 2L |]
              use same = Mae.maskedLoss other target hidden
              Expect.floatClose Accuracy.high (float (same.item<float32> ())) 2.5 "visible patch ignored"
          }

          test "sine-cosine positions: column in the first half, row in the second, class row zero" {
              let width, grid = 8, 2
              let p = Mae.sinCosPositions width grid
              Expect.sequenceEqual p[0 .. width - 1] (Array.zeroCreate 8) "class token"
              // Patch (row 1, col 0) is token 1 + 2 = 3; ω = (1, 1/100).
              let token = p[3 * width .. 4 * width - 1]
              let expected = [| 0.0; 0.0; 1.0; 1.0; sin 1.0; sin 0.01; cos 1.0; cos 0.01 |] |> Array.map float32
              Expect.isLessThan (relativeError token expected) 1e-7 "row 1, column 0"
          }

          test "the reconstruction loss falls over a few epochs on tiny data" {
              let images = UnlabelledImages.ofSamples "synthetic" (samplesOf (Array.zeroCreate 32) (syntheticImages 32))
              let result = train { tiny with Epochs = 8 } images
              Expect.equal result.EpochLosses.Length 8 "one loss per epoch"
              Expect.isTrue (result.EpochLosses |> List.forall Double.IsFinite) "finite losses"
              Expect.isLessThan (List.last result.EpochLosses) (0.8 * List.head result.EpochLosses) "loss falls by a fifth or more"
          }

          test "labels are never read: permuted or absurd labels give the same weights, bit for bit" {
              let pictures = syntheticImages 24
              let labels = Array.init 24 (fun i -> i % 3)
              let permuted = Array.init 24 (fun i -> labels[(i * 7 + 5) % 24])
              let absurd = Array.create 24 -12345
              let weights (ls: int[]) =
                  let images = UnlabelledImages.ofSamples "synthetic" (samplesOf ls pictures)
                  (train { tiny with Epochs = 2 } images).Tensors
              let reference = weights labels
              for other, what in [ weights permuted, "permuted"; weights absurd, "absurd" ] do
                  Expect.sequenceEqual (List.map fst other) (List.map fst reference) (what + ": names")
                  for (name, a), (_, b) in List.zip other reference do expectBitExact a b (what + ": " + name)
          }

          test "the encoder's tensors are exactly a timm checkpoint's, without a head" {
              let images = UnlabelledImages.ofSamples "synthetic" (samplesOf (Array.zeroCreate 8) (syntheticImages 8))
              let result = train { tiny with Epochs = 1 } images
              let expected = Checkpoint.expectedShapes tiny.Encoder
              Expect.sequenceEqual (result.Tensors |> List.map fst) (expected |> List.map fst) "names in timm's order"
              for (name, t), (_, shape) in List.zip result.Tensors expected do Expect.sequenceEqual t.Shape shape name
          } ]

[<Tests>]
let cache =
    testSequenced
    <| testList
        "pretrain cache"
        [ test "the key changes with every part of the configuration and with the data" {
              let identity = "abc"
              let k = Cache.key tiny identity
              Expect.equal (Cache.key tiny identity) k "deterministic"
              Expect.equal k.Length 16 "16 hex digits"
              let variants =
                  [ { tiny with MaskRatio = 0.5 }
                    { tiny with Epochs = 4 }
                    { tiny with Seed = 1 }
                    { tiny with LearningRate = 1e-3 }
                    { tiny with Images = Some 10 }
                    { tiny with HorizontalFlip = false }
                    { tiny with NormalisePixels = false }
                    { tiny with DecoderDepth = 2 }
                    { tiny with Encoder = { tiny.Encoder with Depth = 2 } } ]
              let keys = variants |> List.map (fun c -> Cache.key c identity)
              Expect.equal (List.distinct (k :: keys)).Length (variants.Length + 1) "every change makes a new key"
              Expect.notEqual (Cache.key tiny "abd") k "other data, other key"
          }

          test "the data identity depends on the pixels, not on the labels or the order of loading" {
              let pictures = syntheticImages 6
              let a = UnlabelledImages.ofSamples "x" (samplesOf [| 0; 1; 2; 3; 4; 5 |] pictures)
              let b = UnlabelledImages.ofSamples "x" (samplesOf [| 5; 4; 3; 2; 1; 0 |] pictures)
              Expect.equal (UnlabelledImages.identity a) (UnlabelledImages.identity b) "labels do not count"
              let changed = Array.copy pictures
              changed[3] <- { changed[3] with Pixels = Array.map (fun v -> v ^^^ 1uy) changed[3].Pixels }
              let c = UnlabelledImages.ofSamples "x" (samplesOf (Array.zeroCreate 6) changed)
              Expect.notEqual (UnlabelledImages.identity c) (UnlabelledImages.identity a) "a changed pixel counts"
          }

          test "a miss pretrains and stores, a hit reuses the file untouched, force and corruption retrain" {
              use dir = new TempDir()
              let images = UnlabelledImages.ofSamples "synthetic" (samplesOf (Array.zeroCreate 16) (syntheticImages 16))
              let config = { tiny with Epochs = 1 }
              let log = ResizeArray<string>()
              let first = Cache.getOrTrain config images dir.Path false torch.CPU log.Add
              Expect.isFalse first.Reused "first: pretrained"
              Expect.isTrue (File.Exists first.Path) "checkpoint written"
              Expect.isTrue (File.Exists(Cache.infoPath dir.Path first.Key)) "description written"
              Expect.equal (Path.GetFileName first.Path) (sprintf "mae-%s.safetensors" first.Key) "named by the key"
              let bytes = File.ReadAllBytes first.Path
              let stamp = File.GetLastWriteTimeUtc first.Path
              let second = Cache.getOrTrain config images dir.Path false torch.CPU log.Add
              Expect.isTrue second.Reused "second: reused"
              Expect.equal second.Path first.Path "same file"
              Expect.equal (File.GetLastWriteTimeUtc second.Path) stamp "not rewritten"
              Expect.isTrue (File.ReadAllBytes second.Path = bytes) "same bytes"
              let other = Cache.getOrTrain { config with Seed = 9 } images dir.Path false torch.CPU log.Add
              Expect.isFalse other.Reused "another configuration: a miss"
              Expect.notEqual other.Path first.Path "another file"
              let forced = Cache.getOrTrain config images dir.Path true torch.CPU log.Add
              Expect.isFalse forced.Reused "force: pretrained again"
              Expect.isTrue (File.ReadAllBytes forced.Path = bytes) "deterministic: the same weights again"
              File.WriteAllBytes(first.Path, bytes[.. bytes.Length / 2])
              let repaired = Cache.getOrTrain config images dir.Path false torch.CPU log.Add
              Expect.isFalse repaired.Reused "a truncated file is not a hit"
              Expect.isTrue (File.ReadAllBytes repaired.Path = bytes) "rewritten whole"
              Expect.isEmpty (Directory.GetFiles(dir.Path, "*.tmp")) "no temporary files left"
          }

          test "the cached checkpoint loads as a backbone with the recorded heads" {
              use dir = new TempDir()
              let images = UnlabelledImages.ofSamples "synthetic" (samplesOf (Array.zeroCreate 8) (syntheticImages 8))
              let entry = Cache.getOrTrain { tiny with Epochs = 1 } images dir.Path false torch.CPU ignore
              let ck = Checkpoint.read entry.Path None
              Expect.equal ck.Config tiny.Encoder "the encoder's architecture, heads included"
              use model = Checkpoint.toModel LoadOptions.defaults ck
              use x = torch.zeros (2L, 3L, 8L, 8L)
              use features = model.ForwardFeatures x
              Expect.sequenceEqual features.shape [| 2L; 17L; 16L |] "features"
          }

          test "the default directory follows XDG_CACHE_HOME" {
              let saved = Environment.GetEnvironmentVariable "XDG_CACHE_HOME"
              try
                  Environment.SetEnvironmentVariable("XDG_CACHE_HOME", "/tmp/somewhere")
                  Expect.equal (Cache.defaultDirectory ()) "/tmp/somewhere/prompting/backbones" "XDG"
                  Environment.SetEnvironmentVariable("XDG_CACHE_HOME", null)
                  Expect.stringEnds (Cache.defaultDirectory ()) "/.cache/prompting/backbones" "home"
              finally
                  Environment.SetEnvironmentVariable("XDG_CACHE_HOME", saved)
          } ]

[<Tests>]
let configuration =
    testList
        "pretrain configuration"
        [ test "invalid configurations are refused with one line naming the option" {
              let cases =
                  [ { tiny with MaskRatio = 1.0 }, [ "--mask-ratio" ]
                    { tiny with MaskRatio = 0.0 }, [ "--mask-ratio" ]
                    { tiny with Epochs = 0 }, [ "--epochs" ]
                    { tiny with BatchSize = 0 }, [ "--batch-size" ]
                    { tiny with DecoderWidth = 10 }, [ "--decoder-width 10"; "multiple of 4" ]
                    { tiny with DecoderHeads = 3 }, [ "--decoder-width 8"; "--decoder-heads 3" ]
                    { tiny with LearningRate = 0.0 }, [ "--lr" ]
                    { tiny with Images = Some 0 }, [ "--images" ]
                    { tiny with CropScaleMin = 0.0 }, [ "--crop-scale" ]
                    { tiny with Encoder = { tiny.Encoder with Width = 18; Heads = 3 } }, [ "--width 18" ]
                    { tiny with Encoder = { tiny.Encoder with Classes = 10 } }, [ "classes" ]
                    { tiny with Encoder = { tiny.Encoder with PatchSize = 8 } }, [ "1 patch" ] ]
              for config, fragments in cases do
                  expectMessage (promptingError (String.Join(" ", fragments)) (fun () -> MaeConfig.validate config)) fragments "validate"
          }

          test "visible patches: a quarter of 49 at 0.75, never none nor all" {
              Expect.equal (MaeConfig.visiblePatches MaeConfig.demo) 12 "49 patches, 75% hidden"
              Expect.equal (MaeConfig.visiblePatches { tiny with MaskRatio = 0.99 }) 1 "at least one visible"
              Expect.equal (MaeConfig.visiblePatches { tiny with MaskRatio = 0.01 }) 15 "at least one hidden"
          }

          test "the learning rate warms up linearly, then decays by a cosine to zero" {
              let c = { tiny with Epochs = 4; WarmupEpochs = 1.0; LearningRate = 1.0 }
              Expect.floatClose Accuracy.high (Pretraining.learningRate c 10 0) 0.1 "first step"
              Expect.floatClose Accuracy.high (Pretraining.learningRate c 10 9) 1.0 "end of warm-up"
              Expect.floatClose Accuracy.high (Pretraining.learningRate c 10 25) 0.5 "half-way through the decay"
              Expect.isLessThan (Pretraining.learningRate c 10 39) 0.01 "near zero at the end"
          } ]
