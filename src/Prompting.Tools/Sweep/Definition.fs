namespace Prompting.Sweep

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open System.Text.Json.Nodes
open Prompting

/// One grid axis: a field of the run configuration, named by its JSON path (`Method.Recipe.LearningRate`,
/// `Method.Groups[0].Length`, `Seed`), and the JSON values it takes.
type GridAxis = { Field: string; Values: string list }

/// A sweep as data: the run options every point shares, the methods, the seeds and the grid.
/// Each point is `prompting run --config POINT.json`, where POINT.json is the run configuration
/// built for (method, seed) from `Base` and `RunOptions`, with the grid's values set at their paths.
type SweepSpec =
    { /// A run configuration JSON file (a RunConfig, or a run's config.json) the points start from.
      Base: string option
      /// Options of `prompting run` (benchmark, data, checkpoint, tasks, epochs, ...).
      RunOptions: string list
      Methods: string list
      /// Run options of single methods, after the shared ones (e.g. joint: --scenario joint).
      MethodOptions: (string * string list) list
      Seeds: int list
      Grid: GridAxis list
      /// Choose each method's grid point on this held-out fraction of the training data first,
      /// then run only that point on all of it (see Selection).
      Select: float option
      /// Choose each method's grid point on this named split of the benchmark first (`tune`:
      /// train800 against val200, FGVC's train against val), then run only that point on the
      /// run options' split (the benchmark's default: `final`) (see Selection).
      SelectSplit: string option }

/// One point: its deterministic name, its coordinates and its whole run configuration (JSON).
type SweepPoint =
    { Name: string
      Method: string
      Seed: int
      /// (field, JSON value) in grid order.
      Overrides: (string * string) list
      Config: string }

