namespace Prompting

/// A user-facing failure: the message is one line naming the thing and the problem.
exception PromptingError of string with
    override this.Message = this.Data0

module Errors =
    /// Raises a PromptingError with a formatted one-line message. Line breaks that come from
    /// file contents or exception texts are flattened to spaces so the message stays one line.
    let fail fmt =
        Printf.kprintf (fun (msg: string) -> raise (PromptingError(msg.ReplaceLineEndings " "))) fmt
