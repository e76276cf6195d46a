using System.Reflection;
using Xunit;

namespace Prompting.CSharp.Tests;

public sealed class VitModelTests
{
    private const float Tolerance = 1e-4f;

    private static readonly VitLoadOptions Micro = new() { Heads = 3 };

    private static string Safetensors => TestFiles.Fixture("vit_micro.safetensors");

    private static string Npz => TestFiles.Fixture("vit_micro.npz");

    private static void AssertClose(NpyArray expected, float[][] actual)
    {
        Assert.Equal(expected.Shape[0], actual.Length);
        var worst = 0f;
        for (var i = 0; i < actual.Length; i++)
        {
            Assert.Equal(expected.Shape[1], actual[i].Length);
            var row = expected.Row(i);
            for (var j = 0; j < row.Length; j++) worst = Math.Max(worst, Math.Abs(row[j] - actual[i][j]));
        }

        Assert.True(worst <= Tolerance, $"max abs error {worst} > {Tolerance}");
    }

    private static (float[] Pixels, int Count) Input(string name)
    {
        var input = TestFiles.ReadNpy(TestFiles.Fixture(name));
        return (input.Values, input.Shape[0]);
    }

    private static int ArgMax(float[] row) => Array.IndexOf(row, row.Max());

    [Fact]
    public void Load_Safetensors_ReportsTheMicroArchitecture()
    {
        using var model = VitModel.Load(Safetensors, Micro);

        Assert.Equal(32, model.ImageSize);
        Assert.Equal(8, model.PatchSize);
        Assert.Equal(48, model.Width);
        Assert.Equal(2, model.Depth);
        Assert.Equal(3, model.Heads);
        Assert.Equal(10, model.NumClasses);
        Assert.Equal(32, model.BatchSize);
        Assert.Equal(3 * 32 * 32, model.ValuesPerImage);
        Assert.Contains("width 48", model.ToString());
    }

    [Fact]
    public void PredictLogits_FromSafetensors_MatchesFixture()
    {
        using var model = VitModel.Load(Safetensors, Micro);
        var (pixels, count) = Input("input_32.npy");

        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_32.npy")), model.PredictLogits(pixels, count));
    }

    [Fact]
    public void ExtractFeatures_FromNpz_MatchesFixture()
    {
        using var model = VitModel.Load(Npz, Micro);
        var (pixels, count) = Input("input_32.npy");

        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_features_32.npy")), model.ExtractFeatures(pixels, count));
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_32.npy")), model.PredictLogits(pixels, count));
    }

    [Fact]
    public void Load_WithImageSize48_ResamplesPositionEmbeddingsAndMatchesFixture()
    {
        using var model = VitModel.Load(Safetensors, Micro with { ImageSize = 48 });
        var (pixels, count) = Input("input_48.npy");

        Assert.Equal(48, model.ImageSize);
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_48.npy")), model.PredictLogits(pixels, count));
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_features_48.npy")), model.ExtractFeatures(pixels, count));
    }

    [Fact]
    public void PredictLogits_InSeveralBatches_MatchesFixture()
    {
        using var model = VitModel.Load(Safetensors, Micro with { BatchSize = 3 });
        var (pixels, count) = Input("input_32.npy");

        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_32.npy")), model.PredictLogits(pixels, count));
    }

    [Fact]
    public void PredictLogits_WithZeroImages_ReturnsNoRows()
    {
        using var model = VitModel.Load(Safetensors, Micro);

        Assert.Empty(model.PredictLogits([], 0));
    }

    [Fact]
    public void Device_Auto_IsTheDefaultAndPicksCpuWithoutGpu()
    {
        Assert.Equal("auto", new VitLoadOptions().Device);
        using var model = VitModel.Load(Safetensors, Micro);

        if (VitModel.IsCudaAvailable) Assert.StartsWith("cuda", model.Device);
        else Assert.Equal("cpu", model.Device);
    }

    [Fact]
    public void Device_Cpu_IsHonoured()
    {
        using var model = VitModel.Load(Safetensors, Micro with { Device = "cpu" });

        Assert.Equal("cpu", model.Device);
    }

