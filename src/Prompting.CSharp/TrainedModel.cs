using Microsoft.FSharp.Core;
using Prompting.Data;
using Prompting.Engine;
using Prompting.Prompts;
using Prompting.Vit;
using TorchSharp;
using EngineExperiment = Prompting.Engine.Experiment;

namespace Prompting.CSharp;

/// <summary>
/// The model a run trained: its backbone, its method's prompts and head, and the state saved
/// after the last completed task, ready for class-incremental prediction.
/// </summary>
/// <remarks>
/// <para>
/// Class indices are those of the run's scenario: classes in the order the run presented them
/// (shuffled with the seed unless the run asked otherwise), task 0's first. Predictions are the
/// argmax over every class seen up to the last completed task, as the run's class-incremental
/// evaluation does.
/// </para>
/// <para>
/// Instances hold native (libtorch) memory: dispose them when done. Calls on one instance are
/// serialised; after <see cref="Dispose"/> every method throws <see cref="ObjectDisposedException"/>.
/// </para>
/// </remarks>
public sealed class TrainedModel : IDisposable
{
    private readonly Lock _gate = new();
    private readonly PromptedModel _model;
    private readonly torch.Device _device;
    private readonly Transform _transform;
    private bool _disposed;

    private TrainedModel(PromptedModel model, torch.Device device, RunConfig config, string[] classNames, int completedTasks, string[] notes)
    {
        _model = model;
        _device = device;
        _transform = RunPredict.transform(config);
        Notes = notes;
        ImageSize = config.ImageSize;
        Method = config.Method.Name;
        ClassNames = classNames;
        CompletedTasks = completedTasks;
        Tasks = model.Layout.ClassesPerTask.Length;
        NumClasses = TaskLayoutModule.seen(model.Layout, model.Task);
        BatchSize = Math.Max(1, config.Method.Recipe.BatchSize);
        Device = device.type == DeviceType.CUDA ? (device.index >= 0 ? $"cuda:{device.index}" : "cuda") : device.type.ToString().ToLowerInvariant();
    }

    /// <summary>The method's name.</summary>
    public string Method { get; }

    /// <summary>Input resolution in pixels: the run's image size.</summary>
    public int ImageSize { get; }

    /// <summary>Number of floats one image occupies in a pixel array: 3 × ImageSize × ImageSize.</summary>
    public int ValuesPerImage => 3 * ImageSize * ImageSize;

    /// <summary>Number of tasks of the run.</summary>
    public int Tasks { get; }

    /// <summary>Number of tasks trained: the state loaded is that after task <c>CompletedTasks - 1</c>.</summary>
    public int CompletedTasks { get; }

    /// <summary>Number of classes seen so far: predictions are in 0 .. NumClasses - 1.</summary>
    public int NumClasses { get; }

    /// <summary>
    /// The name of every class of the scenario, indexed by class (scenario order); the first
    /// <see cref="NumClasses"/> are those predictions can name.
    /// </summary>
    public string[] ClassNames { get; }

    /// <summary>Where the model runs: <c>"cpu"</c> or <c>"cuda"</c> / <c>"cuda:N"</c>.</summary>
    public string Device { get; }

    /// <summary>
    /// What <see cref="Load"/> found elsewhere than the run recorded, one line each: a checkpoint
    /// given at a new path (same SHA-256), or found relative to the run directory.
    /// </summary>
    public string[] Notes { get; }

    /// <summary>How many images are sent through the model at once (the run's batch size).</summary>
    public int BatchSize { get; }

    /// <summary>
    /// Rebuilds a run's model from its directory and checkpoint alone: reads its configuration and
    /// the class names and task layout it recorded, builds the backbone and the method, and loads
    /// the state saved after the last completed task. The training data are not needed (runs made
    /// before runs recorded <c>scenario.json</c> read them for the class order).
    /// </summary>
    /// <param name="runDirectory">The run directory.</param>
    /// <param name="device"><c>"cpu"</c>, <c>"cuda"</c>, <c>"cuda:N"</c> or <c>"auto"</c> (CUDA when available).</param>
    /// <param name="checkpoint">
    /// The run's checkpoint when it is no longer where the run recorded it: its SHA-256 must be
    /// the recorded one (see <see cref="Notes"/>). Null: the recorded path.
    /// </param>
    /// <returns>The model; dispose it when done.</returns>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    /// <exception cref="PromptingException">
    /// The directory is not a run directory or has no completed task, the checkpoint cannot be
    /// found or is not the one the run used, or the device is unavailable.
    /// </exception>
    public static TrainedModel Load(string runDirectory, string device = "auto", string? checkpoint = null)
    {
        ArgumentNullException.ThrowIfNull(runDirectory);
        ArgumentNullException.ThrowIfNull(device);
        return CoreCalls.Run(() =>
        {
            var options = new ReopenOptions(
                checkpoint is null ? FSharpOption<string>.None : FSharpOption<string>.Some(checkpoint),
                FSharpOption<string>.None,
                false);
            var run = EngineExperiment.reopen(runDirectory, Devices.parse(device), options);
            var config = run.Recorded.Config;
            return new TrainedModel(run.Model, Devices.parse(device), config, (string[])run.ClassNames.Clone(), run.LastTask + 1, run.Notes.ToArray());
        }, runDirectory);
    }