/// Pure parts of a sweep: JSON paths, overrides checked against the base document, point names.
module Definition =
    /// A JSON path: `A.B[2].C` as [Name "A"; Name "B"; Index 2; Name "C"].
    type Segment =
        | Name of string
        | Index of int

    let parsePath (path: string) : Segment list =
        let fail () = Errors.fail "sweep: grid field '%s': expected a JSON path such as Method.Recipe.LearningRate or Method.Groups[0].Length" path
        if String.IsNullOrWhiteSpace path then fail ()
        [ for part in path.Split '.' do
              let bracket = part.IndexOf '['
              let name = if bracket < 0 then part else part.Substring(0, bracket)
              if name = "" || name |> Seq.exists (fun c -> not (Char.IsLetterOrDigit c || c = '_')) then fail ()
              yield Name name
              if bracket >= 0 then
                  let mutable rest = part.Substring bracket
                  while rest <> "" do
                      let close = rest.IndexOf ']'
                      if not (rest.StartsWith "[") || close < 0 then fail ()
                      match Int32.TryParse(rest.Substring(1, close - 1), NumberStyles.None, CultureInfo.InvariantCulture) with
                      | true, i -> yield Index i
                      | _ -> fail ()
                      rest <- rest.Substring(close + 1) ]

    let private kindName (kind: JsonValueKind) =
        match kind with
        | JsonValueKind.Number -> "a number"
        | JsonValueKind.String -> "a string"
        | JsonValueKind.True
        | JsonValueKind.False -> "true or false"
        | JsonValueKind.Array -> "an array"
        | JsonValueKind.Object -> "an object"
        | _ -> "null"

    let private nodeKind (node: JsonNode) =
        if isNull node then JsonValueKind.Null else node.GetValueKind()

    /// Whether a value of kind `value` may replace one of kind `existing`. Null stands for an
    /// absent option, so it may be replaced by anything and may replace anything; unions are
    /// written as a string (no fields) or an object (with fields), so those two interchange.
    let compatible (existing: JsonValueKind) (value: JsonValueKind) =
        let isBool k = k = JsonValueKind.True || k = JsonValueKind.False
        let isUnion k = k = JsonValueKind.String || k = JsonValueKind.Object
        existing = JsonValueKind.Null
        || value = JsonValueKind.Null
        || existing = value
        || (isBool existing && isBool value)
        || (isUnion existing && isUnion value)

    /// A value given on the command line: JSON when it parses as JSON, else a string.
    let valueOfText (text: string) =
        let t = text.Trim()
        try
            use doc = JsonDocument.Parse t
            doc.RootElement.GetRawText()
        with :? JsonException -> JsonSerializer.Serialize t

    /// Splits `a,b,{"c":1,"d":2}` at the commas outside brackets, braces and quotes.
    let splitValues (text: string) =
        let parts = ResizeArray<string>()
        let current = StringBuilder()
        let mutable depth = 0
        let mutable quoted = false
        let mutable escaped = false
        for c in text do
            if quoted then
                current.Append c |> ignore
                if escaped then escaped <- false
                elif c = '\\' then escaped <- true
                elif c = '"' then quoted <- false
            else
                match c with
                | ',' when depth = 0 ->
                    parts.Add(current.ToString())
                    current.Clear() |> ignore
                | '"' ->
                    quoted <- true
                    current.Append c |> ignore
                | '['
                | '{' ->
                    depth <- depth + 1
                    current.Append c |> ignore
                | ']'
                | '}' ->
                    depth <- depth - 1
                    current.Append c |> ignore
                | _ -> current.Append c |> ignore
        parts.Add(current.ToString())
        List.ofSeq parts

    /// `FIELD=V1,V2,...` from `--grid`.
    let parseGridFlag (text: string) : GridAxis =
        let eq = text.IndexOf '='
        if eq <= 0 || eq = text.Length - 1 then
            Errors.fail "sweep: --grid %s: expected FIELD=V1,V2,... (for example Method.Recipe.LearningRate=0.01,0.001)" text
        let field = text.Substring(0, eq).Trim()
        parsePath field |> ignore
        let values = splitValues (text.Substring(eq + 1)) |> List.map valueOfText
        { Field = field; Values = values }

    let private describePath (segments: Segment list) =
        let sb = StringBuilder()
        for s in segments do
            match s with
            | Name n -> (if sb.Length > 0 then sb.Append '.' else sb).Append n |> ignore
            | Index i -> sb.Append(sprintf "[%d]" i) |> ignore
        sb.ToString()

    /// Sets `value` (JSON text) at `field` in `root`, which must already have that field with a
    /// compatible JSON type. `what` names the configuration in messages (e.g. "method dualprompt").
    let setAt (what: string) (root: JsonNode) (field: string) (value: string) =
        let segments = parsePath field
        let valueNode =
            try JsonNode.Parse value
            with :? JsonException -> Errors.fail "sweep: grid field %s: value %s is not JSON" field value
        let valueKind = nodeKind valueNode
        let rec walk (parent: JsonNode) (seen: Segment list) (rest: Segment list) =
            match rest with
            | [] -> ()
            | segment :: tail ->
                let here = describePath (List.rev (segment :: seen))
                let containerPath = describePath (List.rev seen)
                let inContainer = if containerPath = "" then "the run configuration" else containerPath
                let child, assign =
                    match segment, parent with
                    | Name n, (:? JsonObject as o) ->
                        if o.ContainsKey n then o[n], (fun (v: JsonNode) -> o[n] <- v)
                        else
                            let fields = [ for KeyValue(k, _) in o -> k ] |> String.concat ", "
                            Errors.fail "sweep: grid field %s: %s has no field %s (%s: %s)" field inContainer n what fields
                    | Index i, (:? JsonArray as a) ->
                        if i >= a.Count then
                            Errors.fail "sweep: grid field %s: %s has %d entries (%s), so [%d] does not exist" field inContainer a.Count what i
                        a[i], (fun (v: JsonNode) -> a[i] <- v)
                    | Name n, _ -> Errors.fail "sweep: grid field %s: %s is %s, not an object with field %s (%s)" field inContainer (kindName (nodeKind parent)) n what
                    | Index i, _ -> Errors.fail "sweep: grid field %s: %s is %s, not an array to index with [%d] (%s)" field inContainer (kindName (nodeKind parent)) i what
                if tail.IsEmpty then
                    let existing = nodeKind child
                    if not (compatible existing valueKind) then
                        Errors.fail "sweep: grid field %s: value %s is %s, but %s is %s in the run configuration (%s)"
                            field value (kindName valueKind) here (kindName existing) what
                    assign (if isNull valueNode then null else valueNode.DeepClone())
                elif isNull child then
                    Errors.fail "sweep: grid field %s: %s is null in the run configuration (%s), so it has no field to set" field here what
                else walk child (segment :: seen) tail
        walk root [] segments

    /// The base configuration JSON with the overrides set, indented; every path checked.
    let apply (what: string) (baseJson: string) (overrides: (string * string) list) =
        let root =
            try JsonNode.Parse baseJson
            with :? JsonException as e -> Errors.fail "sweep: the run configuration (%s) is not JSON: %s" what e.Message
        for field, value in overrides do setAt what root field value
        root.ToJsonString(JsonSerializerOptions(WriteIndented = true))

    /// The text a value takes in a point name: strings without quotes, characters other than
    /// letters, digits and `.+_-` as `_`.
    let nameText (json: string) =
        let raw =
            try
                use doc = JsonDocument.Parse json
                if doc.RootElement.ValueKind = JsonValueKind.String then doc.RootElement.GetString() else doc.RootElement.GetRawText()
            with :? JsonException -> json
        raw |> String.map (fun c -> if Char.IsAsciiLetterOrDigit c || c = '.' || c = '+' || c = '_' || c = '-' then c else '_')

    /// Each axis's label in point names: the path's last field name, or the whole path (sanitised)
    /// where two axes share a last name.
    let axisLabels (grid: GridAxis list) =
        let last (field: string) =
            match List.rev (parsePath field) |> List.tryPick (function Name n -> Some n | Index _ -> None) with
            | Some n -> n
            | None -> field
        let lasts = grid |> List.map (fun a -> last a.Field)
        grid
        |> List.mapi (fun i a ->
            if (lasts |> List.filter ((=) lasts[i])).Length > 1 then nameText (JsonSerializer.Serialize a.Field) else lasts[i])

    /// `<method>[-<field>=<value>...]-s<seed>`.
    let pointName (methodName: string) (labelled: (string * string) list) (seed: int) =
        let parts = [ yield nameText (JsonSerializer.Serialize methodName)
                      for label, value in labelled -> sprintf "%s=%s" label (nameText value)
                      yield sprintf "s%d" seed ]
        String.Join("-", parts)

    /// Every combination of the axes' values, in grid order (the last axis varies fastest).
    let combinations (grid: GridAxis list) : (string * string) list list =
        List.foldBack (fun (axis: GridAxis) (rest: (string * string) list list) ->
            [ for v in axis.Values do
                  for r in rest -> (axis.Field, v) :: r ]) grid [ [] ]

    /// Checks the spec's own shape (before any configuration is built).
    let validate (spec: SweepSpec) =
        if spec.Methods.IsEmpty then Errors.fail "sweep: no methods (give --methods or \"methods\" in the sweep file)"
        if spec.Seeds.IsEmpty then Errors.fail "sweep: no seeds (give --seeds or \"seeds\" in the sweep file)"
        let duplicated (xs: 'a list) = xs |> List.countBy id |> List.tryFind (fun (_, n) -> n > 1) |> Option.map fst
        match duplicated spec.Methods with
        | Some m -> Errors.fail "sweep: method %s is listed twice" m
        | None -> ()
        match duplicated spec.Seeds with
        | Some s -> Errors.fail "sweep: seed %d is listed twice" s
        | None -> ()
        match duplicated (spec.Grid |> List.map _.Field) with
        | Some f -> Errors.fail "sweep: grid field %s is given twice" f
        | None -> ()
        // The selection stage sets one field of every point itself.
        let selectionField =
            match spec.Select, spec.SelectSplit with
            | Some f, Some s ->
                Errors.fail "sweep: --select %g and --select-split %s: choose on a held-out fraction or on the benchmark's split, not both" f s
            | Some f, None -> Some("Validation", sprintf "--select %g" f)
            | None, Some s -> Some("Split", sprintf "--select-split %s" s)
            | None, None -> None
        match selectionField with
        | Some(field, flag) ->
            if spec.Grid.IsEmpty then Errors.fail "sweep: %s: there is no --grid to choose from" flag
            if spec.Grid |> List.exists (fun a -> a.Field = field) then
                Errors.fail "sweep: grid field %s: %s sets it itself (the selection runs' %s), so it cannot be a grid axis" field flag field
        | None -> ()
        match spec.SelectSplit with
        | Some s when String.IsNullOrWhiteSpace s -> Errors.fail "sweep: --select-split: expected a split name such as tune"
        | _ -> ()
        for axis in spec.Grid do
            parsePath axis.Field |> ignore
            if axis.Values.IsEmpty then Errors.fail "sweep: grid field %s has no values" axis.Field
            if axis.Field = "Seed" then Errors.fail "sweep: grid field Seed: give seeds with --seeds (or \"seeds\"), not as a grid"
            match duplicated (axis.Values |> List.map nameText) with
            | Some v -> Errors.fail "sweep: grid field %s: value %s is given twice" axis.Field v
            | None -> ()

    /// The points: methods × grid × seeds. `configure method seed` builds the run configuration
    /// JSON of one (method, seed) from the base and the run options; `check` validates a finished
    /// point configuration (for example by reading it as a RunConfig) and raises on a bad one.
    let points (spec: SweepSpec) (configure: string -> int -> string) (check: string -> string -> unit) : SweepPoint list =
        validate spec
        let labels = axisLabels spec.Grid
        let points =
            [ for m in spec.Methods do
                  for combination in combinations spec.Grid do
                      for seed in spec.Seeds do
                          let what = sprintf "method %s, seed %d" m seed
                          let config = apply what (configure m seed) combination
                          check what config
                          let labelled = List.zip labels (combination |> List.map snd)
                          { Name = pointName m labelled seed
                            Method = m
                            Seed = seed
                            Overrides = combination
                            Config = config } ]
        match points |> List.countBy _.Name |> List.tryFind (fun (_, n) -> n > 1) with
        | Some(name, _) -> Errors.fail "sweep: two points would both be named %s; make the grid values differ in letters or digits" name
        | None -> points

    // ---- the sweep file ----

    let private strings (what: string) (e: JsonElement) =
        if e.ValueKind <> JsonValueKind.Array then Errors.fail "%s: expected an array of strings" what
        [ for x in e.EnumerateArray() ->
              if x.ValueKind <> JsonValueKind.String then Errors.fail "%s: expected an array of strings, found %s" what (x.GetRawText())
              x.GetString() ]

    /// Reads a sweep file: {"base": FILE or {...}, "run": [options], "methods": [NAME or
    /// {"name": NAME, "run": [options]}], "seeds": [...], "grid": {"FIELD": [values]}, "select": FRACTION}. An inline base is written to `inlineBase` (a path the caller
    /// owns); a base file is relative to the sweep file.
    let readFile (path: string) (inlineBase: string) : SweepSpec =
        if not (File.Exists path) then Errors.fail "%s: sweep file not found" path
        use doc =
            try JsonDocument.Parse(File.ReadAllText path)
            with :? JsonException as e -> Errors.fail "%s: not JSON (%s)" path e.Message
        let root = doc.RootElement
        if root.ValueKind <> JsonValueKind.Object then Errors.fail "%s: expected a JSON object" path
        let known = set [ "base"; "run"; "methods"; "seeds"; "grid"; "select"; "selectSplit" ]
        for p in root.EnumerateObject() do
            if not (known.Contains p.Name) then
                Errors.fail "%s: unknown field \"%s\" (expected base, run, methods, seeds, grid, select, selectSplit)" path p.Name
        let field (name: string) =
            match root.TryGetProperty name with
            | true, e when e.ValueKind <> JsonValueKind.Null -> Some e
            | _ -> None
        let baseFile =
            match field "base" with
            | None -> None
            | Some e when e.ValueKind = JsonValueKind.String ->
                let p = e.GetString()
                Some(if Path.IsPathRooted p then p else Path.Combine(Path.GetDirectoryName(Path.GetFullPath path), p))
            | Some e when e.ValueKind = JsonValueKind.Object ->
                Files.writeAtomic inlineBase (fun tmp -> File.WriteAllText(tmp, e.GetRawText()))
                Some inlineBase
            | Some e -> Errors.fail "%s: \"base\" must be a file name or a run configuration object, found %s" path (e.GetRawText())
        let seeds =
            match field "seeds" with
            | None -> []
            | Some e when e.ValueKind = JsonValueKind.Array ->
                [ for x in e.EnumerateArray() ->
                      match x.ValueKind, (if x.ValueKind = JsonValueKind.Number then x.TryGetInt32() else (false, 0)) with
                      | JsonValueKind.Number, (true, s) -> s
                      | _ -> Errors.fail "%s: \"seeds\" must be integers, found %s" path (x.GetRawText()) ]
            | Some _ -> Errors.fail "%s: \"seeds\" must be an array of integers" path
        let grid =
            match field "grid" with
            | None -> []
            | Some e when e.ValueKind = JsonValueKind.Object ->
                [ for p in e.EnumerateObject() ->
                      if p.Value.ValueKind <> JsonValueKind.Array then
                          Errors.fail "%s: grid field %s: expected an array of values" path p.Name
                      parsePath p.Name |> ignore
                      { Field = p.Name; Values = [ for v in p.Value.EnumerateArray() -> v.GetRawText() ] } ]
            | Some _ -> Errors.fail "%s: \"grid\" must be an object of FIELD: [values]" path
        let methods =
            match field "methods" with
            | None -> []
            | Some e when e.ValueKind = JsonValueKind.Array ->
                [ for m in e.EnumerateArray() ->
                      match m.ValueKind with
                      | JsonValueKind.String -> m.GetString(), []
                      | JsonValueKind.Object ->
                          let name =
                              match m.TryGetProperty "name" with
                              | true, n when n.ValueKind = JsonValueKind.String -> n.GetString()
                              | _ -> Errors.fail "%s: a method object needs \"name\" (found %s)" path (m.GetRawText())
                          for p in m.EnumerateObject() do
                              if p.Name <> "name" && p.Name <> "run" then
                                  Errors.fail "%s: method %s: unknown field \"%s\" (expected name, run)" path name p.Name
                          let run =
                              match m.TryGetProperty "run" with
                              | true, r -> strings (sprintf "%s: method %s: \"run\"" path name) r
                              | _ -> []
                          name, run
                      | _ -> Errors.fail "%s: \"methods\": expected names or {\"name\", \"run\"} objects, found %s" path (m.GetRawText()) ]
            | Some _ -> Errors.fail "%s: \"methods\" must be an array" path
        { Base = baseFile
          RunOptions = field "run" |> Option.map (strings (path + ": \"run\"")) |> Option.defaultValue []
          Methods = methods |> List.map fst
          MethodOptions = methods |> List.filter (fun (_, o) -> not o.IsEmpty)
          Seeds = seeds
          Grid = grid
          Select =
            match field "select" with
            | None -> None
            | Some e when e.ValueKind = JsonValueKind.Number -> Some(e.GetDouble())
            | Some e -> Errors.fail "%s: \"select\" must be the held-out fraction, a number, found %s" path (e.GetRawText())
          SelectSplit =
            match field "selectSplit" with
            | None -> None
            | Some e when e.ValueKind = JsonValueKind.String -> Some(e.GetString())
            | Some e -> Errors.fail "%s: \"selectSplit\" must be a split name (a string such as \"tune\"), found %s" path (e.GetRawText()) }
