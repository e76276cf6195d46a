namespace Prompting.Engine

open Prompting
open Prompting.Data
open Prompting.Prompts

/// The method of a request: a registered name (`prompting methods`), or a value composed in code.
type MethodChoice =
    | MethodNamed of string
    | MethodValue of Method

/// A run asked for: every front end (the CLI's flags and --config file, the C# facade, the scripts)
/// fills one of these and `Configure.resolve` turns it into a RunConfig, so the rules for defaults
/// and overrides live in one place. None: the base configuration's value, else the default.
type RunRequest =
    { /// A configuration to start from (a --config file or a run's config.json).
      Base: RunConfig option
      Method: MethodChoice option
      Benchmark: string option
      Data: string option
      Checkpoint: string option
      Heads: int option
      /// None: the base's, else the benchmark's default (1 for joint training).
      Tasks: int option
      Scenario: ScenarioKind option
      /// A named split of the benchmark (`--split coda`); None: the base's, else the benchmark's default.
      Split: string option
      /// Overrides of single fields of the method's recipe.
      Epochs: int option
      BatchSize: int option
      LearningRate: float option
      Bf16: bool option
      /// None: the base's, else the checkpoint's resolution.
      ImageSize: int option
      /// None: the base's (unless a seed is given), else shuffled with the seed.
      ClassOrder: ClassOrder option
      TrainPerClass: int option
      TestPerClass: int option
      Normalisation: PixelScale option
      QueryDepth: int option
      /// Overrides what predicts: linear (the trained head), prototype (class means), ridge
      /// (RanPAC's random projection and ridge regression) or aligned (head re-trained on sampled
      /// class statistics: the method's own alignment, else SLCA's).
      Head: string option
      /// Overrides when the trainable parts learn: every-task, first-task or slow-learner (every
      /// task, all but the head at 1/100 of the head's rate, as SLCA).
      Adapt: string option
      Seed: int option
      SkipCorrupt: bool option
      /// Hold out this seeded fraction of each class's training data for evaluation (choosing
      /// hyperparameters); None: the base's, else none.
      Validation: float option
      /// Resuming may change the recorded recipe (not part of the configuration).
      AcceptRecipeChange: bool option }

module RunRequest =
    let empty =
        { Base = None; Method = None; Benchmark = None; Data = None; Checkpoint = None; Heads = None; Tasks = None
          Scenario = None; Split = None; Epochs = None; BatchSize = None; LearningRate = None; Bf16 = None; ImageSize = None
          ClassOrder = None; TrainPerClass = None; TestPerClass = None; Normalisation = None; QueryDepth = None
          Head = None; Adapt = None; Seed = None; SkipCorrupt = None; Validation = None; AcceptRecipeChange = None }

