namespace Prompting.Data

open Prompting

/// One labelled example. Pixels are decoded on demand so large image folders stay cheap.
[<NoEquality; NoComparison>]
type Sample =
    { /// Where it came from (a file path, or "<file>#<index>" inside an archive), for error messages.
      Source: string
      Label: int
      Load: unit -> RgbImage }

/// A labelled dataset with a train and a test split.
[<NoEquality; NoComparison>]
type Dataset =
    { Name: string
      ClassNames: string[]
      Train: Sample[]
      Test: Sample[] }
