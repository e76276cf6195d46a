namespace Prompting.Engine

open System.Text.Json
open System.Text.Json.Serialization
open Prompting

/// JSON for the pure configuration records (F# records and unions, via FSharp.SystemTextJson).
module Json =
    let options =
        let o = JsonSerializerOptions(WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)
        o.Converters.Add(
            JsonFSharpConverter(
                unionEncoding =
                    (JsonUnionEncoding.ExternalTag
                     ||| JsonUnionEncoding.UnwrapFieldlessTags
                     ||| JsonUnionEncoding.UnwrapOption
                     ||| JsonUnionEncoding.NamedFields)
            )
        )
        o

    let serialize (value: 'T) = JsonSerializer.Serialize<'T>(value, options)

    /// Reads JSON into 'T; anything malformed (syntax, missing fields, wrong types, `null`) is one
    /// line naming `what`.
    let deserialize<'T> (what: string) (json: string) : 'T =
        let value =
            try JsonSerializer.Deserialize<'T>(json, options)
            with
            | :? JsonException
            | :? System.NotSupportedException
            | :? System.InvalidOperationException
            | :? System.FormatException
            | :? System.ArgumentException
            | :? System.OverflowException as e -> Errors.fail "%s: invalid configuration JSON (%s)" what e.Message
        if isNull (box value) then Errors.fail "%s: invalid configuration JSON (null)" what
        value

    /// Paths where two JSON documents differ, as "path: old -> new" (for refusing a resume).
    let differences (before: string) (after: string) =
        let rec walk (path: string) (a: JsonElement) (b: JsonElement) =
            match a.ValueKind, b.ValueKind with
            | JsonValueKind.Object, JsonValueKind.Object ->
                let names = Seq.append [ for p in a.EnumerateObject() -> p.Name ] [ for p in b.EnumerateObject() -> p.Name ] |> Seq.distinct
                [ for n in names do
                      let sub = if path = "" then n else path + "." + n
                      match a.TryGetProperty n, b.TryGetProperty n with
                      | (true, x), (true, y) -> yield! walk sub x y
                      // An absent field reads as None: a field added since the run began is no difference.
                      | (true, x), _ when x.ValueKind = JsonValueKind.Null -> ()
                      | _, (true, y) when y.ValueKind = JsonValueKind.Null -> ()
                      | (true, x), _ -> yield sprintf "%s: %s -> (absent)" sub (x.GetRawText())
                      | _, (true, y) -> yield sprintf "%s: (absent) -> %s" sub (y.GetRawText())
                      | _ -> () ]
            | JsonValueKind.Array, JsonValueKind.Array when a.GetArrayLength() = b.GetArrayLength() ->
                [ for i in 0 .. a.GetArrayLength() - 1 do yield! walk (sprintf "%s[%d]" path i) (a[i]) (b[i]) ]
            | _ ->
                let x, y = a.GetRawText(), b.GetRawText()
                if x = y then [] else [ sprintf "%s: %s -> %s" path x y ]
        use da = JsonDocument.Parse before
        use db = JsonDocument.Parse after
        walk "" da.RootElement db.RootElement
