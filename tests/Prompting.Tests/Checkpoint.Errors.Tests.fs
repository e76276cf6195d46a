module Prompting.Tests.CheckpointErrorsTests

open System
open System.IO
open System.Text
open Expecto
open Prompting
open Prompting.Tensors
open Prompting.Vit
open Prompting.Tests.TestSupport

let safetensorsFixture () = fixture "vit_micro.safetensors"
let npzFixture () = fixture "vit_micro.npz"

/// (header length, header bytes, data bytes) of a safetensors file.
let splitSafetensors (bytes: byte[]) =
    let n = int (BitConverter.ToInt64(bytes, 0))
    n, bytes[8 .. 8 + n - 1], bytes[8 + n ..]

let joinSafetensors (header: byte[]) (data: byte[]) =
    Array.concat [ BitConverter.GetBytes(int64 header.Length); header; data ]

/// Reads the fixture's tensors in file order, lets `edit` change the list and writes a new file.
let rewriteSafetensors (dir: TempDir) (name: string) (edit: (string * HostTensor) list -> (string * HostTensor) list) =
    let tensors, metadata = Safetensors.readWithMetadata (safetensorsFixture ())
    let path = dir.File name
    Safetensors.writeWithMetadata path metadata (edit tensors)
    path

let rewriteNpz (dir: TempDir) (name: string) (edit: (string * HostTensor) list -> (string * HostTensor) list) =
    let path = dir.File name
    Npz.write path (edit (Npz.read (npzFixture ())))
    path

/// Checkpoint.read must fail with a one-line PromptingError naming the path and the problem.
let expectReadError (path: string) (fragments: string list) =
    let msg = promptingError path (fun () -> Checkpoint.read path None)
    expectMessage msg (path :: fragments) (Path.GetFileName path)
    msg

