module Prompting.Tests.Cli

open System
open System.Diagnostics
open System.IO
open Expecto
open Prompting.Tensors
open Prompting.Tests.Fixtures

/// The built `prompting` CLI beside this test binary's configuration.
let private cliDll =
    let config = if AppContext.BaseDirectory.Contains "/Debug/" then "Debug" else "Release"
    Path.Combine(root, "src", "Prompting.Cli", "bin", config, "net10.0", "prompting.dll")

/// Runs the real executable in a child process in a working directory ("": this one): exit code,
/// stdout, stderr.
let runCliIn (workingDirectory: string) (args: string list) =
    let psi = ProcessStartInfo("dotnet", cliDll :: args, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    if workingDirectory <> "" then psi.WorkingDirectory <- workingDirectory
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.WaitForExit()
    p.ExitCode, out.Result, err.Result

/// Runs the real executable in a child process: exit code, stdout, stderr.
let runCli (args: string list) = runCliIn "" args

/// A failure: non-zero exit and exactly one line on stderr that contains every fragment
/// (case-insensitive); returns that line.
let expectOneLineError (args: string list) (fragments: string list) =
    let code, stdout, err = runCli args
    Expect.notEqual code 0 (sprintf "non-zero exit for %A (stdout: %s)" args stdout)
    let lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.filter (fun l -> l.Trim() <> "")
    Expect.equal lines.Length 1 (sprintf "one line on stderr, got:\n%s" err)
    for f in fragments do
        Expect.stringContains (lines[0].ToLowerInvariant()) (f.ToLowerInvariant()) (sprintf "stderr names %s" f)
    lines[0]

/// A minimal 24-bit BMP writer, so image tests need no encoder package.
let writeBmp (path: string) (width: int) (height: int) (pixel: int -> int -> byte * byte * byte) =
    let stride = (width * 3 + 3) / 4 * 4
    let size = 54 + stride * height
    let bytes = Array.zeroCreate<byte> size
    let put (offset: int) (value: int) = BitConverter.GetBytes(value).CopyTo(bytes, offset)
    bytes[0] <- byte 'B'
    bytes[1] <- byte 'M'
    put 2 size
    put 10 54
    put 14 40
    put 18 width
    put 22 height
    BitConverter.GetBytes(1us).CopyTo(bytes, 26)
    BitConverter.GetBytes(24us).CopyTo(bytes, 28)
    for y in 0 .. height - 1 do
        for x in 0 .. width - 1 do
            let r, g, b = pixel x y
            let o = 54 + (height - 1 - y) * stride + x * 3
            bytes[o] <- b
            bytes[o + 1] <- g
            bytes[o + 2] <- r
    Directory.CreateDirectory(Path.GetDirectoryName path) |> ignore
    File.WriteAllBytes(path, bytes)

let private microArgs = [ "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"; "--device"; "cpu" ]

[<Tests>]
let tests =
    testList
        "cli"
        [ test "predict --input writes timm's logits (child process)" {
              let out = Path.Combine(tempDir (), "logits.npy")
              let code, _, err = runCli ([ "predict" ] @ microArgs @ [ "--input"; fixture "input_32.npy"; "--output"; out ])
              Expect.equal code 0 err
              let expected = Npy.read (fixture "expected_logits_32.npy")
              let actual = Npy.read out
              Expect.equal actual.Shape expected.Shape "shape"
              Expect.isLessThan (relativeError actual.Values expected.Values) 1e-4 "logits"
          }

          test "predict --features from npz at a resampled size (in-process)" {
              let out = Path.Combine(tempDir (), "features.npy")
              let code =
                  Prompting.Cli.Program.run
                      [| "predict"; "--checkpoint"; fixture "vit_micro.npz"; "--heads"; "3"; "--input"; fixture "input_48.npy"
                         "--image-size"; "48"; "--features"; "--batch-size"; "1"; "--output"; out |]
              Expect.equal code 0 "exit code"
              let expected = Npy.read (fixture "expected_features_48.npy")
              Expect.isLessThan (relativeError (Npy.read out).Values expected.Values) 1e-4 "features"
          }

          test "predict --images writes top-5 CSV rows in sorted file order" {
              let dir = tempDir ()
              let images = Path.Combine(dir, "images")
              writeBmp (Path.Combine(images, "b.bmp")) 40 30 (fun x y -> byte (x * 6), byte (y * 8), 128uy)
              writeBmp (Path.Combine(images, "a.bmp")) 33 33 (fun x _ -> 255uy, byte (x * 7), 0uy)
              writeBmp (Path.Combine(images, "sub", "c.bmp")) 20 50 (fun _ y -> byte (y * 5), 0uy, 200uy)
              let out = Path.Combine(dir, "top5.csv")
              let code, _, err = runCli ([ "predict" ] @ microArgs @ [ "--images"; images; "--output"; out ])
              Expect.equal code 0 err
              let lines = File.ReadAllLines out
              Expect.equal lines[0] "file,top1,top2,top3,top4,top5" "header"
              Expect.equal (lines[1..] |> Array.map (fun l -> l.Split(',')[0])) [| "a.bmp"; "b.bmp"; "sub/c.bmp" |] "sorted names"
              for line in lines[1..] do
                  let classes = line.Split(',')[1..] |> Array.map int
                  Expect.equal (Array.distinct classes).Length 5 "five distinct classes"
                  Expect.all classes (fun c -> c >= 0 && c < 10) "class indices in range"
          }

          test "predict on images agrees with predict on the same preprocessed array" {
              let dir = tempDir ()
              let image = Path.Combine(dir, "one.bmp")
              writeBmp image 45 36 (fun x y -> byte (x * 5), byte (y * 7), byte ((x + y) * 3))
              let features = Path.Combine(dir, "f.npy")
              let code, _, err = runCli ([ "predict" ] @ microArgs @ [ "--images"; image; "--features"; "--output"; features ])
              Expect.equal code 0 err
              let pixels = Prompting.Images.decode image |> Prompting.Images.preprocess 32 Prompting.Vit.Preprocessing.augreg
              let npy = Path.Combine(dir, "x.npy")
              Npy.write npy (HostTensor.create [| 1L; 3L; 32L; 32L |] pixels)
              let viaArray = Path.Combine(dir, "g.npy")
              let code2, _, err2 = runCli ([ "predict" ] @ microArgs @ [ "--input"; npy; "--features"; "--output"; viaArray ])
              Expect.equal code2 0 err2
              Expect.isLessThan (relativeError (Npy.read features).Values (Npy.read viaArray).Values) 1e-6 "same features"
          }

          test "scripts load the natives and run predict through dotnet fsi" {
              let out = Path.Combine(tempDir (), "script.npy")
              let script = Path.Combine(root, "scripts", "predict.fsx")
              let psi =
                  ProcessStartInfo("dotnet", [ "fsi"; script; "--"; "--checkpoint"; fixture "vit_micro.safetensors"; "--heads"; "3"
                                               "--input"; fixture "input_32.npy"; "--output"; out ],
                                   RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
              use p = Process.Start psi
              let err = p.StandardError.ReadToEndAsync()
              p.StandardOutput.ReadToEnd() |> ignore
              p.WaitForExit()
              Expect.equal p.ExitCode 0 err.Result
              let expected = Npy.read (fixture "expected_logits_32.npy")
              Expect.isLessThan (relativeError (Npy.read out).Values expected.Values) 1e-4 "logits"
          }

          test "methods: published prompt parameter counts for ViT-B/16 and 10 tasks" {
              let code, out, err = runCli [ "methods"; "--arch"; "vit-base-patch16-224"; "--tasks"; "10"; "--classes"; "100" ]
              Expect.equal code 0 err
              let rows =
                  out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                  |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                  |> Array.map (fun cols -> cols[0], cols[1..] |> Array.map int64)
                  |> Map.ofArray
              // L2P: 10 x 5 x 768 prompts + 10 x 768 keys; VQ: 5 x (10 x 8 x 768 + 10 x 768);
              // CODA: 5 x (100 x 8 x 768 + 2 x 100 x 768). Head: 768 x 100 + 100.
              Expect.equal rows["l2p"] [| 46_080L; 0L; 76_900L; 122_980L |] "l2p"
              Expect.equal rows["vq-prompt"].[0] 345_600L "vq-prompt"
              Expect.equal rows["coda-prompt"].[0] 3_840_000L "coda-prompt"
              Expect.equal rows["full"].[1] 85_798_656L "full fine-tuning trains the whole backbone"
              Expect.equal rows["simplecil"] [| 0L; 0L; 0L; 0L |] "SimpleCIL trains nothing"
              // SLCA: the whole backbone and one head over the 100 classes (SLCA's per-task heads, concatenated).
              Expect.equal rows["slca"] [| 0L; 85_798_656L; 76_900L; 85_875_556L |] "slca"
              let code2, details, err2 = runCli [ "methods"; "--details" ]
              Expect.equal code2 0 err2
              let slca = details.Split('\n') |> Array.find (fun l -> l.StartsWith "slca ")
              for fragment in [ "aligned"; "full covariance"; "logit norm 0.1"; "SGD(momentum 0.9) lr 0.0001 (head 0.01)"; "x0.1 at epochs 18" ] do
                  Expect.stringContains slca fragment "`prompting methods --details` shows slca's head and schedule"
          }

          test "benchmarks lists every benchmark" {
              let code, out, err = runCli [ "benchmarks"; "--names-only" ]
              Expect.equal code 0 err
              Expect.equal (out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun l -> l.Trim()) |> List.ofArray)
                  (Prompting.Engine.Benchmarks.all |> List.map (fun b -> b.Name)) "names"
              let code2, out2, _ = runCli [ "benchmarks" ]
              Expect.equal code2 0 "plain listing"
              Expect.stringContains out2 "--data" "explains the data each takes"
          }

          test "bad input: one clear line, non-zero exit, earlier results kept" {
              let dir = tempDir ()
              let out = Path.Combine(dir, "keep.npy")
              File.WriteAllText(out, "earlier result")
              let corrupt = Path.Combine(dir, "corrupt.safetensors")
              File.WriteAllBytes(corrupt, (File.ReadAllBytes(fixture "vit_micro.safetensors"))[.. 5000])
              let cases =
                  [ [ "predict"; "--checkpoint"; corrupt; "--input"; fixture "input_32.npy"; "--output"; out ], 1, "corrupt.safetensors"
                    [ "predict"; "--checkpoint"; Path.Combine(dir, "none.safetensors"); "--input"; fixture "input_32.npy"; "--output"; out ], 1, "none.safetensors"
                    microArgs @ [ "--input"; fixture "expected_logits_32.npy"; "--output"; out ] |> List.append [ "predict" ], 1, "input"
                    microArgs @ [ "--output"; out ] |> List.append [ "predict" ], 1, "--input or --images"
                    [ "predict"; "--checkpoint"; fixture "vit_micro.safetensors"; "--device"; "tpu"; "--input"; fixture "input_32.npy"; "--output"; out ], 1, "tpu"
                    [ "predict"; "--checkpoint"; fixture "vit_micro.safetensors" ], 2, "--output"
                    [ "frobnicate" ], 2, "frobnicate" ]
              for args, expectedCode, mention in cases do
                  let code, _, err = runCli args
                  Expect.equal code expectedCode (sprintf "exit code of %A" args)
                  let lines = err.Trim().Split('\n')
                  Expect.equal lines.Length 1 (sprintf "one line for %A: %s" args err)
                  Expect.stringContains err mention "names the problem"
              Expect.equal (File.ReadAllText out) "earlier result" "output untouched"
          } ]
