namespace Prompting

open Prompting.Engine

/// Runs as the command line and the C# facade present them: live (or plain) progress, and the HTML
/// report rewritten and the TensorBoard event files extended after every task.
module Runs =
    let console =
        { Progress = Progress.host
          AfterTask =
            fun dir summary ->
                Report.writeRun (Experiment.reportFile dir) summary
                TensorBoard.writeRun dir
          SummaryText = Report.summaryText }

    /// Runs (or resumes) a prepared run in `dir`.
    let run (run: PreparedRun) (dir: string) (device: TorchSharp.torch.Device) = Experiment.run console run dir device

    /// Runs a configuration built in code (scripts): its checkpoint is read here, once.
    let runConfig (config: RunConfig) (dir: string) (device: TorchSharp.torch.Device) = run (PreparedRun.ofConfig config) dir device
