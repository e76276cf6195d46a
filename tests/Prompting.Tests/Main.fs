module Prompting.Tests.Main

open Expecto
open TorchSharp

[<Tests>]
let smoke = test "torch loads" { Expect.equal (torch.ones(2L).sum().item<float32>()) 2.0f "sum" }

[<EntryPoint>]
let main argv = runTestsInAssemblyWithCLIArgs [] argv