[<Tests>]
let badFiles =
    testList
        "checkpoint errors"
        [ test "safetensors truncated in the data region" {
              use dir = new TempDir()
              let bytes = File.ReadAllBytes(safetensorsFixture ())
              let n, _, data = splitSafetensors bytes
              let path = dir.File "truncated.safetensors"
              File.WriteAllBytes(path, bytes[.. 8 + n + data.Length / 2 - 1])
              expectReadError path [ "truncated" ] |> ignore
          }

          test "safetensors cut by one byte" {
              use dir = new TempDir()
              let bytes = File.ReadAllBytes(safetensorsFixture ())
              let path = dir.File "short.safetensors"
              File.WriteAllBytes(path, bytes[.. bytes.Length - 2])
              expectReadError path [ "truncated" ] |> ignore
          }

          test "safetensors header length larger than the file" {
              use dir = new TempDir()
              let bytes = File.ReadAllBytes(safetensorsFixture ())
              let claimed = int64 bytes.Length + 1000L
              Array.blit (BitConverter.GetBytes claimed) 0 bytes 0 8
              let path = dir.File "longheader.safetensors"
              File.WriteAllBytes(path, bytes)
              expectReadError path [ "header length"; string claimed; "longer than the file" ] |> ignore
          }

          test "safetensors header length of 2^63-1 (implausible)" {
              use dir = new TempDir()
              let bytes = File.ReadAllBytes(safetensorsFixture ())
              Array.blit (BitConverter.GetBytes Int64.MaxValue) 0 bytes 0 8
              let path = dir.File "huge.safetensors"
              File.WriteAllBytes(path, bytes)
              expectReadError path [ "header length" ] |> ignore
          }

          test "safetensors with an unknown dtype" {
              use dir = new TempDir()
              let _, header, data = splitSafetensors (File.ReadAllBytes(safetensorsFixture ()))
              let text = Encoding.UTF8.GetString header
              let at = text.IndexOf "\"F32\""
              // "F32" -> "Q9" is one byte shorter: pad with a space so the header length stays valid
              let edited = text.Substring(0, at) + "\"Q9\"" + text.Substring(at + 5) + " "
              Expect.equal edited.Length text.Length "same header length"
              let path = dir.File "dtype.safetensors"
              File.WriteAllBytes(path, joinSafetensors (Encoding.UTF8.GetBytes edited) data)
              // the first tensor in the header is blocks.0.attn.proj.bias
              expectReadError path [ "unknown dtype"; "Q9"; "blocks.0.attn.proj.bias" ] |> ignore
          }

          test "safetensors with an invalid JSON header" {
              use dir = new TempDir()
              let _, header, data = splitSafetensors (File.ReadAllBytes(safetensorsFixture ()))
              let i = Array.IndexOf(header, byte ':')
              header[i] <- byte ';'
              let path = dir.File "json.safetensors"
              File.WriteAllBytes(path, joinSafetensors header data)
              expectReadError path [ "invalid JSON" ] |> ignore
          }

          test "safetensors header that is a JSON array" {
              use dir = new TempDir()
              let path = dir.File "array.safetensors"
              File.WriteAllBytes(path, joinSafetensors (Encoding.UTF8.GetBytes "[1, 2, 3]       ") [||])
              expectReadError path [ "not a" ] |> ignore
          }

          test "safetensors with data_offsets that disagree with the shape" {
              use dir = new TempDir()
              let _, header, data = splitSafetensors (File.ReadAllBytes(safetensorsFixture ()))
              let text = Encoding.UTF8.GetString header
              // blocks.0.attn.proj.bias is [48] F32 = 192 bytes at [0,192]; claim [0,196]
              let edited = text.Replace("\"data_offsets\":[0,192]", "\"data_offsets\":[0,196]")
              Expect.notEqual edited text "edited"
              let path = dir.File "offsets.safetensors"
              File.WriteAllBytes(path, joinSafetensors (Encoding.UTF8.GetBytes edited) data)
              expectReadError path [ "blocks.0.attn.proj.bias"; "192"; "196" ] |> ignore
          }

          test "missing key is listed" {
              use dir = new TempDir()
              let path = rewriteSafetensors dir "missing.safetensors" (List.filter (fun (k, _) -> k <> "blocks.1.mlp.fc2.bias"))
              expectReadError path [ "missing keys"; "blocks.1.mlp.fc2.bias" ] |> ignore
          }

          test "several missing keys are all listed" {
              use dir = new TempDir()
              let dropped = set [ "norm.bias"; "blocks.0.attn.qkv.bias"; "head.bias" ]
              let path = rewriteSafetensors dir "missing3.safetensors" (List.filter (fun (k, _) -> not (dropped.Contains k)))
              expectReadError path ("missing keys" :: List.ofSeq dropped) |> ignore
          }

          test "unexpected key is listed" {
              use dir = new TempDir()
              let extra = "blocks.0.attn.extra_scale", HostTensor.create [| 3L |] [| 1.0f; 2.0f; 3.0f |]
              let path = rewriteSafetensors dir "unexpected.safetensors" (fun ts -> ts @ [ extra ])
              expectReadError path [ "unexpected keys"; "blocks.0.attn.extra_scale" ] |> ignore
          }

          test "missing and unexpected keys together" {
              use dir = new TempDir()
              let path =
                  rewriteSafetensors dir "both.safetensors" (fun ts ->
                      ts |> List.map (fun (k, t) -> (if k = "norm.weight" then "final_norm.weight" else k), t))
              expectReadError path [ "missing keys"; "norm.weight"; "unexpected keys"; "final_norm.weight" ] |> ignore
          }

          test "shape mismatch names key, expected and found shapes" {
              use dir = new TempDir()
              let path =
                  rewriteSafetensors dir "shape.safetensors" (fun ts ->
                      ts |> List.map (fun (k, t) -> if k = "norm.weight" then k, HostTensor.create [| 47L |] t.Values[.. 46] else k, t))
              expectReadError path [ "shape mismatch"; "norm.weight"; "expected [48]"; "found [47]" ] |> ignore
          }

          test "shape mismatch in a 2-D weight" {
              use dir = new TempDir()
              let path =
                  rewriteSafetensors dir "shape2.safetensors" (fun ts ->
                      ts |> List.map (fun (k, t) -> if k = "blocks.1.attn.proj.weight" then k, { t with Shape = [| 24L; 96L |] } else k, t))
              expectReadError path [ "blocks.1.attn.proj.weight"; "expected [48, 48]"; "found [24, 96]" ] |> ignore
          }

          test "a PNG image is not a checkpoint" {
              use dir = new TempDir()
              let path = dir.File "picture.png"
              File.Copy(fixture "images/grad_37x29.png", path)
              expectReadError path [ "unrecognised format" ] |> ignore
          }

          test "a PNG image renamed to .safetensors is not a checkpoint" {
              use dir = new TempDir()
              let path = dir.File "picture.safetensors"
              File.Copy(fixture "images/grad_37x29.png", path)
              expectReadError path [ "not a safetensors file" ] |> ignore
          }

          test "a text file is not a checkpoint" {
              use dir = new TempDir()
              let path = dir.File "notes.bin"
              File.WriteAllText(path, "These are not the weights you are looking for.\nSecond line.\n")
              expectReadError path [ "unrecognised format" ] |> ignore
          }

          test "an empty file" {
              use dir = new TempDir()
              let path = dir.File "empty.safetensors"
              File.WriteAllBytes(path, [||])
              expectReadError path [ "0 bytes" ] |> ignore
          }

          test "a nonexistent path" {
              use dir = new TempDir()
              let path = dir.File "nowhere/missing.safetensors"
              expectReadError path [ "not found" ] |> ignore
          }

          test "a PyTorch zip checkpoint is refused with a hint" {
              use dir = new TempDir()
              let path = dir.File "model.pth"
              File.Copy(npzFixture (), path)
              expectReadError path [ "PyTorch"; "safetensors" ] |> ignore
          }

          for fraction in [ 0.1; 0.5; 0.99 ] do
              test (sprintf "npz cut to %.0f%% of its length" (fraction * 100.0)) {
                  use dir = new TempDir()
                  let bytes = File.ReadAllBytes(npzFixture ())
                  let path = dir.File "cut.npz"
                  File.WriteAllBytes(path, bytes[.. int (float bytes.Length * fraction) - 1])
                  expectReadError path [ ".npz" ] |> ignore
              }

          test "npz with a corrupt central directory" {
              use dir = new TempDir()
              let bytes = File.ReadAllBytes(npzFixture ())
              // overwrite the central directory (between its start offset and the end record) with junk
              let eocd = bytes.Length - 22
              Expect.equal (BitConverter.ToUInt32(bytes, eocd)) 0x06054b50u "end of central directory record"
              let cdOffset = int (BitConverter.ToUInt32(bytes, eocd + 16))
              let cdStart =
                  if cdOffset = -1 then bytes.Length / 2 // Zip64: fall back
                  else cdOffset
              for i in cdStart .. min (cdStart + 200) (eocd - 1) do
                  bytes[i] <- 0xA5uy
              let path = dir.File "corrupt.npz"
              File.WriteAllBytes(path, bytes)
              expectReadError path [ ".npz" ] |> ignore
          }

          test "npz member that is not a .npy file" {
              use dir = new TempDir()
              let path = dir.File "junk.npz"
              do
                  use fs = File.Create path
                  use zip = new IO.Compression.ZipArchive(fs, IO.Compression.ZipArchiveMode.Create)
                  use s = zip.CreateEntry("cls.npy").Open()
                  s.Write(Encoding.ASCII.GetBytes "hello, not numpy")
              expectReadError path [ "cls.npy"; "not a .npy file" ] |> ignore
          }

          test "npz with only some of query/key/value in a block" {
              use dir = new TempDir()
              let dropped = "opt/target/Transformer/encoderblock_1/MultiHeadDotProductAttention_1/key/kernel"
              let path = rewriteNpz dir "qkv.npz" (List.filter (fun (k, _) -> k <> dropped))
              expectReadError path [ "incomplete attention kernel"; "encoderblock_1/MultiHeadDotProductAttention_1/key/kernel" ]
              |> ignore
          }

          test "npz missing a bias is reported under its timm name" {
              use dir = new TempDir()
              let dropped = "opt/target/Transformer/encoderblock_0/MlpBlock_3/Dense_1/bias"
              let path = rewriteNpz dir "bias.npz" (List.filter (fun (k, _) -> k <> dropped))
              expectReadError path [ "missing keys"; "blocks.0.mlp.fc2.bias" ] |> ignore
          }

          test "npz with an unknown array reports it as unexpected" {
              use dir = new TempDir()
              let path = rewriteNpz dir "extra.npz" (fun ms -> ms @ [ "opt/target/Transformer/mystery", HostTensor.create [| 1L |] [| 0.0f |] ])
              expectReadError path [ "unexpected keys"; "Transformer/mystery" ] |> ignore
          }

          test "heads that do not divide the width" {
              let path = safetensorsFixture ()
              let msg = promptingError "heads 5" (fun () -> Checkpoint.read path (Some 5))
              expectMessage msg [ path; "48"; "5 heads" ] "heads 5"
          } ]

