using Prompting.Tensors;
using Prompting.Vit;
using TorchSharp;

namespace Prompting.CSharp;

/// <summary>
/// A Vision Transformer (timm's architecture) loaded from a checkpoint and ready for inference.
/// </summary>
/// <remarks>
/// <para>
/// Instances hold native (libtorch) memory: dispose them when done. After
/// <see cref="Dispose"/>, every method throws <see cref="ObjectDisposedException"/>; the
/// architecture properties stay readable.
/// </para>
/// <para>
/// All methods are thread-safe: calls on one instance are serialised. Failures a caller can act
/// on (bad files, bad sizes, unavailable devices) throw <see cref="PromptingException"/>.
/// </para>
/// </remarks>
/// <example>
/// <code>
/// using var model = VitModel.Load("vit.safetensors", new VitLoadOptions { Heads = 3 });
/// foreach (var p in model.ClassifyImages(["photos/"]))
///     Console.WriteLine($"{p.File}: {p.TopClasses[0]}");
/// </code>
/// </example>
public sealed class VitModel : IDisposable
{
    private readonly Lock _gate = new();
    private readonly VisionTransformer _module;
    private readonly torch.Device _device;
    private readonly Preprocessing _preprocessing;
    private bool _disposed;

    private VitModel(VisionTransformer module, torch.Device device, VitLoadOptions options)
    {
        _module = module;
        _device = device;
        _preprocessing = new Preprocessing(options.CropPct, (float[])options.Mean.Clone(), (float[])options.Std.Clone());
        BatchSize = options.BatchSize;
        var c = module.Config;
        ImageSize = c.ImageSize;
        PatchSize = c.PatchSize;
        Width = c.Width;
        Depth = c.Depth;
        Heads = c.Heads;
        NumClasses = c.Classes;
        Device = DeviceName(device);
    }

    /// <summary>Whether this libtorch build can see a CUDA GPU (what <c>Device = "auto"</c> picks).</summary>
    public static bool IsCudaAvailable => torch.cuda.is_available();

    /// <summary>Input resolution in pixels: images are <c>ImageSize</c> × <c>ImageSize</c>.</summary>
    public int ImageSize { get; }

    /// <summary>Side of the square patches the image is cut into.</summary>
    public int PatchSize { get; }

    /// <summary>Embedding width D: the length of each feature vector.</summary>
    public int Width { get; }

    /// <summary>Number of transformer blocks.</summary>
    public int Depth { get; }

    /// <summary>Number of attention heads.</summary>
    public int Heads { get; }

    /// <summary>Number of classes of the head: the length of each logit row; 0 when there is no head.</summary>
    public int NumClasses { get; }

    /// <summary>Where the model runs: <c>"cpu"</c> or <c>"cuda"</c> / <c>"cuda:N"</c>.</summary>
    public string Device { get; }

    /// <summary>How many images are sent through the model at once.</summary>
    public int BatchSize { get; }

    /// <summary>Number of floats one image occupies in a pixel array: 3 × ImageSize × ImageSize.</summary>
    public int ValuesPerImage => 3 * ImageSize * ImageSize;

    /// <summary>
    /// Reads a checkpoint (safetensors with timm key names, or a Google ViT <c>.npz</c>),
    /// validates every tensor, and builds the model on the requested device.
    /// </summary>
    /// <param name="checkpointPath">Path of the <c>.safetensors</c> or <c>.npz</c> file.</param>
    /// <param name="options">Overrides and run settings; <see langword="null"/> uses the defaults.</param>
    /// <returns>The loaded model; dispose it when done.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="checkpointPath"/> is null.</exception>
    /// <exception cref="PromptingException">
    /// The file is missing, truncated, of an unknown format or inconsistent; an option is invalid;
    /// or the device is unavailable.
    /// </exception>
    public static VitModel Load(string checkpointPath, VitLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(checkpointPath);
        options ??= new VitLoadOptions();
        options.Validate();
        return CoreCalls.Run(() =>
        {
            var device = Devices.parse(options.Device);
            var checkpoint = CheckpointModule.read(checkpointPath, CoreCalls.Option(options.Heads));
            var loadOptions = new LoadOptions(
                CoreCalls.Option(options.ImageSize),
                CoreCalls.Option(options.Heads),
                CoreCalls.Option(options.NumClasses));
            var module = CheckpointModule.toModel(loadOptions, checkpoint);
            try
            {
                Predict.prepare(device, module);
                return new VitModel(module, device, options);
            }
            catch
            {
                module.Dispose();
                throw;
            }
        }, checkpointPath);
    }

