namespace Prompting.Prompts

open System.Collections.Generic
open TorchSharp
open Prompting
open Prompting.Tensors

/// What a prompt source needs for one forward pass.
[<NoEquality; NoComparison>]
type SourceContext =
    { /// Final-norm CLS of the frozen, un-prompted backbone (B, D), without gradient.
      Query: torch.Tensor option
      Training: bool
      /// The task being trained (training) or the last task learned (evaluation).
      Task: int
      Batch: int64 }

/// One forward pass's prompts from one source.
[<NoEquality; NoComparison>]
type SourceOutput =
    { /// Per layer: the chosen prompts (B, k, S, D), S the stored prompt length.
      At: int -> torch.Tensor option
      /// The source's weighted auxiliary loss (training only).
      AuxLoss: torch.Tensor option
      /// The chosen pool entries (B, k), for sources that select.
      Chosen: torch.Tensor option }

/// Everything a source needs to know about its place in the model.
type SourceShape =
    { Group: PromptGroup
      Layers: int list
      Width: int
      PatchSize: int
      /// Tokens stored per prompt: 2L for separate key/value prefixes, L otherwise.
      StoredLength: int
      Tasks: int }

/// Parameters registered under stable names (they are the trainable-state format); fetched by name
/// on use because moving a module to another device replaces its Parameter objects.
type ParameterSet(name: string) =
    inherit torch.nn.Module(name)
    member this.Add(key: string, value: torch.Tensor) =
        this.register_parameter (key, torch.nn.Parameter(value))
    member this.Item(key: string) = this.get_parameter key

/// A source of prompts for one group: per-layer parameters plus its selection rule. Its lifecycle
/// (ITaskPart) defaults to nothing beyond BeginTask; a source that needs an end-of-task pass or keeps
/// state across tasks overrides the members it needs.
[<AbstractClass>]
type PromptSourceModule(name: string) =
    inherit torch.nn.Module(name)
    abstract Prepare: SourceContext -> SourceOutput
    /// Lifecycle hook when task `task` begins (copying, Gram–Schmidt initialisation, ...).
    abstract BeginTask: task: int -> unit
    default _.BeginTask _ = ()
    abstract AtTaskEnd: EndOfTaskNeeds
    default _.AtTaskEnd = NothingAtTaskEnd
    abstract ObserveFeatures: features: torch.Tensor * labels: torch.Tensor -> unit
    default _.ObserveFeatures(_, _) = ()
    abstract EndTask: TaskEnd -> string list
    default _.EndTask _ = []
    abstract LifecycleState: unit -> (string * ExactTensor) list
    default _.LifecycleState() = []
    abstract RestoreLifecycleState: (string * ExactTensor) list -> unit
    default _.RestoreLifecycleState _ = ()
    /// Whether this source reads the query.
    abstract NeedsQuery: bool

    interface ITaskPart with
        member this.BeginTask task = this.BeginTask task
        member this.AtTaskEnd = this.AtTaskEnd
        member this.ObserveFeatures(features, labels) = this.ObserveFeatures(features, labels)
        member this.EndTask ending = this.EndTask ending
        member this.LifecycleState() = this.LifecycleState()
        member this.RestoreLifecycleState state = this.RestoreLifecycleState state

module Sources =
    let layerName (layer: int) = sprintf "layer%d" layer

    /// Initial values for prompts and keys.
    let initial (shape: SourceShape) (dims: int64[]) =
        match shape.Group.Init with
        | Uniform(lo, hi) -> torch.empty(dims).uniform_ (lo, hi)
        | VptUniform ->
            let v = sqrt (6.0 / float (3 * shape.PatchSize * shape.PatchSize + shape.Width))
            torch.empty(dims).uniform_ (-v, v)
        | GramSchmidt -> torch.zeros dims

    let requireQuery (name: string) (ctx: SourceContext) =
        match ctx.Query with
        | Some q -> q
        | None -> Errors.fail "prompt group %s needs the query, but none was computed" name

    /// Row-wise cosine similarity (B, D) × (M, D) → (B, M), through mm (matmul has no error guard).
    let cosine (queries: torch.Tensor) (keys: torch.Tensor) =
        use qn = torch.nn.functional.normalize (queries, dim = 1L)
        use kn = torch.nn.functional.normalize (keys, dim = 1L)
        use kt = kn.t ()
        torch.mm (qn, kt)

    /// Gathers pool entries (M, S, D) by ids (B, k) → (B, k, S, D).
    let gather (pool: torch.Tensor) (ids: torch.Tensor) =
        use flat = ids.flatten ()
        use picked = pool.index_select (0L, flat)
        picked.reshape (ids.shape[0], ids.shape[1], pool.shape[1], pool.shape[2])

    /// A per-layer lookup table for SourceOutput.At.
    let perLayer (entries: (int * torch.Tensor) list) =
        let table = Dictionary<int, torch.Tensor>()
        for l, t in entries do table[l] <- t
        fun (layer: int) ->
            match table.TryGetValue layer with
            | true, t -> Some t
            | _ -> None

    let sumLosses (losses: torch.Tensor list) =
        match losses with
        | [] -> None
        | first :: rest -> Some(rest |> List.fold (fun (acc: torch.Tensor) l -> acc + l) first)