let private expectSameTensors (a: Checkpoint) (b: Checkpoint) =
    Expect.sequenceEqual (a.Tensors |> Map.keys |> Seq.sort) (b.Tensors |> Map.keys |> Seq.sort) "same keys"
    for KeyValue(name, t) in a.Tensors do
        expectBitExact b.Tensors[name] t name

[<Tests>]
let goodFiles =
    testList
        "checkpoint read"
        [ test "architecture inferred from the safetensors fixture" {
              let ck = Checkpoint.read (safetensorsFixture ()) None
              Expect.equal ck.Format CheckpointFormat.Safetensors "format"
              let c = ck.Config
              Expect.equal c.Width 48 "width"
              Expect.equal c.Depth 2 "depth"
              Expect.equal c.PatchSize 8 "patch"
              Expect.equal c.ImageSize 32 "image size"
              Expect.equal c.InChannels 3 "channels"
              Expect.equal c.MlpHidden 192 "MLP width"
              Expect.equal c.Classes 10 "classes"
              Expect.equal c.Heads 1 "heads default to max 1 (48 / 64)"
              Expect.equal ck.Tensors.Count 32 "tensor count"
          }

          test "heads given explicitly" {
              let ck = Checkpoint.read (safetensorsFixture ()) (Some 3)
              Expect.equal ck.Config.Heads 3 "heads"
              Expect.equal ck.Config.Width 48 "width unchanged"
          }

          test "architecture inferred from the npz fixture matches" {
              let a = Checkpoint.read (safetensorsFixture ()) (Some 3)
              let b = Checkpoint.read (npzFixture ()) (Some 3)
              Expect.equal b.Format CheckpointFormat.GoogleNpz "format"
              Expect.equal b.Config a.Config "config"
          }

          test "npz (prefixed), npz without opt/target/ and safetensors give bit-identical tensors" {
              use dir = new TempDir()
              let stripped =
                  rewriteNpz dir "stripped.npz" (List.map (fun (k, t) ->
                      Expect.isTrue (k.StartsWith "opt/target/") (sprintf "fixture key %s is prefixed" k)
                      k.Substring "opt/target/".Length, t))
              // the rewritten archive really has no prefix
              Expect.isTrue (Npz.read stripped |> List.forall (fun (k, _) -> not (k.StartsWith "opt/"))) "stripped names"
              let fromSafetensors = Checkpoint.read (safetensorsFixture ()) None
              let prefixed = Checkpoint.read (npzFixture ()) None
              let plain = Checkpoint.read stripped None
              expectSameTensors prefixed plain
              // the safetensors fixture was written independently (timm names, by the Python script):
              // this checks every transposition and the q/k/v concatenation of the key map
              expectSameTensors fromSafetensors prefixed
              Expect.equal plain.Config fromSafetensors.Config "config"
          }

          test "a re-exported safetensors file reads back identically" {
              use dir = new TempDir()
              let original = Checkpoint.read (safetensorsFixture ()) None
              let path = rewriteSafetensors dir "copy.safetensors" (List.rev)
              let copy = Checkpoint.read path None
              expectSameTensors original copy
          } ]

