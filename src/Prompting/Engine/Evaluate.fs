namespace Prompting.Engine

open TorchSharp
open Prompting
open Prompting.Data
open Prompting.Prompts

/// Scores a model on one task's test data: class- and task-incremental accuracy, prompt choice.
module Evaluate =
    let evaluateTask (model: PromptedModel) (device: torch.Device) (task: TaskData) (batches: Batch seq) =
        let first, count = int64 task.Classes[0], int64 task.Classes.Length
        let mutable total = 0L
        // Correct counts accumulate on the device and are read once: no host sync per batch.
        use counts = torch.zeros ([| 3L |], dtype = torch.int64, device = device)
        use taskIndex = (int64 task.Index).ToScalar()
        model.eval ()
        use _ = torch.no_grad ()
        for batch in batches do
            use _ = Runtime.noCollection (Runtime.stepBudget batch.Count batch.Size 4)
            use scope = torch.NewDisposeScope()
            let x = Batches.pixels device batch
            let y = torch.tensor(batch.Labels).``to`` device
            let output = model.Forward(x, false)
            let predictedSeen = (Loss.evaluationLogits model.Layout model.Task output.Logits).argmax 1L
            let predictedTask = (output.Logits.narrow (1, first, count)).argmax(1L) + first
            counts.select(0, 0L).add_ (predictedSeen.eq(y).sum ()) |> ignore
            counts.select(0, 1L).add_ (predictedTask.eq(y).sum ()) |> ignore
            match output.Chosen with
            | Some c when Method.choosesPerTask model.Method -> counts.select(0, 2L).add_ ((c.select (1, 0L)).eq(taskIndex).sum ()) |> ignore
            | _ -> ()
            total <- total + int64 batch.Count
        let host = counts.cpu().data<int64>().ToArray()
        let classIl, taskIl, choice = host[0], host[1], host[2]
        let pct (k: int64) = if total = 0L then nan else 100.0 * float k / float total
        ({ ClassIncremental = pct classIl
           TaskIncremental = pct taskIl
           PromptChoice = if Method.choosesPerTask model.Method then Some(pct choice) else None }: Evaluation)
