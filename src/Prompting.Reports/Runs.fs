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
                TensorBoard.writeRun dir }

    let run (config: RunConfig) (dir: string) (device: TorchSharp.torch.Device) = Experiment.run console config dir device
