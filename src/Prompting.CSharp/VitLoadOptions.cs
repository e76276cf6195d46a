namespace Prompting.CSharp;

/// <summary>
/// How <see cref="VitModel.Load(string, VitLoadOptions?)"/> builds a model from a checkpoint and
/// how it runs it. Every property has a usable default.
/// </summary>
/// <remarks>
/// <see cref="Mean"/> and <see cref="Std"/> are arrays, so record equality compares them by
/// reference. The model copies them when it is loaded; changing them afterwards has no effect.
/// </remarks>
public sealed record VitLoadOptions
{
    /// <summary>
    /// Input resolution in pixels, a multiple of the patch size. When it differs from the
    /// checkpoint's, the position embeddings are resampled (bicubic, as timm does).
    /// <see langword="null"/> keeps the checkpoint's resolution.
    /// </summary>
    public int? ImageSize { get; init; }

    /// <summary>
    /// Number of attention heads. Checkpoints from timm or Google do not record it, so it must be
    /// given unless the width is 64 × heads. Files written by <see cref="VitModel.Export"/>
    /// record it and take precedence.
    /// </summary>
    public int? Heads { get; init; }

    /// <summary>
    /// Number of output classes. A value different from the checkpoint's replaces the
    /// classification head with a freshly initialised one; 0 removes it (features only).
    /// <see langword="null"/> keeps the checkpoint's head.
    /// </summary>
    public int? NumClasses { get; init; }

    /// <summary>
    /// Where to run: <c>"cpu"</c>, <c>"cuda"</c>, <c>"cuda:N"</c>, or <c>"auto"</c> (the
    /// default: CUDA when available, the CPU otherwise).
    /// </summary>
    public string Device { get; init; } = "auto";

    /// <summary>How many images are sent through the model at once. Must be positive.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>
    /// Centre-crop fraction used when reading image files: the shorter side is resized to
    /// floor(ImageSize / CropPct), then the centre ImageSize × ImageSize square is kept.
    /// In (0, 1]; 0.9 as for timm's AugReg ViTs.
    /// </summary>
    public double CropPct { get; init; } = 0.9;

    /// <summary>Per-channel (R, G, B) mean subtracted from pixel values in [0, 1].</summary>
    public float[] Mean { get; init; } = [0.5f, 0.5f, 0.5f];

    /// <summary>Per-channel (R, G, B) standard deviation the centred values are divided by.</summary>
    public float[] Std { get; init; } = [0.5f, 0.5f, 0.5f];

    /// <summary>The ImageNet statistics (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225; crop 0.875).</summary>
    public static VitLoadOptions ImageNet { get; } = new()
    {
        CropPct = 0.875,
        Mean = [0.485f, 0.456f, 0.406f],
        Std = [0.229f, 0.224f, 0.225f],
    };

    /// <summary>Throws <see cref="PromptingException"/> naming the first invalid property.</summary>
    internal void Validate()
    {
        static void Fail(string message) => throw new PromptingException("options." + message);

        if (ImageSize is <= 0) Fail($"ImageSize: must be positive, got {ImageSize}");
        if (Heads is <= 0) Fail($"Heads: must be positive, got {Heads}");
        if (NumClasses is < 0) Fail($"NumClasses: must be 0 or more, got {NumClasses}");
        if (BatchSize <= 0) Fail($"BatchSize: must be positive, got {BatchSize}");
        if (!(CropPct > 0.0 && CropPct <= 1.0)) Fail($"CropPct: must be in (0, 1], got {CropPct}");
        if (Mean is null || Mean.Length != 3) Fail($"Mean: expected 3 values (R, G, B), got {Mean?.Length ?? 0}");
        if (Std is null || Std.Length != 3) Fail($"Std: expected 3 values (R, G, B), got {Std?.Length ?? 0}");
        if (Mean!.Any(v => !float.IsFinite(v))) Fail("Mean: values must be finite");
        if (Std!.Any(v => !(v > 0f) || !float.IsFinite(v))) Fail("Std: values must be positive and finite");
    }
}