    /// <summary>Runs the model on normalised pixels and returns the classification logits.</summary>
    /// <param name="pixels">
    /// <paramref name="count"/> images of 3 × <see cref="ImageSize"/> × <see cref="ImageSize"/>
    /// floats each, in NCHW order (channel planes R, G, B, each row-major), already normalised
    /// with the model's mean and standard deviation.
    /// </param>
    /// <param name="count">Number of images in <paramref name="pixels"/>.</param>
    /// <returns>One row of <see cref="NumClasses"/> logits per image, in input order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="pixels"/> is null.</exception>
    /// <exception cref="PromptingException">
    /// The array length is not <paramref name="count"/> × <see cref="ValuesPerImage"/>, or the
    /// model has no classification head.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public float[][] PredictLogits(float[] pixels, int count) => RunOnArray(pixels, count, PredictOutput.Logits);

    /// <summary>
    /// Runs the model on normalised pixels and returns the pre-logits features: the final-norm
    /// class token, as timm's <c>forward_head(..., pre_logits=True)</c>.
    /// </summary>
    /// <param name="pixels">As for <see cref="PredictLogits"/>.</param>
    /// <param name="count">Number of images in <paramref name="pixels"/>.</param>
    /// <returns>One row of <see cref="Width"/> features per image, in input order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="pixels"/> is null.</exception>
    /// <exception cref="PromptingException">The array length is not <paramref name="count"/> × <see cref="ValuesPerImage"/>.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public float[][] ExtractFeatures(float[] pixels, int count) => RunOnArray(pixels, count, PredictOutput.Features);

    /// <summary>
    /// Decodes image files (JPEG, PNG, BMP, GIF, TGA), applies the evaluation transform (bicubic
    /// resize of the shorter side, centre crop, normalisation) and returns the top classes of each.
    /// </summary>
    /// <param name="filesOrDirectories">
    /// Image files and directories; directories are searched recursively for files with an
    /// image extension.
    /// </param>
    /// <param name="topK">
    /// How many classes to return per image; values above <see cref="NumClasses"/> return all.
    /// </param>
    /// <returns>One prediction per image, sorted by <see cref="ImagePrediction.File"/> (ordinal).</returns>
    /// <exception cref="ArgumentNullException"><paramref name="filesOrDirectories"/> or one of its items is null.</exception>
    /// <exception cref="PromptingException">
    /// A path does not exist, a directory holds no images, an image cannot be decoded,
    /// <paramref name="topK"/> is not positive, or the model has no classification head.
    /// </exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public ImagePrediction[] ClassifyImages(IEnumerable<string> filesOrDirectories, int topK = 5)
    {
        ThrowIfDisposed();
        var inputs = Materialise(filesOrDirectories, nameof(filesOrDirectories));
        if (topK <= 0) throw new PromptingException($"topK: must be positive, got {topK}");
        lock (_gate)
        {
            ThrowIfDisposed();
            return CoreCalls.Run(() =>
            {
                var found = Images.collect(inputs);
                var paths = Array.ConvertAll(found, f => f.Item2);
                var logits = Rows(Predict.onImages(_module, _device, BatchSize, PredictOutput.Logits, _preprocessing, paths));
                var predictions = new ImagePrediction[found.Length];
                for (var i = 0; i < found.Length; i++)
                {
                    var row = logits[i];
                    var top = Predict.topK(topK, row);
                    predictions[i] = new ImagePrediction(found[i].Item1, found[i].Item2, top, Array.ConvertAll(top, c => row[c]));
                }

                return predictions;
            });
        }
    }

