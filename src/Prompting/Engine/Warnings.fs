namespace Prompting.Engine

open System
open Prompting
open Prompting.Prompts

/// Signs that a run cannot mean much, computed once here and recorded in progress.json
/// (`RunProgress.Warnings`), so that the log, the printed summary and the report show one text.
///
/// The rules:
/// - a task gets fewer than `MinimumStepsPerTask` optimiser steps (epochs × batches per epoch of
///   its training images), for a method that trains anything;
/// - the batch is larger than a task's training images (each epoch is a single, partial batch);
/// - after the last evaluated task, an accuracy is within `ChanceTolerance` percentage points of
///   chance: class-incremental A_N against 100 / classes seen so far; task-incremental accuracy
///   of each task against 100 / that task's classes (tasks of one class are never at chance).
module Warnings =
    /// Fewer optimiser steps than this in a task rarely train anything.
    [<Literal>]
    let MinimumStepsPerTask = 10

    /// How close to chance (in percentage points) an accuracy counts as chance level.
    [<Literal>]
    let ChanceTolerance = 1.0

    /// "task 3", "tasks 1-5", "tasks 1, 3-5" (with `noun` "task") for 0-based indices, counted from 1.
    let numbered (noun: string) (indices: int list) =
        let rec runs (acc: (int * int) list) (xs: int list) =
            match xs, acc with
            | [], _ -> List.rev acc
            | x :: rest, (first, last) :: earlier when x = last + 1 -> runs ((first, x) :: earlier) rest
            | x :: rest, _ -> runs ((x, x) :: acc) rest
        let text =
            runs [] (List.sort indices |> List.distinct)
            |> List.map (fun (a, b) -> if a = b then string (a + 1) else sprintf "%d-%d" (a + 1) (b + 1))
            |> String.concat ", "
        (if List.length (List.distinct indices) = 1 then noun + " " else noun + "s ") + text

    /// "task 3", "tasks 1-5", "tasks 1, 3-5" for 0-based task indices.
    let taskList (indices: int list) = numbered "task" indices

    /// Warnings known before training from the recipe and each task's number of training images.
    /// `trains`: whether the method has anything the optimiser updates (SimpleCIL does not).
    let ofPlan (recipe: Training) (trains: bool) (trainImages: int list) =
        let indexed = List.indexed trainImages
        let grouped (pick: int * int -> string option) =
            indexed
            |> List.choose (fun (t, n) -> pick (t, n) |> Option.map (fun text -> text, t))
            |> List.groupBy fst
            |> List.map (fun (text, tasks) -> sprintf "%s: %s" (taskList (List.map snd tasks)) text)
        let few =
            grouped (fun (_, n) ->
                let batches = Training.batchesPerEpoch recipe n
                let steps = recipe.Epochs * batches
                if trains && n > 0 && steps < MinimumStepsPerTask then
                    Some(sprintf "%d optimiser step%s per task (%d epoch%s × %d batch%s of up to %d for %d training images), fewer than %d: lower --batch-size or raise --epochs"
                             steps (if steps = 1 then "" else "s") recipe.Epochs (if recipe.Epochs = 1 then "" else "s")
                             batches (if batches = 1 then "" else "es") recipe.BatchSize n MinimumStepsPerTask)
                else None)
        let oversized =
            grouped (fun (_, n) ->
                if trains && n > 0 && recipe.BatchSize > n then
                    Some(sprintf "the batch of %d exceeds the task's %d training images: every step is one partial batch of the whole task" recipe.BatchSize n)
                else None)
        few @ oversized

    let private atChance (accuracy: float) (classes: int) =
        classes > 1 && not (Double.IsNaN accuracy) && abs (accuracy - 100.0 / float classes) <= ChanceTolerance

    /// Chance-level accuracies after the last evaluated task. `classes`: each task's class labels;
    /// `evaluations`: row i holds tasks 0..i after training task i.
    let ofEvaluations (classes: int[] list) (evaluations: Evaluation list list) =
        match List.tryLast evaluations with
        | None
        | Some [] -> []
        | Some last ->
            let seen = classes |> List.truncate last.Length |> Seq.concat |> Seq.distinct |> Seq.length
            let average = last |> List.averageBy _.ClassIncremental
            let classIl =
                if atChance average seen then
                    [ sprintf "class-incremental accuracy %.2f %% after task %d is chance level (1 in %d classes seen)" average last.Length seen ]
                else []
            let perTask =
                last
                |> List.indexed
                |> List.filter (fun (j, e) -> j < classes.Length && atChance e.TaskIncremental classes[j].Length)
                |> List.groupBy (fun (j, _) -> classes[j].Length)
                |> List.map (fun (k, tasks) ->
                    sprintf "%s: task-incremental accuracy at chance level (%.2f %% is 1 in %d classes)"
                        (taskList (List.map fst tasks)) (100.0 / float k) k)
            classIl @ perTask

    /// The line a warning is logged and printed as.
    let line (warning: string) = "warning: " + warning