    [Fact]
    public void Device_CudaWithoutGpu_ThrowsPromptingException()
    {
        if (VitModel.IsCudaAvailable) return; // only meaningful on a machine without CUDA

        var e = Assert.Throws<PromptingException>(() => VitModel.Load(Safetensors, Micro with { Device = "cuda" }));
        Assert.Contains("CUDA is not available", e.Message);
    }

    [Fact]
    public void Device_Unknown_ThrowsPromptingException()
    {
        var e = Assert.Throws<PromptingException>(() => VitModel.Load(Safetensors, Micro with { Device = "tpu" }));
        Assert.Contains("tpu", e.Message);
        Assert.Contains("unknown device", e.Message);
    }

    [Fact]
    public void ClassifyImages_OnDirectoryOfBmps_ReturnsConsistentTopClasses()
    {
        using var dir = new TestFiles.TempDir();
        Directory.CreateDirectory(dir.File("sub"));
        TestFiles.WriteBmp(dir.File("b.bmp"), 40, 36, (x, y) => ((byte)(x * 6), (byte)(y * 7), (byte)((x + y) * 3)));
        TestFiles.WriteBmp(Path.Combine(dir.Path, "sub", "a.bmp"), 32, 32, (x, y) => ((x / 4 + y / 4) % 2 == 0 ? (byte)250 : (byte)5, 128, (byte)(255 - x * 8)));
        File.WriteAllText(dir.File("notes.txt"), "not an image");
        using var model = VitModel.Load(Safetensors, Micro);

        var predictions = model.ClassifyImages([dir.Path]);

        Assert.Equal(["b.bmp", "sub/a.bmp"], predictions.Select(p => p.File));
        foreach (var p in predictions)
        {
            Assert.True(File.Exists(p.Path));
            Assert.Equal(5, p.TopClasses.Length);
            Assert.Equal(5, p.TopClasses.Distinct().Count());
            Assert.All(p.TopClasses, c => Assert.InRange(c, 0, model.NumClasses - 1));
            Assert.Equal(p.TopLogits.OrderByDescending(v => v), p.TopLogits);

            // The same image through the array API gives the same logits.
            var logits = model.PredictLogits(model.PreprocessImage(p.Path), 1)[0];
            Assert.Equal(ArgMax(logits), p.TopClasses[0]);
            for (var k = 0; k < 5; k++) Assert.True(Math.Abs(logits[p.TopClasses[k]] - p.TopLogits[k]) <= Tolerance);
        }
    }

    [Fact]
    public void ClassifyImages_WithTopKAboveClassCount_ReturnsEveryClass()
    {
        using var dir = new TestFiles.TempDir();
        var file = dir.File("img.bmp");
        TestFiles.WriteBmp(file, 33, 33, (x, y) => ((byte)x, (byte)y, 0));
        using var model = VitModel.Load(Safetensors, Micro);

        var prediction = Assert.Single(model.ClassifyImages([file], topK: 50));

        Assert.Equal(file, prediction.File);
        Assert.Equal(Enumerable.Range(0, 10), prediction.TopClasses.Order());
    }

    [Fact]
    public void ClassifyImages_BadInputs_ThrowPromptingException()
    {
        using var dir = new TestFiles.TempDir();
        File.WriteAllBytes(dir.File("broken.png"), [1, 2, 3, 4, 5]);
        using var model = VitModel.Load(Safetensors, Micro);

        var missing = dir.File("nothing-here.jpg");
        Assert.Contains("no such file or directory", Assert.Throws<PromptingException>(() => model.ClassifyImages([missing])).Message);
        var broken = Assert.Throws<PromptingException>(() => model.ClassifyImages([dir.Path]));
        Assert.Contains("broken.png", broken.Message);
        Assert.Contains("cannot decode image", broken.Message);
        Assert.Contains("topK", Assert.Throws<PromptingException>(() => model.ClassifyImages([dir.Path], topK: 0)).Message);
    }