    /// <summary>
    /// Decodes image files, applies the evaluation transform and returns their pre-logits
    /// features (see <see cref="ExtractFeatures"/>).
    /// </summary>
    /// <param name="files">Image files (not directories), in the order the rows should have.</param>
    /// <returns>One row of <see cref="Width"/> features per file, in input order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="files"/> or one of its items is null.</exception>
    /// <exception cref="PromptingException">A file is missing, is a directory, or cannot be decoded.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public float[][] ExtractImageFeatures(IEnumerable<string> files)
    {
        ThrowIfDisposed();
        var paths = Materialise(files, nameof(files));
        foreach (var path in paths)
        {
            if (Directory.Exists(path))
                throw new PromptingException($"{path}: is a directory; ExtractImageFeatures takes image files (ClassifyImages accepts directories)");
            if (!File.Exists(path)) throw new PromptingException($"{path}: file not found");
        }

        lock (_gate)
        {
            ThrowIfDisposed();
            return CoreCalls.Run(() =>
                Rows(Predict.onImages(_module, _device, BatchSize, PredictOutput.Features, _preprocessing, paths)));
        }
    }

    /// <summary>
    /// Decodes one image file and applies the model's evaluation transform, giving the
    /// normalised pixels that <see cref="ClassifyImages"/> and <see cref="ExtractImageFeatures"/>
    /// feed to the model (usable with <see cref="PredictLogits"/> and a count of 1).
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
        return CoreCalls.Run(() => Images.preprocess(ImageSize, _preprocessing, Images.decode(file)), file);
    }

    /// <summary>
    /// Writes the model's weights as safetensors with timm key names (atomically: a temporary
    /// file is renamed into place). The file records the head count and loads without options.
    /// </summary>
    /// <param name="safetensorsPath">Destination path; missing directories are created.</param>
    /// <exception cref="ArgumentNullException"><paramref name="safetensorsPath"/> is null.</exception>
    /// <exception cref="PromptingException">The path is empty or cannot be written.</exception>
    /// <exception cref="ObjectDisposedException">The model was disposed.</exception>
    public void Export(string safetensorsPath)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(safetensorsPath);
        if (string.IsNullOrWhiteSpace(safetensorsPath)) throw new PromptingException("export: the output path is empty");
        lock (_gate)
        {
            ThrowIfDisposed();
            CoreCalls.Run(() => CheckpointModule.export(safetensorsPath, _module), $"{safetensorsPath}: cannot write");
        }
    }

    /// <summary>Releases the native model. Calling it again does nothing.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _module.Dispose();
        }
    }

    /// <summary>A one-line description of the architecture and device.</summary>
    /// <returns>For example <c>ViT 224px/16, width 768, depth 12, 12 heads, 1000 classes, cpu</c>.</returns>
    public override string ToString() =>
        $"ViT {ImageSize}px/{PatchSize}, width {Width}, depth {Depth}, {Heads} heads, {NumClasses} classes, {Device}";

    private float[][] RunOnArray(float[] pixels, int count, PredictOutput output)
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

        lock (_gate)
        {
            ThrowIfDisposed();
            return CoreCalls.Run(() =>
            {
                var input = HostTensorModule.create([count, 3L, ImageSize, ImageSize], pixels);
                return Rows(Predict.onArray(_module, _device, BatchSize, output, input));
            });
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private static string[] Materialise(IEnumerable<string> paths, string parameter)
    {
        ArgumentNullException.ThrowIfNull(paths, parameter);
        var list = paths.ToArray();
        if (Array.IndexOf(list, null) >= 0) throw new ArgumentNullException(parameter, "The sequence contains a null path.");
        return list;
    }

    /// <summary>Splits an (N, W) host tensor into N arrays.</summary>
    private static float[][] Rows(HostTensor result)
    {
        var n = (int)result.Shape[0];
        var width = (int)result.Shape[1];
        var rows = new float[n][];
        for (var i = 0; i < n; i++) rows[i] = result.Values.AsSpan(i * width, width).ToArray();
        return rows;
    }

    private static string DeviceName(torch.Device device) =>
        device.type switch
        {
            DeviceType.CPU => "cpu",
            DeviceType.CUDA => device.index >= 0 ? $"cuda:{device.index}" : "cuda",
            var other => device.index >= 0 ? $"{other.ToString().ToLowerInvariant()}:{device.index}" : other.ToString().ToLowerInvariant(),
        };
}
