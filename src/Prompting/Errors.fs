namespace Prompting

/// A user-facing failure: the message is one line naming the thing and the problem.
exception PromptingError of string with
    override this.Message = this.Data0

module Errors =
    /// Raises a PromptingError with a formatted one-line message.
    let fail fmt = Printf.kprintf (fun msg -> raise (PromptingError msg)) fmt
