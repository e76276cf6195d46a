namespace Prompting.CSharp;

/// <summary>
/// A failure a caller can act on: an unreadable or invalid checkpoint, an image that cannot be
/// decoded, an input of the wrong size, an unavailable device, an unwritable output path.
/// </summary>
/// <remarks>
/// <see cref="Exception.Message"/> is a single line that names the thing at fault (usually a path
/// or an argument) and the problem, suitable for showing to a user as it is. Programming errors
/// are not reported this way: <see langword="null"/> arguments throw
/// <see cref="ArgumentNullException"/>, and using a disposed model throws
/// <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed class PromptingException : Exception
{
    /// <summary>Creates an exception with a generic message.</summary>
    public PromptingException()
        : base("Prompting operation failed")
    {
    }

    /// <summary>Creates an exception with a one-line message.</summary>
    /// <param name="message">What failed and why, on one line.</param>
    public PromptingException(string message)
        : base(message)
    {
    }

    /// <summary>Creates an exception with a one-line message and the error that caused it.</summary>
    /// <param name="message">What failed and why, on one line.</param>
    /// <param name="innerException">The underlying error.</param>
    public PromptingException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
