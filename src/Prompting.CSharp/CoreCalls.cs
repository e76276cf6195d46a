using System.Runtime.InteropServices;
using Microsoft.FSharp.Core;

namespace Prompting.CSharp;

/// <summary>Runs calls into the F# core and turns its failures into <see cref="PromptingException"/>.</summary>
internal static class CoreCalls
{
    /// <param name="call">The call into the core.</param>
    /// <param name="ioContext">
    /// Prefix for file-system errors (their .NET messages do not always name the file at fault),
    /// such as the path being read or written.
    /// </param>
    internal static T Run<T>(Func<T> call, string? ioContext = null)
    {
        try
        {
            return call();
        }
        catch (Exception e) when (Translate(e, ioContext) is { } wrapped)
        {
            throw wrapped;
        }
    }

    internal static void Run(Action call, string? ioContext = null) =>
        Run<bool>(
            () =>
            {
                call();
                return true;
            },
            ioContext);

    internal static FSharpOption<int> Option(int? value) =>
        value is { } v ? FSharpOption<int>.Some(v) : FSharpOption<int>.None;

    /// <summary>The exception to throw instead of <paramref name="e"/>, or null to let it pass.</summary>
    private static PromptingException? Translate(Exception e, string? ioContext)
    {
        switch (e)
        {
            case PromptingException:
                return null;
            case PromptingError core:
                return new PromptingException(OptionWording.ForCSharp(OneLine(core.Data0)), core);
            case AggregateException aggregate:
                // Image decoding runs in parallel: report the first failure.
                foreach (var inner in aggregate.Flatten().InnerExceptions)
                {
                    if (Translate(inner, ioContext) is { } wrapped) return wrapped;
                }

                return null;
            case IOException or UnauthorizedAccessException:
                return new PromptingException(ioContext is null ? OneLine(e.Message) : $"{ioContext}: {OneLine(e.Message)}", e);
            case ExternalException:
                // libtorch errors carry a C++ backtrace after the first line.
                return new PromptingException("libtorch: " + OneLine(e.Message), e);
            default:
                return null;
        }
    }

    private static string OneLine(string message)
    {
        var trimmed = message.Trim();
        var end = trimmed.IndexOfAny(['\r', '\n']);
        return end < 0 ? trimmed : trimmed[..end].TrimEnd();
    }
}
