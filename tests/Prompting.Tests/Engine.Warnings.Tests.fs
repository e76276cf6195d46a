/// Engine.Warnings: the rules for doubtful runs, against hand-computed cases, and what a run records.
module Prompting.Tests.EngineWarnings

open Expecto
open Prompting
open Prompting.Prompts
open Prompting.Engine

let private recipe epochs batch dropLast = { Methods.l2p.Recipe with Epochs = epochs; BatchSize = batch; DropLast = dropLast }

let private at (classIl: float) (taskIl: float) = { ClassIncremental = classIl; TaskIncremental = taskIl; PromptChoice = None }

let private twoClassTasks n = [ for t in 0 .. n - 1 -> [| 2 * t; 2 * t + 1 |] ]

[<Tests>]
let tests =
    testList
        "engine.warnings"
        [ test "task lists read as the user counts, ranges joined" {
              Expect.equal (Warnings.taskList [ 2 ]) "task 3" "one"
              Expect.equal (Warnings.taskList [ 0; 1; 2; 3; 4 ]) "tasks 1-5" "a range"
              Expect.equal (Warnings.taskList [ 4; 0; 2; 3 ]) "tasks 1, 3-5" "sorted, gaps kept"
          }

          test "l2p's batch of 128 on tasks of 40 images: one step per task and a batch over the data" {
              // ceil(40 / 128) = 1 batch per epoch, 1 epoch: 1 step.
              let warnings = Warnings.ofPlan (recipe 1 128 false) true [ 40; 40; 40; 40; 40 ]
              Expect.equal
                  warnings
                  [ "tasks 1-5: 1 optimiser step per task (1 epoch × 1 batch of up to 128 for 40 training images), fewer than 10: lower --batch-size or raise --epochs"
                    "tasks 1-5: the batch of 128 exceeds the task's 40 training images: every step is one partial batch of the whole task" ]
                  "both warnings, the five tasks named once"
          }

          test "steps per task: epochs × batches per epoch, drop-last counted, the threshold exclusive" {
              // 3 epochs × ceil(30 / 10) = 9 steps: warned; 10 steps: not.
              Expect.equal (Warnings.ofPlan (recipe 3 10 false) true [ 30 ]).Length 1 "9 steps"
              Expect.isEmpty (Warnings.ofPlan (recipe 2 10 false) true [ 50 ]) "2 × 5 = 10 steps"
              // Drop-last: 2 epochs × floor(59 / 10) = 10 steps (without it, 12).
              Expect.isEmpty (Warnings.ofPlan (recipe 2 10 true) true [ 59 ]) "drop-last 10 steps"
              Expect.equal (Warnings.ofPlan (recipe 1 10 true) true [ 59 ])
                  [ "task 1: 5 optimiser steps per task (1 epoch × 5 batches of up to 10 for 59 training images), fewer than 10: lower --batch-size or raise --epochs" ]
                  "drop-last 5 steps"
              // Tasks of different sizes are named apart.
              let mixed = Warnings.ofPlan (recipe 5 8 false) true [ 100; 8; 100; 4 ]
              Expect.equal mixed
                  [ "task 2: 5 optimiser steps per task (5 epochs × 1 batch of up to 8 for 8 training images), fewer than 10: lower --batch-size or raise --epochs"
                    "task 4: 5 optimiser steps per task (5 epochs × 1 batch of up to 8 for 4 training images), fewer than 10: lower --batch-size or raise --epochs"
                    "task 4: the batch of 8 exceeds the task's 4 training images: every step is one partial batch of the whole task" ]
                  "only the small tasks; a batch equal to the data is no warning"
              Expect.isEmpty (Warnings.ofPlan (recipe 1 128 false) false [ 40 ]) "a method that trains nothing takes no steps to count"
          }

          test "chance level: task-incremental per task against 1 / its classes, class-incremental A_N against 1 / classes seen" {
              // Five two-class tasks, task-incremental exactly 50 on each: the issue's l2p case.
              let flat = [ for i in 0 .. 4 -> [ for _ in 0 .. i -> at 10.0 50.0 ] ]
              Expect.equal
                  (Warnings.ofEvaluations (twoClassTasks 5) flat)
                  [ "class-incremental accuracy 10.00 % after task 5 is chance level (1 in 10 classes seen)"
                    "tasks 1-5: task-incremental accuracy at chance level (50.00 % is 1 in 2 classes)" ]
                  "both, from the last row"
              // Within 1 point counts (50.9, 49.1); 48.9 does not; A_N 60 is far from 25.
              let near = [ [ at 95.0 95.0 ]; [ at 70.0 50.9; at 50.0 48.9 ] ]
              Expect.isEmpty (Warnings.ofEvaluations (twoClassTasks 2) [ [ at 95.0 95.0 ]; [ at 60.0 60.0; at 60.0 60.0 ] ]) "learned"
              Expect.equal (Warnings.ofEvaluations (twoClassTasks 2) near)
                  [ "task 1: task-incremental accuracy at chance level (50.00 % is 1 in 2 classes)" ] "50.9 is within a point, 48.9 is not"
              // A_N (30 + 20) / 2 = 25 with 4 classes seen: chance; one-class tasks are never at chance.
              Expect.equal (Warnings.ofEvaluations (twoClassTasks 2) [ [ at 90.0 90.0 ]; [ at 30.0 90.0; at 20.0 90.0 ] ])
                  [ "class-incremental accuracy 25.00 % after task 2 is chance level (1 in 4 classes seen)" ] "A_N at 1/4"
              Expect.isEmpty (Warnings.ofEvaluations [ [| 0 |]; [| 1 |] ] [ [ at 100.0 100.0 ]; [ at 100.0 100.0; at 50.0 100.0 ] ]) "one class per task"
              Expect.isEmpty (Warnings.ofEvaluations (twoClassTasks 2) []) "nothing evaluated yet"
          } ]