    [Fact]
    public void PreprocessImage_SolidColour_GivesNormalisedConstantPlanes()
    {
        using var dir = new TestFiles.TempDir();
        var file = dir.File("solid.bmp");
        TestFiles.WriteBmp(file, 50, 40, (_, _) => (255, 0, 51));
        using var model = VitModel.Load(Safetensors, Micro);

        var pixels = model.PreprocessImage(file);

        Assert.Equal(model.ValuesPerImage, pixels.Length);
        var plane = 32 * 32;
        float[] expected = [1f, -1f, (51f / 255f - 0.5f) / 0.5f];
        for (var ch = 0; ch < 3; ch++)
            Assert.All(pixels.AsSpan(ch * plane, plane).ToArray(), v => Assert.True(Math.Abs(v - expected[ch]) <= 1e-6f, $"channel {ch}: {v}"));
    }

    [Fact]
    public void ExtractImageFeatures_KeepsInputOrderAndMatchesArrayApi()
    {
        using var dir = new TestFiles.TempDir();
        string[] files = [dir.File("z.bmp"), dir.File("a.bmp")];
        TestFiles.WriteBmp(files[0], 36, 48, (x, y) => ((byte)(x * y), 10, 200));
        TestFiles.WriteBmp(files[1], 32, 32, (x, _) => (0, (byte)(x * 8), 0));
        using var model = VitModel.Load(Npz, Micro);

        var features = model.ExtractImageFeatures(files);

        Assert.Equal(2, features.Length);
        for (var i = 0; i < files.Length; i++)
        {
            var single = model.ExtractFeatures(model.PreprocessImage(files[i]), 1)[0];
            Assert.Equal(model.Width, features[i].Length);
            Assert.All(features[i].Zip(single), pair => Assert.True(Math.Abs(pair.First - pair.Second) <= Tolerance));
        }

        var e = Assert.Throws<PromptingException>(() => model.ExtractImageFeatures([dir.Path]));
        Assert.Contains("is a directory", e.Message);
    }

    [Fact]
    public void Export_ThenLoad_GivesIdenticalLogits()
    {
        using var dir = new TestFiles.TempDir();
        var exported = Path.Combine(dir.Path, "nested", "roundtrip.safetensors");
        var (pixels, count) = Input("input_32.npy");
        using var original = VitModel.Load(Npz, Micro);
        var before = original.PredictLogits(pixels, count);

        original.Export(exported);
        using var reloaded = VitModel.Load(exported); // the export records the head count

        Assert.Equal(3, reloaded.Heads);
        var after = reloaded.PredictLogits(pixels, count);
        for (var i = 0; i < count; i++) Assert.Equal(before[i], after[i]);
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_32.npy")), after);
    }

    [Fact]
    public void Export_ResampledModel_ReloadsAtItsNewSize()
    {
        using var dir = new TestFiles.TempDir();
        var exported = dir.File("vit48.safetensors");
        using (var model = VitModel.Load(Safetensors, Micro with { ImageSize = 48 })) model.Export(exported);

        using var reloaded = VitModel.Load(exported);
        var (pixels, count) = Input("input_48.npy");

        Assert.Equal(48, reloaded.ImageSize);
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_48.npy")), reloaded.PredictLogits(pixels, count));
    }

    [Fact]
    public void Export_ToUnwritablePath_ThrowsPromptingException()
    {
        using var dir = new TestFiles.TempDir();
        File.WriteAllText(dir.File("file.txt"), "a file, not a directory");
        var target = Path.Combine(dir.File("file.txt"), "model.safetensors");
        using var model = VitModel.Load(Safetensors, Micro);

        var e = Assert.Throws<PromptingException>(() => model.Export(target));

        Assert.StartsWith($"{target}: cannot write", e.Message);
        Assert.Contains("output path is empty", Assert.Throws<PromptingException>(() => model.Export(" ")).Message);
    }

    [Fact]
    public void Load_MissingFile_ThrowsPromptingException()
    {
        var path = Path.Combine(Path.GetTempPath(), "prompting-missing-" + Guid.NewGuid().ToString("N") + ".safetensors");

        var e = Assert.Throws<PromptingException>(() => VitModel.Load(path, Micro));

        Assert.Equal($"{path}: file not found", e.Message);
    }

