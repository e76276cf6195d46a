namespace Prompting.Prompts

open TorchSharp

/// The training objective shared by every method: cross-entropy on the method's training logits
/// plus the sum of the sources' weighted auxiliary losses.
module Loss =
    /// Logits outside the classes the method trains on are set to −inf.
    let trainingLogits (method: Method) (layout: TaskLayout) (task: int) (logits: torch.Tensor) =
        let first, stop =
            match method.TrainingLogits with
            | CurrentTaskClasses -> TaskLayout.offset layout task, TaskLayout.offset layout task + TaskLayout.count layout task
            | SeenClasses -> 0, TaskLayout.seen layout task
        let classes = logits.shape[1]
        use index = torch.arange (classes, device = logits.device)
        use outside = (index.lt ((int64 first).ToScalar())).logical_or (index.ge ((int64 stop).ToScalar()))
        logits.masked_fill (outside, System.Single.NegativeInfinity)

    /// Evaluation logits: the classes seen once `task` has been learned.
    let evaluationLogits (layout: TaskLayout) (task: int) (logits: torch.Tensor) =
        logits.narrow (1, 0L, int64 (TaskLayout.seen layout task))

    /// Mean cross-entropy on the training logits plus the auxiliary losses.
    let total (model: PromptedModel) (output: PromptedOutput) (labels: torch.Tensor) =
        use masked = trainingLogits model.Method model.Layout model.Task output.Logits
        use ce = torch.nn.functional.cross_entropy (masked, labels)
        ce + output.AuxLoss
