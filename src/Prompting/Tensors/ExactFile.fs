namespace Prompting.Tensors

open System
open System.IO
open System.Text
open Prompting

/// A float64 array with a shape: state that must survive a save and load bit for bit (class
/// statistics, Gram matrices), which float32 safetensors would round.
[<NoEquality; NoComparison>]
type ExactTensor =
    { Shape: int64[]
      Values: float[] }

/// Named float64 tensors in one small binary file: "PRXT1", the count, then per tensor its UTF-8
/// name, rank, dimensions and little-endian values. Written atomically; read with every size
/// checked against the file's length before anything is allocated.
module ExactFile =
    let private magic = "PRXT1"

    let write (path: string) (tensors: (string * ExactTensor) list) =
        Files.writeAtomic path (fun tmp ->
            use stream = File.Create tmp
            use w = new BinaryWriter(stream, UTF8Encoding false)
            w.Write(Encoding.ASCII.GetBytes magic)
            w.Write(tensors.Length)
            for name, t in tensors do
                if HostTensor.elementCount t.Shape <> int64 t.Values.Length then
                    invalidArg "tensors" (sprintf "%s: shape %A needs %d values, got %d" name t.Shape (HostTensor.elementCount t.Shape) t.Values.Length)
                w.Write name
                w.Write t.Shape.Length
                for d in t.Shape do w.Write d
                for v in t.Values do w.Write v)

    let read (path: string) : (string * ExactTensor) list =
        if not (File.Exists path) then Errors.fail "%s: not found" path
        use stream = File.OpenRead path
        use r = new BinaryReader(stream, UTF8Encoding false)
        let corrupt (what: string) = Errors.fail "%s: corrupt state file (%s)" path what
        let remaining () = stream.Length - stream.Position
        try
            if Encoding.ASCII.GetString(r.ReadBytes magic.Length) <> magic then corrupt "not a Prompting state file"
            let count = r.ReadInt32()
            if count < 0 || int64 count > remaining () then corrupt "tensor count"
            [ for _ in 1 .. count ->
                  let name = r.ReadString()
                  let rank = r.ReadInt32()
                  if rank < 0 || int64 rank * 8L > remaining () then corrupt (sprintf "%s: rank" name)
                  let shape = Array.init rank (fun _ -> r.ReadInt64())
                  let n = HostTensor.checkedElementCount (sprintf "%s: %s" path name) shape
                  if n > remaining () / 8L then corrupt (sprintf "%s: %d values but %d bytes left" name n (remaining ()))
                  name, { Shape = shape; Values = Array.init (int n) (fun _ -> r.ReadDouble()) } ]
            |> fun tensors ->
                if remaining () <> 0L then corrupt "trailing bytes"
                tensors
        with :? EndOfStreamException -> corrupt "truncated"
