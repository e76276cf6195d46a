// MSBuild inline task: marks one GLIBCXX version need of an ELF64 shared library as weak.
// See NativeFixup.targets for why. Pure byte-level edit of the .gnu.version_r section.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class WeakenGlibcxxVersionNeed : Task
{
    [Required] public string Library { get; set; }
    [Required] public string Version { get; set; }

    const ushort VerFlgWeak = 0x2;
    const uint ShtGnuVerneed = 0x6ffffffe;

    static readonly string[] SystemLibstdcxx =
    {
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
    };

    public override bool Execute()
    {
        try
        {
            if (SystemProvides(Version)) return true;
            byte[] elf = File.ReadAllBytes(Library);
            switch (Weaken(elf, Version))
            {
                case 1:
                    // Unique temporary name and an atomic rename: parallel project builds may race here.
                    string tmp = Library + "." + Guid.NewGuid().ToString("N") + ".tmp";
                    File.WriteAllBytes(tmp, elf);
                    File.Replace(tmp, Library, null);
                    Log.LogMessage(MessageImportance.High, $"Prompting: marked {Version} weak in {Library}");
                    break;
                case 0: break; // already weak
                default:
                    Log.LogMessage(MessageImportance.Low, $"Prompting: {Library} does not need {Version}");
                    break;
            }
            return true;
        }
        catch (Exception e)
        {
            Log.LogError($"Prompting native fix-up of {Library} failed: {e.Message}");
            return false;
        }
    }

    static bool SystemProvides(string version)
    {
        byte[] needle = Encoding.ASCII.GetBytes(version + "\0");
        foreach (string path in SystemLibstdcxx)
            if (File.Exists(path)) return IndexOf(File.ReadAllBytes(path), needle) >= 0;
        return false;
    }

    static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            int j = 0;
            while (j < needle.Length && hay[i + j] == needle[j]) j++;
            if (j == needle.Length) return i;
        }
        return -1;
    }

    // Returns 1 when patched, 0 when already weak, -1 when the version is not needed.
    static int Weaken(byte[] elf, string version)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("not a little-endian ELF64 file");
        long shoff = BitConverter.ToInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3a);
        int shnum = BitConverter.ToUInt16(elf, 0x3c);
        for (int s = 0; s < shnum; s++)
        {
            long sh = shoff + (long)s * shentsize;
            if (BitConverter.ToUInt32(elf, (int)sh + 4) != ShtGnuVerneed) continue;
            long offset = BitConverter.ToInt64(elf, (int)sh + 0x18);
            int link = (int)BitConverter.ToUInt32(elf, (int)sh + 0x28);
            long strOffset = BitConverter.ToInt64(elf, (int)(shoff + (long)link * shentsize) + 0x18);
            long need = offset;
            while (true)
            {
                int count = BitConverter.ToUInt16(elf, (int)need + 2);
                long aux = need + BitConverter.ToUInt32(elf, (int)need + 8);
                for (int a = 0; a < count; a++)
                {
                    long nameAt = strOffset + BitConverter.ToUInt32(elf, (int)aux + 8);
                    int end = (int)nameAt;
                    while (elf[end] != 0) end++;
                    if (Encoding.ASCII.GetString(elf, (int)nameAt, end - (int)nameAt) == version)
                    {
                        ushort flags = BitConverter.ToUInt16(elf, (int)aux + 4);
                        if ((flags & VerFlgWeak) != 0) return 0;
                        BitConverter.GetBytes((ushort)(flags | VerFlgWeak)).CopyTo(elf, (int)aux + 4);
                        return 1;
                    }
                    uint nextAux = BitConverter.ToUInt32(elf, (int)aux + 12);
                    if (nextAux == 0) break;
                    aux += nextAux;
                }
                uint next = BitConverter.ToUInt32(elf, (int)need + 12);
                if (next == 0) break;
                need += next;
            }
        }
        return -1;
    }
}
