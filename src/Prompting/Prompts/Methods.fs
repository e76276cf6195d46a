namespace Prompting.Prompts

open Prompting

/// The published methods and baselines as values of the algebra, with their reference defaults.
/// Pool sizes that equal the number of tasks are why these are functions of `tasks`.
module Methods =
    /// The references' training recipes, as data; each method below carries one.
    module Recipes =
        /// L2P (PyTorch port): Adam, constant 0.03 scaled by batch / 256, clip 1.0, 5 epochs of 128.
        let l2p = { Training.defaults with LearningRate = 0.03; ScaleByBatch = true; GradientClip = Some 1.0 }

        /// DualPrompt: Adam, constant 0.005 scaled by batch / 256, 5 epochs of 128.
        let dualPrompt = { Training.defaults with LearningRate = 0.005; ScaleByBatch = true }

        /// The CODA-Prompt repository (CODA-P, and its L2P++ and DualPrompt runs): Adam 1e-3, its
        /// quarter-cosine CosineSchedule per epoch, 20 epochs of 128 (CIFAR-100), drop_last loaders.
        let codaRepository = { Training.defaults with Epochs = 20; Schedule = QuarterCosine; DropLast = true }

        /// VQ-Prompt: AdamW, prompts 0.0125 / head 0.0025, weight decay 0, per-iteration cosine to 1e-6
        /// (a fraction of the base rate), 20 epochs of 128. The official short constant warm-up at 1e-6
        /// is not modelled.
        let vqPrompt =
            { Training.defaults with
                Epochs = 20
                LearningRate = 0.0125
                HeadLearningRate = Some 0.0025
                Optimizer = AdamW
                Schedule = Cosine(1e-6 / 0.0125)
                ScheduleUnit = PerIteration }

        /// VPT: SGD momentum 0.9, base 0.25 scaled by batch / 256, weight decay 1e-3, 10 warm-up
        /// epochs then cosine over 100.
        let vpt =
            { Training.defaults with
                Epochs = 100
                LearningRate = 0.25
                ScaleByBatch = true
                Optimizer = Sgd 0.9
                WeightDecay = 0.001
                Schedule = WarmupCosine(10, 0.0) }

        /// SLCA's slow learner (`models/slca.py`, `slca_cifar.json`): SGD momentum 0.9, weight decay
        /// 5e-4, backbone 1e-4 (0.01 × bcb_lrscale 1/100), head 0.01, 20 epochs of 128, ×0.1 from
        /// epoch 18 (MultiStepLR). ImageNet-R: 50 epochs, milestone 40.
        let slca =
            { Training.defaults with
                Epochs = 20
                BatchSize = 128
                LearningRate = 1e-4
                HeadLearningRate = Some 0.01
                Optimizer = Sgd 0.9
                WeightDecay = 5e-4
                Schedule = MultiStep([ 18 ], 0.1) }

        /// Baselines that train backbone weights: Adam 1e-4.
        let backbone = { Training.defaults with LearningRate = 1e-4 }

        /// APER's first session and RanPAC's phase 1 (LAMDA-PILOT's CIFAR configs, the same for the
        /// adapter, SSF, VPT and RanPAC): SGD momentum 0.9, 0.01, weight decay 5e-4, cosine annealing
        /// to 0 stepped per epoch, 20 epochs of 48.
        let firstSession =
            { Training.defaults with
                Epochs = 20
                BatchSize = 48
                LearningRate = 0.01
                Optimizer = Sgd 0.9
                WeightDecay = 5e-4
                Schedule = Cosine 0.0 }

    let private plain name description =
        { Name = name
          Description = description
          Recipe = Training.defaults
          Groups = []
          HeadInput = ClassToken
          Head = LinearHead
          VptHeadInit = false
          HeadTruncatedNormal = None
          Backbone = Frozen
          AdapterReduction = None
          TrainingLogits = SeenClasses
          ParallelAdapter = None
          ScaleShift = None
          Calibration = TrainedHead
          Adaptation = EveryTask
          HeadFeatures = AdaptedFeatures
          QueryDepth = None }

    let private keyed poolSize topK =
        { PoolSize = poolSize
          TopK = topK
          KeysPerLayer = false
          BatchwiseSelection = false
          TrainWithTaskId = false
          CopyPreviousAtTaskStart = false
          PullLoss = NegativeCosine
          PullWeight = 0.1 }

    let vptShallow =
        { plain "vpt-shallow" "VPT-shallow: 10 prompt tokens after CLS at the input"
            with
            Groups =
                [ { Name = "vpt"; Layers = Only [ 0 ]; Length = 10; Insertion = PromptTokens(AfterClassToken, false)
                    Source = Static; Init = VptUniform; Dropout = 0.0 } ]
            VptHeadInit = true
            Recipe = Recipes.vpt }

    let vptDeep =
        { plain "vpt-deep" "VPT-deep: 10 fresh prompt tokens before every block, prompt dropout 0.1"
            with
            Groups =
                [ { Name = "vpt"; Layers = AllLayers; Length = 10; Insertion = PromptTokens(AfterClassToken, false)
                    Source = Static; Init = VptUniform; Dropout = 0.1 } ]
            VptHeadInit = true
            Recipe = Recipes.vpt }

    /// L2P as the PyTorch port computes it: [CLS, P, patches] with CLS's position embedding on the
    /// prompts, head on the mean of the prompt outputs, pull weight 0.1 (the paper uses 0.5).
    let l2p =
        { plain "l2p" "L2P: pool 10, length 5, top-5 prompt-tuning at the input, prompt-mean head"
            with
            Groups =
                [ { Name = "pool"; Layers = Only [ 0 ]; Length = 5; Insertion = PromptTokens(AfterClassToken, true)
                    Source = Keyed(keyed 10 5); Init = Uniform(-1.0, 1.0); Dropout = 0.0 } ]
            HeadInput = PromptMean
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.l2p }

    /// L2P as the original JAX code lays it out: [P, CLS, patches], no position embedding on prompts.
    let l2pJax =
        { l2p with
            Name = "l2p-jax"
            Description = "L2P with the JAX layout [P, CLS, patches] and pull weight 0.5"
            Groups =
                [ { l2p.Groups.Head with
                      Insertion = PromptTokens(BeforeClassToken, false)
                      Source = Keyed { keyed 10 5 with PullWeight = 0.5 } } ] }

    /// CODA-Prompt's L2P++: prefix-tuning at layer 0, pool 30, length 20 (10 key + 10 value), top-5,
    /// with the correct per-sample pull loss (see PullLoss.CrossSampleQuirk for the repository's).
    let l2pPlusPlus =
        { plain "l2p++" "L2P++ (CODA repository): prefix pool 30 x 20 at layer 0, top-5"
            with
            Groups =
                [ { Name = "pool"; Layers = Only [ 0 ]; Length = 20; Insertion = PrefixTokens SplitHalves
                    Source = Keyed { keyed 30 5 with PullLoss = OneMinusCosineSummed; PullWeight = 1.0 }
                    Init = Uniform(0.0, 1.0); Dropout = 0.0 } ]
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.codaRepository }

    /// DualPrompt as the original (JAX) code: separate K and V prefixes of length 5, G at 0–1,
    /// E at 2–4 with one entry per task chosen once for all layers, the true task id while training.
    let dualPrompt tasks =
        { plain "dualprompt" "DualPrompt: G-prompt layers 0-1, E-prompt pool (one per task) layers 2-4, K/V prefixes of 5"
            with
            Groups =
                [ { Name = "g"; Layers = Only [ 0; 1 ]; Length = 5; Insertion = PrefixTokens SeparateKeyValue
                    Source = Static; Init = Uniform(-1.0, 1.0); Dropout = 0.0 }
                  { Name = "e"; Layers = Only [ 2; 3; 4 ]; Length = 5; Insertion = PrefixTokens SeparateKeyValue
                    Source =
                      Keyed
                          { keyed tasks 1 with
                              TrainWithTaskId = true
                              CopyPreviousAtTaskStart = true
                              PullLoss = OneMinusCosine
                              PullWeight = 1.0 }
                    Init = Uniform(-1.0, 1.0); Dropout = 0.0 } ]
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.dualPrompt }

    /// DualPrompt as the CODA-Prompt repository has it: G length 6 (3 + 3), E pool 10 of length 20
    /// (10 + 10) with a key set per layer chosen independently, no copying, U(0, 1) init.
    let dualPromptCoda =
        { plain "dualprompt-coda" "DualPrompt (CODA repository): G 6 tokens at 0-1, E pool 10 x 20 at 2-4, keys per layer"
            with
            Groups =
                [ { Name = "g"; Layers = Only [ 0; 1 ]; Length = 6; Insertion = PrefixTokens SplitHalves
                    Source = Static; Init = Uniform(0.0, 1.0); Dropout = 0.0 }
                  { Name = "e"; Layers = Only [ 2; 3; 4 ]; Length = 20; Insertion = PrefixTokens SplitHalves
                    Source =
                      Keyed
                          { keyed 10 1 with
                              KeysPerLayer = true
                              TrainWithTaskId = true
                              PullLoss = OneMinusCosineSummed
                              PullWeight = 1.0 }
                    Init = Uniform(0.0, 1.0); Dropout = 0.0 } ]
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.codaRepository }

    let codaPrompt =
        { plain "coda-prompt" "CODA-Prompt: 100 components of length 8 at layers 0-4, alpha = cos(q * A, K)"
            with
            Groups =
                [ { Name = "coda"; Layers = Only [ 0 .. 4 ]; Length = 8; Insertion = PrefixTokens SplitHalves
                    Source = Components { Components = 100; OrthogonalityWeight = 0.0 }
                    Init = GramSchmidt; Dropout = 0.0 } ]
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.codaRepository }

    let vqPrompt =
        { plain "vq-prompt" "VQ-Prompt: pool 10 of length 8 at layers 0-4, quantised with a straight-through estimator"
            with
            Groups =
                [ { Name = "vq"; Layers = Only [ 0 .. 4 ]; Length = 8; Insertion = PrefixTokens SplitHalves
                    Source = Quantised { PoolSize = 10; Temperature = 1.0; ContinuousWeight = 0.4; DiscreteWeight = 0.1 }
                    Init = Uniform(0.0, 1.0); Dropout = 0.0 } ]
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.vqPrompt
            Calibration = AlignedHead Method.vqAlignment }

    /// Hybrid: DualPrompt whose E-prompts are chosen by vector quantisation instead of key matching.
    let dualVq tasks =
        let dual = dualPrompt tasks
        { dual with
            Name = "dual-vq"
            Description = "Hybrid: DualPrompt G-prompt + VQ-chosen E-prompts (pool 10) at layers 2-4"
            Groups =
                [ dual.Groups.Head
                  { dual.Groups[1] with
                      Source = Quantised { PoolSize = 10; Temperature = 1.0; ContinuousWeight = 0.4; DiscreteWeight = 0.1 }
                      Init = Uniform(0.0, 1.0) } ] }

    /// Hybrid: VPT-deep whose per-layer prompts come from an L2P-style keyed pool (top-1).
    let vptDeepPool =
        { vptDeep with
            Name = "vpt-deep-pool"
            Description = "Hybrid: VPT-deep whose per-layer prompts are picked from a keyed pool of 10 (top-1)"
            Groups = [ { vptDeep.Groups.Head with Source = Keyed(keyed 10 1); Dropout = 0.0 } ]
            TrainingLogits = CurrentTaskClasses
            Recipe = Recipes.l2p }

    /// SLCA: the whole backbone learns slowly, each task's head (truncated normal 0.02) on the
    /// current task's logits; then classifier alignment on class Gaussians from the second task on.
    /// The pretrained final norm is kept (the official code re-initialises it; see METHODS.md).
    let slca =
        { plain "slca" "SLCA: slow learner (backbone 1e-4, head 0.01), classifier alignment on class Gaussians"
            with
            Backbone = FullBackbone
            TrainingLogits = CurrentTaskClasses
            HeadTruncatedNormal = Some 0.02
            Calibration = AlignedHead Method.slcaAlignment
            Recipe = Recipes.slca }

    let linear = plain "linear" "Linear probe: head only"
    let full = { plain "full" "Full fine-tuning" with Backbone = FullBackbone; Recipe = Recipes.backbone }
    let partial k =
        { plain (sprintf "partial-%d" k) (sprintf "Partial-%d: last %d blocks and the final norm" k k) with
            Backbone = LastBlocks k
            Recipe = Recipes.backbone }
    let mlp k = { plain (sprintf "mlp-%d" k) (sprintf "Mlp-%d: head with %d hidden layers of width D" k k) with Head = MlpHead k }
    let bias = { plain "bias" "BitFit: every bias term" with Backbone = BiasTerms }
    let adapter = { plain "adapter" "Adapter after each MLP, reduction 8" with AdapterReduction = Some 8 }
    let sequential = { plain "sequential" "Sequential fine-tuning (continual lower bound)" with Backbone = FullBackbone; Recipe = Recipes.backbone }
    let simpleCil = { plain "simplecil" "SimpleCIL: frozen backbone, class-mean cosine head, no training" with Head = PrototypeHead }
    let joint = { plain "joint" "Joint training on all classes (upper bound)" with Backbone = FullBackbone; Recipe = Recipes.backbone }

    /// AdaptFormer's parallel adapter as APER and RanPAC configure it: bottleneck 64, scale 0.1, dropout 0.1.
    let adaptFormer = { Bottleneck = 64; Scale = 0.1; Dropout = 0.1 }

    /// SSF as APER initialises it: γ ~ N(1, 0.02²), β ~ N(0, 0.02²).
    let ssf = { InitStd = 0.02 }

    /// APER: train a parameter-efficient module with a cosine head on the first task only, then
    /// predict by cosine similarity to class means of [f_PTM(x); g(x)], one L2 norm over both.
    let private aper name description =
        { plain name description with
            Head = CosineHead
            Adaptation = FirstTaskOnly
            Calibration = ClassMeans
            HeadFeatures = PretrainedAndAdapted
            Recipe = Recipes.firstSession }

    let aperAdapter = { aper "aper-adapter" "APER: AdaptFormer adapter (64) on the first task, then class means of PTM + adapted features" with ParallelAdapter = Some adaptFormer }
    let aperSsf = { aper "aper-ssf" "APER: SSF scale and shift on the first task, then class means of PTM + adapted features" with ScaleShift = Some ssf }

    /// APER's VPT: 5 prompt tokens initialised at zero, at the input (shallow) or fresh before every
    /// block (deep). APER appends them after the patch tokens; without position embeddings on the
    /// prompts the class token's output does not depend on where they sit, so they go after CLS.
    let private aperVpt name layers depthText =
        { aper name (sprintf "APER: VPT-%s (5 zero-initialised tokens) on the first task, then class means of PTM + adapted features" depthText) with
            Groups =
                [ { Name = "vpt"; Layers = layers; Length = 5; Insertion = PromptTokens(AfterClassToken, false)
                    Source = Static; Init = Uniform(0.0, 0.0); Dropout = 0.0 } ] }

    let aperVptShallow = aperVpt "aper-vpt-shallow" (Only [ 0 ]) "shallow"
    let aperVptDeep = aperVpt "aper-vpt-deep" AllLayers "deep"
    let aperBitfit = { aper "aper-bitfit" "APER: bias terms on the first task, then class means of PTM + adapted features" with Backbone = BiasTerms }

    /// RanPAC: APER's first-session adapter training (no PTM concatenation), then a ridge head on a
    /// fixed random projection to 10,000 with ReLU, over every image seen.
    let ranpac =
        { plain "ranpac" "RanPAC: adapter (64) on the first task, then ridge regression on a random ReLU projection (M = 10,000)" with
            ParallelAdapter = Some adaptFormer
            Head = CosineHead
            Adaptation = FirstTaskOnly
            Calibration = RandomProjectionRidge Method.ranpacRidge
            Recipe = Recipes.firstSession }

    /// Every named method for a sequence of `tasks` tasks, in display order.
    let all tasks =
        [ vptShallow; vptDeep; l2p; l2pJax; l2pPlusPlus; dualPrompt tasks; dualPromptCoda; codaPrompt; vqPrompt
          dualVq tasks; vptDeepPool
          linear; full; partial 1; mlp 3; bias; adapter; sequential; simpleCil; joint
          aperAdapter; aperSsf; aperVptShallow; aperVptDeep; aperBitfit; ranpac; slca ]

    /// What can predict for any method (`--head NAME`), as data: each choice's name and how it
    /// changes a method. `ridge:M` takes a projection of M.
    /// A named change of a method chosen on the command line, from a table of (name, change).
    let private choose (choices: (string * (Method -> Method)) list) (value: string) =
        let key = value.Trim().ToLowerInvariant()
        choices |> List.tryFind (fun (name, _) -> name = key) |> Option.map snd

    /// The one-line refusal of an unknown choice, listing the known ones.
    let private expected (option: string) (value: string) (choices: (string * (Method -> Method)) list) (extra: string) =
        Errors.fail "%s %s: expected %s%s" option value (choices |> List.map fst |> String.concat ", ") extra

    module HeadChoices =
        let private ridgeOf size = { Method.ranpacRidge with ProjectionSize = size }

        let all: (string * (Method -> Method)) list =
            [ // The trained head reads the adapted features only.
              "linear", fun m -> { m with Calibration = TrainedHead; HeadFeatures = AdaptedFeatures }
              "prototype", fun m -> { m with Calibration = ClassMeans }
              "ridge", fun m -> { m with Calibration = RandomProjectionRidge Method.ranpacRidge }
              // The method's own aligned head when it has one (SLCA's alignment, VQ-Prompt's
              // bias mitigation), else SLCA's classifier alignment with the official settings.
              "aligned",
              fun m ->
                  match m.Calibration with
                  | AlignedHead _ -> m
                  | _ -> { m with Calibration = AlignedHead Method.slcaAlignment } ]

        /// The method with the named choice applied; one line naming the option otherwise.
        let apply (head: string) (m: Method) =
            let key = head.Trim().ToLowerInvariant()
            match choose all head with
            | Some change -> change m
            | None when key.StartsWith "ridge:" ->
                match System.Int32.TryParse(key.Substring 6) with
                | true, size when size > 0 -> { m with Calibration = RandomProjectionRidge(ridgeOf size) }
                | _ -> Errors.fail "--head %s: the projection size after ridge: must be a positive integer (ridge:10000 is RanPAC's)" head
            | None -> expected "--head" head all " or ridge:M (a projection to M)"

    /// When the trainable parts learn (`--adapt`), as a table of named changes.
    module AdaptationChoices =
        let all: (string * (Method -> Method)) list =
            [ "every-task", fun m -> { m with Adaptation = EveryTask }
              "first-task", fun m -> { m with Adaptation = FirstTaskOnly }
              // SLCA's slow learner: every task, everything but the head at 1/100 of the head's rate.
              "slow-learner",
              fun m ->
                  if not (Method.trainsFeatures m) then
                      Errors.fail "--adapt slow-learner: method %s trains nothing besides its head, so there is no slower part" m.Name
                  let head = defaultArg m.Recipe.HeadLearningRate m.Recipe.LearningRate
                  { m with Adaptation = EveryTask; Recipe = { m.Recipe with HeadLearningRate = Some head; LearningRate = head / 100.0 } } ]

        /// The method with the named choice applied; one line naming the option otherwise.
        let apply (adapt: string) (m: Method) =
            match choose all adapt with
            | Some change -> change m
            | None -> expected "--adapt" adapt all ""

    /// Looks a method up by name; "partial-K" and "mlp-K" take any K.
    let find (name: string) tasks =
        let key = name.Trim().ToLowerInvariant()
        let numbered (prefix: string) make =
            if key.StartsWith prefix then
                match System.Int32.TryParse(key.Substring prefix.Length) with
                | true, k when k > 0 -> Some(make k)
                | _ -> None
            else None
        match all tasks |> List.tryFind (fun m -> m.Name = key) with
        | Some m -> m
        | None ->
            match numbered "partial-" partial |> Option.orElse (numbered "mlp-" mlp) with
            | Some m -> m
            | None ->
                Errors.fail "method %s: unknown; expected one of %s" name (all tasks |> List.map (fun m -> m.Name) |> String.concat ", ")
