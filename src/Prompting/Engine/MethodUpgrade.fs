namespace Prompting.Engine

open System.Text.Json.Nodes
open Prompting.Prompts

/// Brings a recorded method (config.json's Config.Method) written by an earlier version of format 2
/// to the current fields, meaning what it meant when it ran.
module MethodUpgrade =
    /// Method fields added within format 2; absent, they read as the plain method's values (no
    /// parallel adapter, no SSF, a head that reads the adapted features): what earlier runs did.
    let private addedFields = [ "ParallelAdapter"; "ScaleShift"; "HeadFeatures"; "HeadTruncatedNormal" ]

    let private node (value: 'T) = JsonNode.Parse(Json.serialize value)

    let private number (o: JsonObject) (key: string) =
        match o[key] with
        | null -> Prompting.Errors.fail "recorded method: %s is missing" key
        | v -> v.GetValue<float>()

    /// VQ-Prompt's recalibration was a `Recalibration` field beside the calibration: it is the
    /// aligned head it always was (diagonal statistics, AdamW with a per-step cosine), in batches
    /// of the recipe's size as it ran then.
    let private recalibrationAsAlignment (m: JsonObject) =
        match m["Recalibration"] with
        | :? JsonObject as r ->
            let batch =
                match m["Recipe"] with
                | :? JsonObject as recipe -> int (number recipe "BatchSize")
                | _ -> Method.vqAlignment.BatchSize
            let alignment =
                { Method.vqAlignment with
                    Covariance = DiagonalCovariance(number r "VarianceFloor")
                    SamplesPerClass = int (number r "SamplesPerClass")
                    BatchSize = batch
                    Epochs = int (number r "Epochs")
                    LearningRate = number r "LearningRate"
                    RateSchedule = CosinePerStep(number r "FinalLearningRate")
                    WeightDecay = number r "WeightDecay" }
            m["Calibration"] <- node (AlignedHead alignment)
        | _ -> ()
        m.Remove "Recalibration" |> ignore

    /// An aligned head recorded with SGD's `Momentum` and no optimiser, schedule or epoch length:
    /// SLCA's SGD, per-epoch cosine and full epochs.
    let private alignmentFields (m: JsonObject) =
        match m["Calibration"] with
        | :? JsonObject as c ->
            match c["AlignedHead"] with
            | :? JsonObject as a ->
                let fields = match a["Item"] with :? JsonObject as item -> item | _ -> a
                if not (fields.ContainsKey "Optimiser") then
                    let momentum = match fields["Momentum"] with null -> 0.9 | v -> v.GetValue<float>()
                    fields.Remove "Momentum" |> ignore
                    fields["Optimiser"] <- node (AlignmentSgd momentum)
                    fields["RateSchedule"] <- node CosinePerEpoch
                    fields["EpochLength"] <- node EverySample
            | _ -> ()
        | _ -> ()

    /// The method object in the current fields.
    let upgrade (m: JsonObject) =
        let defaults = (node Methods.linear).AsObject()
        for key in addedFields do
            if not (m.ContainsKey key) then
                m[key] <- (match defaults[key] with null -> null | value -> value.DeepClone())
        if m.ContainsKey "Recalibration" then recalibrationAsAlignment m
        alignmentFields m