/// The fixture with one textual edit of its JSON header (the header length is recomputed).
let editHeader (dir: TempDir) (name: string) (find: string) (replace: string) =
    let _, header, data = splitSafetensors (File.ReadAllBytes(safetensorsFixture ()))
    let text = Encoding.UTF8.GetString header
    let at = text.IndexOf find
    Expect.isGreaterThanOrEqual at 0 (sprintf "fixture header contains %s" find)
    let edited = text.Substring(0, at) + replace + text.Substring(at + find.Length)
    let path = dir.File name
    File.WriteAllBytes(path, joinSafetensors (Encoding.UTF8.GetBytes edited) data)
    path

[<Tests>]
let malformedHeaders =
    testList
        "checkpoint errors (malformed headers)"
        [ // the first header entry is blocks.0.attn.proj.bias: {"dtype":"F32","shape":[48],"data_offsets":[0,192]}
          for find, replace, fragments in
              [ "\"shape\":[48]", "\"shape\":\"48\"", [ "blocks.0.attn.proj.bias"; "'shape'" ]
                "\"shape\":[48]", "\"shape\":[48.5]", [ "blocks.0.attn.proj.bias"; "'shape'" ]
                "\"shape\":[48]", "\"shape\":[\"48\"]", [ "blocks.0.attn.proj.bias"; "'shape'" ]
                "\"shape\":[48]", "\"shape\":[-48]", [ "blocks.0.attn.proj.bias"; "'shape'" ]
                "\"shape\":[48]", "\"shape\":[4294967296,4294967296,48]", [ "blocks.0.attn.proj.bias"; "too many elements" ]
                "\"dtype\":\"F32\"", "\"dtype\":5", [ "blocks.0.attn.proj.bias"; "dtype" ]
                "\"dtype\":\"F32\"", "\"dtype\":null", [ "blocks.0.attn.proj.bias"; "dtype" ]
                "\"data_offsets\":[0,192]", "\"data_offsets\":\"0,192\"", [ "blocks.0.attn.proj.bias"; "'data_offsets'" ]
                "\"data_offsets\":[0,192]", "\"data_offsets\":[0,1.5e300]", [ "blocks.0.attn.proj.bias"; "'data_offsets'" ]
                "\"data_offsets\":[0,192]", "\"data_offsets\":[-4,188]", [ "blocks.0.attn.proj.bias"; "'data_offsets'" ]
                "\"data_offsets\":[0,192]", "\"data_offsets\":[0]", [ "blocks.0.attn.proj.bias"; "data_offsets" ]
                "\"dtype\":\"F32\",", "", [ "blocks.0.attn.proj.bias"; "no 'dtype'" ]
                "{\"blocks.0.attn.proj.bias\":{\"dtype\":\"F32\",\"shape\":[48],\"data_offsets\":[0,192]}",
                "{\"blocks.0.attn.proj.bias\":[48]",
                [ "blocks.0.attn.proj.bias"; "expected an object" ] ] do
              test (sprintf "header edit %s -> %s" find (if replace = "" then "(removed)" else replace)) {
                  use dir = new TempDir()
                  let path = editHeader dir "edited.safetensors" find replace
                  expectReadError path fragments |> ignore
              }

          test "header with bytes that are not UTF-8 in a tensor name" {
              use dir = new TempDir()
              let _, header, data = splitSafetensors (File.ReadAllBytes(safetensorsFixture ()))
              // "blocks..." -> "\xFFlocks...": same length, invalid UTF-8 inside a JSON string
              let i = Array.IndexOf(header, byte 'b')
              header[i] <- 0xFFuy
              let path = dir.File "utf8.safetensors"
              File.WriteAllBytes(path, joinSafetensors header data)
              expectReadError path [ "UTF-8" ] |> ignore
          }

          for shape in [ "(-1,)"; "(2, -2)"; "(a,)"; "(4294967296, 4294967296)" ] do
              test (sprintf "npz member with .npy shape %s" shape) {
                  use dir = new TempDir()
                  let path = dir.File "badshape.npz"
                  do
                      use fs = File.Create path
                      use zip = new IO.Compression.ZipArchive(fs, IO.Compression.ZipArchiveMode.Create)
                      use s = zip.CreateEntry("cls.npy").Open()
                      s.Write(
                          Prompting.Tests.TensorsTests.npyBytes
                              (sprintf "{'descr': '<f4', 'fortran_order': True, 'shape': %s, }" shape)
                              (Array.zeroCreate 64)
                      )
                  expectReadError path [ "cls.npy"; "shape" ] |> ignore
              }

          // Deterministic random corruption: reading may succeed (a changed weight is still a weight)
          // but any failure must be a PromptingError, never another exception.
          for name, ext in [ "vit_micro.safetensors", ".safetensors"; "vit_micro.npz", ".npz" ] do
              test (sprintf "random byte corruption of %s fails only with PromptingError" name) {
                  use dir = new TempDir()
                  let original = File.ReadAllBytes(fixture name)
                  let headerEnd =
                      if ext = ".npz" then original.Length else 8 + int (BitConverter.ToInt64(original, 0))
                  let rng = Random 20240601
                  let mutable failures = 0
                  for trial in 0 .. 299 do
                      let bytes = Array.copy original
                      for _ in 1 .. 1 + rng.Next 4 do
                          // half of the changes hit the header (for npz: anywhere, incl. the zip directory)
                          let pos = if rng.Next 2 = 0 then rng.Next headerEnd else rng.Next bytes.Length
                          bytes[pos] <- byte (rng.Next 256)
                      let path = dir.File(sprintf "fuzz%d%s" trial ext)
                      File.WriteAllBytes(path, bytes)
                      try
                          Checkpoint.read path None |> ignore
                      with
                      | PromptingError msg ->
                          failures <- failures + 1
                          expectMessage msg [ path ] (sprintf "trial %d" trial)
                      | e -> failtestf "trial %d: %s escaped: %s" trial (e.GetType().Name) e.Message
                      File.Delete path
                  Expect.isGreaterThan failures 0 "some corruptions are detected"
              } ]