/// The one configuration path: a RunRequest to a PreparedRun (the config and its checkpoint, read once).
module Configure =
    /// The task count: `requested` or `fallback`; joint training is one task (an explicit other
    /// count is an error).
    let tasks (scenario: ScenarioKind) (requested: int option) (fallback: int) =
        let tasks = defaultArg requested fallback
        if scenario = Joint && requested.IsSome && tasks <> 1 then
            Errors.fail "--scenario joint trains one task, but --tasks %d was given" tasks
        if scenario = Joint then 1 else tasks

    /// The recipe with the epochs, batch size, learning rate and precision given.
    let recipe (r: RunRequest) (recipe: Training) =
        { recipe with
            Epochs = defaultArg r.Epochs recipe.Epochs
            BatchSize = defaultArg r.BatchSize recipe.BatchSize
            LearningRate = defaultArg r.LearningRate recipe.LearningRate
            Bf16 = defaultArg r.Bf16 recipe.Bf16 }

    /// The method with what predicts replaced (`--head`): a choice of `Methods.HeadChoices`.
    let withHead (head: string) (m: Method) = Methods.HeadChoices.apply head m

    /// The method with when it learns replaced (`--adapt`): a choice of `Methods.AdaptationChoices`.
    let withAdaptation (adapt: string) (m: Method) = Methods.AdaptationChoices.apply adapt m

    let resolve (r: RunRequest) : PreparedRun =
        let b = r.Base
        let from (field: RunConfig -> 'a) = b |> Option.map field
        let benchmark =
            match r.Benchmark |> Option.orElse (from (fun c -> c.Benchmark)) with
            | Some name -> Benchmarks.find name
            | None -> Errors.fail "run: --benchmark is required (see `prompting benchmarks`)"
        // Recorded canonical, so that the run reopens and resumes from any working directory.
        let data = r.Data |> Option.orElse (b |> Option.bind (fun c -> c.Data)) |> Option.map RunPaths.canonicalData
        let scenario = r.Scenario |> Option.orElse (from (fun c -> c.Scenario)) |> Option.defaultWith (fun () -> benchmark.DefaultScenario)
        let tasks =
            tasks scenario r.Tasks
                (match b with
                 | Some c -> c.Tasks
                 | None -> if scenario = Joint then 1 else max 1 (Benchmarks.defaultTasks benchmark data))
        let method =
            match r.Method, b with
            // The same name as the base's keeps the base's recipe (a --config file's tuned rates).
            | Some(MethodNamed name), Some c when (Methods.find name tasks).Name = c.Method.Name ->
                { Methods.find name tasks with Recipe = c.Method.Recipe }
            | Some(MethodNamed name), _ -> Methods.find name tasks
            | Some(MethodValue m), _ -> m
            | None, Some c -> c.Method
            | None, None -> Errors.fail "run: --method is required (see `prompting methods`)"
        let method =
            match r.QueryDepth with
            | Some k when k < 1 -> Errors.fail "--query-depth %d: must be at least 1" k
            | Some k -> { method with QueryDepth = Some k }
            | None -> method
        let method = { method with Recipe = recipe r method.Recipe }
        let method = r.Head |> Option.fold (fun m h -> withHead h m) method
        let method = r.Adapt |> Option.fold (fun m a -> withAdaptation a m) method
        Method.checkComposition method
        let checkpoint =
            match r.Checkpoint |> Option.orElse (from (fun c -> c.Checkpoint)) with
            | Some c when System.String.IsNullOrWhiteSpace c -> Errors.fail "run: --checkpoint is empty"
            | Some c -> System.IO.Path.GetFullPath c
            | None -> Errors.fail "run: --checkpoint is required"
        let heads = r.Heads |> Option.orElse (b |> Option.bind (fun c -> c.Heads))
        let source = RunCheckpoint.read checkpoint heads
        let seed = r.Seed |> Option.orElse (from (fun c -> c.Seed)) |> Option.defaultValue 0
        let split =
            match r.Split, b with
            | Some name, _ -> Some(Benchmarks.checkSplitName benchmark name)
            | None, Some c when c.Benchmark = benchmark.Name -> c.Split
            | None, _ -> Some(benchmark.DefaultSplit data)
        let config =
            { Method = method
              Benchmark = benchmark.Name
              Data = data
              Checkpoint = checkpoint
              Heads = heads
              ImageSize = r.ImageSize |> Option.orElse (from (fun c -> c.ImageSize)) |> Option.defaultValue source.Checkpoint.Config.ImageSize
              Tasks = tasks
              Scenario = scenario
              Split = split
              ClassOrder =
                match r.ClassOrder, b with
                | Some order, _ -> order
                | None, Some c when r.Seed.IsNone -> c.ClassOrder
                // the reference's own rule for its split (CODA-Prompt's lists, LAMDA-PILOT's releases), else ours
                | None, _ ->
                    benchmark.ReferenceOrder (Benchmarks.splitOf benchmark split data) seed
                    |> Option.defaultValue (Shuffled seed)
              TrainPerClass = r.TrainPerClass |> Option.orElse (b |> Option.bind (fun c -> c.TrainPerClass))
              TestPerClass = r.TestPerClass |> Option.orElse (b |> Option.bind (fun c -> c.TestPerClass))
              Normalisation = r.Normalisation |> Option.orElse (from (fun c -> c.Normalisation)) |> Option.defaultValue Normalised
              Seed = seed
              SkipCorrupt = defaultArg r.SkipCorrupt false || (b |> Option.exists (fun c -> c.SkipCorrupt))
              Validation = r.Validation |> Option.orElse (b |> Option.bind (fun c -> c.Validation)) }
        { Config = config; Checkpoint = source; AcceptRecipeChange = defaultArg r.AcceptRecipeChange false }
