namespace Prompting.CSharp;

/// <summary>The top classes predicted for one image file.</summary>
/// <param name="File">
/// The image's display name: its path relative to the directory it was found in, with forward
/// slashes, or the path as given when the file itself was passed.
/// </param>
/// <param name="Path">The path the image was read from.</param>
/// <param name="TopClasses">Class indices, highest logit first (ties: lower index first).</param>
/// <param name="TopLogits">The logits of <paramref name="TopClasses"/>, in the same order.</param>
public sealed record ImagePrediction(string File, string Path, int[] TopClasses, float[] TopLogits);
