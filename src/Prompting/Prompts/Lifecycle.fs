namespace Prompting.Prompts

open TorchSharp
open Prompting.Tensors

/// What a model part needs from the engine once a task's training is done.
type EndOfTaskNeeds =
    | NothingAtTaskEnd
    /// A pass without gradients over the task's training images (evaluation transform); the
    /// model's features and labels reach ObserveFeatures before EndTask.
    | FeaturePass

/// What a part learns when a task ends.
[<NoEquality; NoComparison>]
type TaskEnd =
    { Task: int
      /// Classes seen once the task has been learned (logits beyond them are unused).
      SeenClasses: int }

/// The per-task lifecycle of one model part (a prompt source, the head): what it does when a task
/// begins and ends, what it asks of the engine at the end, and the state it keeps across tasks
/// outside its parameters. The engine runs these declarations for every part alike, and saves the
/// lifecycle state with each task so that a resumed run continues exactly.
type ITaskPart =
    /// Task `task` begins (prompt copying, Gram–Schmidt initialisation of new components, ...).
    abstract BeginTask: task: int -> unit
    abstract AtTaskEnd: EndOfTaskNeeds
    /// Features (B, D) of the model for training images with their labels (B), during a FeaturePass.
    abstract ObserveFeatures: features: torch.Tensor * labels: torch.Tensor -> unit
    /// The task ends; returns what the part did, one line each, for the run's log (the ridge
    /// head's regulariser, an alignment's steps, ...).
    abstract EndTask: TaskEnd -> string list
    /// State kept across tasks outside the parameters, by name ([] when there is none).
    abstract LifecycleState: unit -> (string * ExactTensor) list
    /// Restores what LifecycleState returned (an empty list: the state of a fresh part).
    abstract RestoreLifecycleState: (string * ExactTensor) list -> unit