    [Theory]
    [InlineData("vit_micro.safetensors", ".safetensors")]
    [InlineData("vit_micro.npz", ".npz")]
    public void Load_TruncatedFile_ThrowsPromptingException(string fixture, string extension)
    {
        using var dir = new TestFiles.TempDir();
        var bytes = File.ReadAllBytes(TestFiles.Fixture(fixture));
        var path = dir.File("truncated" + extension);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);

        var e = Assert.Throws<PromptingException>(() => VitModel.Load(path, Micro));

        Assert.StartsWith(path + ":", e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Load_TinyFile_ThrowsPromptingException()
    {
        using var dir = new TestFiles.TempDir();
        var path = dir.File("tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);

        var e = Assert.Throws<PromptingException>(() => VitModel.Load(path, Micro));

        Assert.Contains("truncated file (3 bytes", e.Message);
    }

    [Fact]
    public void PredictLogits_WrongPixelLength_ThrowsPromptingException()
    {
        using var model = VitModel.Load(Safetensors, Micro);
        var (pixels, _) = Input("input_32.npy");

        var e = Assert.Throws<PromptingException>(() => model.PredictLogits(pixels, 3));
        Assert.Equal("pixels: expected 3 × 3 × 32 × 32 = 9216 values (count × channels × height × width), got 12288", e.Message);

        var short1 = Assert.Throws<PromptingException>(() => model.ExtractFeatures(new float[100], 1));
        Assert.Contains("got 100", short1.Message);
        Assert.Contains("count", Assert.Throws<PromptingException>(() => model.PredictLogits([], -1)).Message);
        Assert.Throws<ArgumentNullException>(() => model.PredictLogits(null!, 1));
    }

    [Fact]
    public void PredictLogits_AtOtherResolutionThanLoaded_ThrowsPromptingException()
    {
        using var model = VitModel.Load(Safetensors, Micro);
        var (pixels, count) = Input("input_48.npy"); // 2 × 3 × 48 × 48 = 13824 values = 4.5 images of 32²

        var e = Assert.Throws<PromptingException>(() => model.PredictLogits(pixels, count));
        Assert.Contains("6144", e.Message);
    }

    public static TheoryData<VitLoadOptions, string> InvalidOptions => new()
    {
        { new VitLoadOptions { Heads = 3, BatchSize = 0 }, "options.BatchSize: must be positive, got 0" },
        { new VitLoadOptions { Heads = 3, CropPct = 0 }, "options.CropPct" },
        { new VitLoadOptions { Heads = 3, Mean = [0.5f, 0.5f] }, "options.Mean: expected 3 values" },
        { new VitLoadOptions { Heads = 3, Std = [0.5f, 0f, 0.5f] }, "options.Std" },
        { new VitLoadOptions { Heads = 3, ImageSize = -32 }, "options.ImageSize" },
        { new VitLoadOptions { Heads = 5 }, "width 48 is not divisible by 5 heads" },
        { new VitLoadOptions { Heads = 3, ImageSize = 36 }, "image size 36 is not a multiple of the checkpoint's patch size 8" },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public void Load_InvalidOptions_ThrowPromptingException(VitLoadOptions options, string expected)
    {
        var e = Assert.Throws<PromptingException>(() => VitModel.Load(Safetensors, options));

        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Load_WithoutHeads_FallsBackToWidthOver64AndGivesADifferentModel()
    {
        // timm and Google checkpoints do not record the head count: width 48 gives max(1, 48 / 64) = 1 head,
        // a valid model with the same weights that computes something else.
        using var model = VitModel.Load(Safetensors);
        var (pixels, count) = Input("input_32.npy");

        Assert.Equal(1, model.Heads);
        var expected = TestFiles.ReadNpy(TestFiles.Fixture("expected_logits_32.npy"));
        var worst = model.PredictLogits(pixels, count).SelectMany(r => r).Zip(expected.Values).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(worst > 1e-3f, $"1-head logits unexpectedly match the 3-head fixture (max diff {worst})");
    }

    [Fact]
    public void Load_WithoutHead_GivesFeaturesButNoLogits()
    {
        using var model = VitModel.Load(Safetensors, Micro with { NumClasses = 0 });
        var (pixels, count) = Input("input_32.npy");

        Assert.Equal(0, model.NumClasses);
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_features_32.npy")), model.ExtractFeatures(pixels, count));
        var e = Assert.Throws<PromptingException>(() => model.PredictLogits(pixels, count));
        Assert.Contains("no classification head", e.Message);
    }

    [Fact]
    public void Load_WithOtherClassCount_ReplacesTheHead()
    {
        using var model = VitModel.Load(Safetensors, Micro with { NumClasses = 5 });
        var (pixels, count) = Input("input_32.npy");

        Assert.Equal(5, model.NumClasses);
        Assert.All(model.PredictLogits(pixels, count), row => Assert.Equal(5, row.Length));
        AssertClose(TestFiles.ReadNpy(TestFiles.Fixture("expected_features_32.npy")), model.ExtractFeatures(pixels, count));
    }

    [Fact]
    public void Dispose_ThenUse_ThrowsObjectDisposedException()
    {
        using var dir = new TestFiles.TempDir();
        var model = VitModel.Load(Safetensors, Micro);
        var (pixels, count) = Input("input_32.npy");

        model.Dispose();
        model.Dispose(); // idempotent

        Assert.Equal(48, model.Width); // the architecture stays readable
        Assert.Throws<ObjectDisposedException>(() => model.PredictLogits(pixels, count));
        Assert.Throws<ObjectDisposedException>(() => model.ExtractFeatures(pixels, count));
        Assert.Throws<ObjectDisposedException>(() => model.ClassifyImages([dir.Path]));
        Assert.Throws<ObjectDisposedException>(() => model.ExtractImageFeatures([]));
        Assert.Throws<ObjectDisposedException>(() => model.PreprocessImage("x.png"));
        Assert.Throws<ObjectDisposedException>(() => model.Export(dir.File("out.safetensors")));
        Assert.False(File.Exists(dir.File("out.safetensors")));
    }

    [Fact]
    public void PublicApi_ExposesNoFSharpOrTorchSharpTypes()
    {
        var facade = typeof(VitModel).Assembly;
        string[] forbidden = ["FSharp.Core", "Prompting.Core", "TorchSharp"];
        var offenders = new List<string>();

        void Check(Type type, string where)
        {
            if (type.HasElementType)
            {
                Check(type.GetElementType()!, where);
                return;
            }

            if (forbidden.Contains(type.Assembly.GetName().Name)) offenders.Add($"{where}: {type.FullName}");
            if (type.IsGenericType)
            {
                foreach (var arg in type.GetGenericArguments()) Check(arg, where);
            }
        }

        const BindingFlags visible = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var types = facade.GetExportedTypes();
        Assert.Equal(
            ["Experiment", "ExperimentOptions", "ExperimentResult", "ExperimentScenario", "ImagePrediction", "PromptingException", "TrainedModel", "VitLoadOptions", "VitModel"],
            types.Select(t => t.Name).Order());
        foreach (var type in types)
        {
            Assert.Equal("Prompting.CSharp", type.Namespace);
            if (type.BaseType is { } baseType) Check(baseType, type.Name);
            foreach (var i in type.GetInterfaces()) Check(i, type.Name);
            foreach (var member in type.GetMembers(visible))
            {
                var where = $"{type.Name}.{member.Name}";
                switch (member)
                {
                    case MethodBase method:
                        if (method is MethodInfo m) Check(m.ReturnType, where);
                        foreach (var p in method.GetParameters()) Check(p.ParameterType, where);
                        break;
                    case PropertyInfo property:
                        Check(property.PropertyType, where);
                        break;
                    case FieldInfo field:
                        Check(field.FieldType, where);
                        break;
                    case EventInfo e:
                        Check(e.EventHandlerType!, where);
                        break;
                }
            }
        }

        Assert.Empty(offenders);
    }
}
