using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Prompting.CSharp.Tests;

/// <summary>A float32 array with its shape, as read from a .npy fixture.</summary>
internal sealed record NpyArray(int[] Shape, float[] Values)
{
    /// <summary>Row <paramref name="i"/> of a 2-D array.</summary>
    public float[] Row(int i) => Values.AsSpan(i * Shape[1], Shape[1]).ToArray();
}

internal static class TestFiles
{
    private static readonly Lazy<string> FixturesDir = new(FindFixtures);

    public static string Fixture(string name) => Path.Combine(FixturesDir.Value, name);

    /// <summary>Walks up from the test binaries to the directory holding tests/fixtures.</summary>
    private static string FindFixtures()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "fixtures");
            if (Directory.Exists(candidate)) return candidate;
        }

        throw new DirectoryNotFoundException($"no tests/fixtures above {AppContext.BaseDirectory}");
    }

    /// <summary>Reads a little-endian float32, C-order .npy file (format 1.0), as the fixtures are.</summary>
    public static NpyArray ReadNpy(string path)
    {
        var data = File.ReadAllBytes(path);
        if (data.Length < 10 || data[0] != 0x93 || Encoding.ASCII.GetString(data, 1, 5) != "NUMPY" || data[6] != 1)
            throw new InvalidDataException($"{path}: not a version 1 .npy file");
        int headerLength = BitConverter.ToUInt16(data, 8);
        var header = Encoding.Latin1.GetString(data, 10, headerLength);
        if (!header.Contains("'descr': '<f4'") || !header.Contains("'fortran_order': False"))
            throw new InvalidDataException($"{path}: expected C-order float32, header {header}");
        var shape = Regex.Match(header, @"'shape': \(([^)]*)\)").Groups[1].Value
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.Parse(s, CultureInfo.InvariantCulture))
            .ToArray();
        var count = shape.Aggregate(1, (a, b) => a * b);
        var values = new float[count];
        Buffer.BlockCopy(data, 10 + headerLength, values, 0, count * sizeof(float));
        return new NpyArray(shape, values);
    }

    /// <summary>Writes an uncompressed 24-bit BMP; <paramref name="rgb"/> gives each pixel's colour.</summary>
    public static void WriteBmp(string path, int width, int height, Func<int, int, (byte R, byte G, byte B)> rgb)
    {
        var stride = (width * 3 + 3) / 4 * 4;
        var imageSize = stride * height;
        using var w = new BinaryWriter(File.Create(path));
        // BITMAPFILEHEADER
        w.Write((byte)'B');
        w.Write((byte)'M');
        w.Write(14 + 40 + imageSize);
        w.Write(0);
        w.Write(14 + 40);
        // BITMAPINFOHEADER
        w.Write(40);
        w.Write(width);
        w.Write(height); // positive: rows stored bottom-up
        w.Write((short)1);
        w.Write((short)24);
        w.Write(0); // BI_RGB
        w.Write(imageSize);
        w.Write(2835);
        w.Write(2835);
        w.Write(0);
        w.Write(0);
        var row = new byte[stride];
        for (var y = height - 1; y >= 0; y--)
        {
            for (var x = 0; x < width; x++)
            {
                var (r, g, b) = rgb(x, y);
                row[x * 3] = b;
                row[x * 3 + 1] = g;
                row[x * 3 + 2] = r;
            }

            w.Write(row);
        }
    }

    /// <summary>A fresh directory under the system temp folder, deleted on dispose.</summary>
    public sealed class TempDir : IDisposable
    {
        public TempDir() => Directory.CreateDirectory(Path);

        public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "prompting-cs-" + Guid.NewGuid().ToString("N"));

        public string File(string name) => System.IO.Path.Combine(Path, name);

        public void Dispose()
        {
            try
            {
                Directory.Delete(Path, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
