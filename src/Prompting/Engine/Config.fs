namespace Prompting.Engine

open Prompting.Data
open Prompting.Prompts

type ScenarioKind =
    /// T tasks over disjoint classes; evaluation over every class seen so far.
    | ClassIncremental
    /// As class-incremental, but the task id is given at test time (logits of its classes only).
    | TaskIncremental
    /// Every task has all classes; tasks are domains (sub-folders of the data root).
    | DomainIncremental
    /// One task with every class (upper bound).
    | Joint

type ClassOrder =
    /// The dataset's class order.
    | Natural
    /// A permutation drawn with this seed (the papers' protocol).
    | Shuffled of seed: int
    /// An explicit order of class indices (for example read from a file).
    | Given of int list
    /// LAMDA-PILOT's rule: `np.random.seed(seed); np.random.permutation(n)` (NumPy's legacy
    /// MT19937), `--class-order pilot-1993`.
    | NumpyPermutation of seed: int
    /// CODA-Prompt's `rand_split` rule: `random.seed(seed); random.shuffle(order)` (CPython's
    /// random module), `--class-order coda-K`.
    | PythonShuffle of seed: int

/// Everything that determines a run's results: serialised as config.json in the run directory,
/// compared on resume. The method is the full configuration value, its training recipe included
/// (`Method.Recipe`, with any command-line overrides applied), so JSON can tweak any part.
type RunConfig =
    { Method: Method
      /// A name of the benchmark registry (`prompting benchmarks`).
      Benchmark: string
      Data: string option
      Checkpoint: string
      Heads: int option
      ImageSize: int
      Tasks: int
      Scenario: ScenarioKind
      /// The benchmark's named train/test split (`prompting benchmarks NAME` lists them); None in
      /// runs made before runs recorded it: the split the benchmark made then.
      Split: string option
      ClassOrder: ClassOrder
      TrainPerClass: int option
      TestPerClass: int option
      /// The backbone's statistics by default; UnitRange as the CODA-Prompt/VQ-Prompt loaders feed.
      Normalisation: PixelScale
      Seed: int
      SkipCorrupt: bool
      /// Hold out this seeded fraction of each class's training data and evaluate on it instead of
      /// the test split (Data.Validation), for choosing hyperparameters; None: train on all of it.
      Validation: float option }