    /// <summary>Predicts the class of each image (class-incremental: argmax over the classes seen).</summary>
    /// <param name="pixels">
    /// <paramref name="count"/> images of 3 × <see cref="ImageSize"/> × <see cref="ImageSize"/>
    /// floats each (NCHW), preprocessed as <see cref="PreprocessImage"/> does.
    /// </param>
    /// <param name="count">Number of images in <paramref name="pixels"/>.</param>
    /// <returns>One class index per image, in 0 .. <see cref="NumClasses"/> - 1.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="pixels"/> is null.</exception>
    /// <exception cref="PromptingException">The array length is not <paramref name="count"/> × <see cref="ValuesPerImage"/>.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public int[] Predict(float[] pixels, int count)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(pixels);
        if (count < 0) throw new PromptingException($"count: must be 0 or more, got {count}");
        var expected = (long)count * ValuesPerImage;
        if (pixels.LongLength != expected)
        {
            throw new PromptingException(
                $"pixels: expected {count} × 3 × {ImageSize} × {ImageSize} = {expected} values (count × channels × height × width), got {pixels.LongLength}");
        }

        var logits = Logits(count, (start, n) => pixels.AsSpan(start * ValuesPerImage, n * ValuesPerImage).ToArray());
        var classes = new int[count];
        for (var i = 0; i < count; i++) classes[i] = ArgMax(logits[i]);
        return classes;
    }

    /// <summary>
    /// Decodes image files and applies the run's evaluation transform (bicubic resize of the
    /// shorter side, centre crop, the run's normalisation), giving what <see cref="Predict"/> takes.
    /// </summary>
    /// <param name="file">Path of the image.</param>
    /// <returns><see cref="ValuesPerImage"/> floats in CHW order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="file"/> is null.</exception>
    /// <exception cref="PromptingException">The file is missing or cannot be decoded.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public float[] PreprocessImage(string file)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(file);
        return CoreCalls.Run(() => Transform(file), file);
    }

    /// <summary>
    /// Decodes image files (JPEG, PNG, BMP, GIF, TGA) with the run's preprocessing and returns
    /// the top classes of each among the classes seen.
    /// </summary>
    /// <param name="files">Image files and directories; directories are searched recursively for images.</param>
    /// <param name="topK">How many classes to return per image; values above <see cref="NumClasses"/> return all.</param>
    /// <returns>One prediction per image, sorted by <see cref="ImagePrediction.File"/> (ordinal).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="files"/> or one of its items is null.</exception>
    /// <exception cref="PromptingException">
    /// A path does not exist, a directory holds no images, an image cannot be decoded, or
    /// <paramref name="topK"/> is not positive.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public ImagePrediction[] ClassifyImages(IEnumerable<string> files, int topK = 5)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(files);
        var inputs = files.ToArray();
        if (Array.IndexOf(inputs, null) >= 0) throw new ArgumentNullException(nameof(files), "The sequence contains a null path.");
        if (topK <= 0) throw new PromptingException($"topK: must be positive, got {topK}");
        return CoreCalls.Run(() =>
        {
            var found = Images.collect(inputs);
            var logits = Logits(found.Length, (start, n) =>
            {
                var chunk = new float[n][];
                Parallel.For(0, n, i => chunk[i] = Transform(found[start + i].Item2));
                return chunk.SelectMany(c => c).ToArray();
            });
            var predictions = new ImagePrediction[found.Length];
            for (var i = 0; i < found.Length; i++)
            {
                var row = logits[i];
                var top = Prompting.Predict.topK(topK, row);
                predictions[i] = new ImagePrediction(found[i].Item1, found[i].Item2, top, Array.ConvertAll(top, c => row[c]));
            }

            return predictions;
        });
    }

    /// <summary>Releases the native model. Calling it again does nothing.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _model.Dispose();
        }
    }

    /// <summary>A one-line description of the model.</summary>
    /// <returns>For example <c>linear after task 2/2, 4 classes seen, 32px, cpu</c>.</returns>
    public override string ToString() =>
        $"{Method} after task {CompletedTasks}/{Tasks}, {NumClasses} classes seen, {ImageSize}px, {Device}";

    private float[] Transform(string file) => _transform.Apply.Invoke(new Random(0)).Invoke(Images.decode(file));

    /// <summary>Logits over the seen classes, batch by batch; <paramref name="batch"/> gives the pixels of images start .. start + n - 1.</summary>
    private float[][] Logits(int count, Func<int, int, float[]> batch)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return CoreCalls.Run(() => RunPredict.logits(_model, _device, ImageSize, BatchSize, count, FuncConvert.FromFunc(batch)));
        }
    }

    private static int ArgMax(float[] row)
    {
        var best = 0;
        for (var i = 1; i < row.Length; i++)
        {
            if (row[i] > row[best]) best = i;
        }

        return best;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}
