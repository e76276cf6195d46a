// MSBuild inline task: makes the oneMKL statically linked into libtorch_cpu.so take its
// Intel-optimised code paths on every x86-64 CPU. See NativeFixup.targets for why.
// mkl_serv_intel_cpu_true() returns whether the CPU vendor string is "GenuineIntel" (cached);
// MKL's dispatcher calls it to decide between its CPUID-feature-selected kernels (AVX-512 on
// Zen 4) and a slower generic path. Its first instruction is replaced by "mov eax, 1; ret".
// Kernels are still chosen from the CPU's feature bits, so a CPU without AVX-512 gets AVX2 ones.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchMklCpuDispatch : Task
{
    [Required] public string Library { get; set; }

    const string Symbol = "mkl_serv_intel_cpu_true";
    // mov eax, [rip + cached]; test eax, eax; js <detect>; ret   (rel32 varies between builds)
    static readonly int?[] Original = { 0x8B, 0x05, null, null, null, null, 0x85, 0xC0, 0x78, null, 0xC3 };
    // mov eax, 1; ret
    static readonly byte[] Patched = { 0xB8, 0x01, 0x00, 0x00, 0x00, 0xC3 };

    public override bool Execute()
    {
        try
        {
            long offset;
            byte[] head = new byte[Original.Length];
            using (var f = new FileStream(Library, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            {
                offset = SymbolFileOffset(f, Symbol);
                if (offset < 0)
                {
                    Log.LogMessage(MessageImportance.Low, $"Prompting: {Library} has no {Symbol}; nothing to patch");
                    return true;
                }
                f.Seek(offset, SeekOrigin.Begin);
                ReadExactly(f, head);
            }
            if (StartsWith(head, Patched)) return true; // already patched
            if (!Matches(head))
            {
                Log.LogMessage(MessageImportance.High,
                    $"Prompting: {Symbol} in {Library} does not start with the expected instructions; left unpatched (MKL keeps its generic path on non-Intel CPUs)");
                return true;
            }
            // Patch a copy and rename it over the original: processes that have the library mapped
            // keep the old file, and a hard link into the package cache is never written through.
            // The copy keeps the original's time stamp, so incremental builds see an unchanged file
            // and do not copy the unpatched one back.
            string tmp = Library + "." + Guid.NewGuid().ToString("N") + ".tmp";
            try
            {
                File.Copy(Library, tmp);
                using (var f = new FileStream(tmp, FileMode.Open, FileAccess.ReadWrite))
                {
                    f.Seek(offset, SeekOrigin.Begin);
                    byte[] check = new byte[Original.Length];
                    ReadExactly(f, check);
                    if (!Matches(check)) throw new IOException("the copy differs from the original");
                    f.Seek(offset, SeekOrigin.Begin);
                    f.Write(Patched, 0, Patched.Length);
                }
                File.SetLastWriteTimeUtc(tmp, File.GetLastWriteTimeUtc(Library));
                File.Replace(tmp, Library, null);
            }
            finally
            {
                if (File.Exists(tmp)) File.Delete(tmp);
            }
            Log.LogMessage(MessageImportance.High, $"Prompting: MKL takes its optimised kernels on every x86-64 CPU in {Library}");
            return true;
        }
        catch (Exception e)
        {
            Log.LogError($"Prompting: patching MKL's CPU dispatch in {Library} failed: {e.Message}");
            return false;
        }
    }

    static bool StartsWith(byte[] bytes, byte[] prefix)
    {
        for (int i = 0; i < prefix.Length; i++) if (bytes[i] != prefix[i]) return false;
        return true;
    }

    static bool Matches(byte[] bytes)
    {
        for (int i = 0; i < Original.Length; i++)
            if (Original[i].HasValue && bytes[i] != Original[i].Value) return false;
        return true;
    }

    static void ReadExactly(Stream s, byte[] buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = s.Read(buffer, done, buffer.Length - done);
            if (n == 0) throw new EndOfStreamException("unexpected end of file");
            done += n;
        }
    }

    static byte[] ReadAt(FileStream f, long offset, long count)
    {
        if (count < 0 || count > int.MaxValue || offset < 0 || offset + count > f.Length)
            throw new InvalidDataException("section outside the file");
        byte[] b = new byte[count];
        f.Seek(offset, SeekOrigin.Begin);
        ReadExactly(f, b);
        return b;
    }

    // File offset of a defined function in .dynsym, or -1. Only little-endian x86-64 ELF64 files.
    static long SymbolFileOffset(FileStream f, string name)
    {
        byte[] eh = ReadAt(f, 0, 64);
        if (eh[0] != 0x7f || eh[1] != (byte)'E' || eh[2] != (byte)'L' || eh[3] != (byte)'F' || eh[4] != 2 || eh[5] != 1)
            throw new InvalidDataException("not a little-endian ELF64 file");
        const ushort EmX86_64 = 62;
        if (BitConverter.ToUInt16(eh, 0x12) != EmX86_64) return -1;
        long shoff = BitConverter.ToInt64(eh, 0x28);
        int shentsize = BitConverter.ToUInt16(eh, 0x3a);
        int shnum = BitConverter.ToUInt16(eh, 0x3c);
        byte[] sh = ReadAt(f, shoff, (long)shentsize * shnum);
        uint Type(int s) => BitConverter.ToUInt32(sh, s * shentsize + 4);
        ulong Flags(int s) => BitConverter.ToUInt64(sh, s * shentsize + 8);
        ulong Addr(int s) => BitConverter.ToUInt64(sh, s * shentsize + 0x10);
        long Off(int s) => BitConverter.ToInt64(sh, s * shentsize + 0x18);
        long Size(int s) => BitConverter.ToInt64(sh, s * shentsize + 0x20);
        int Link(int s) => (int)BitConverter.ToUInt32(sh, s * shentsize + 0x28);
        const uint ShtDynsym = 11, ShtNobits = 8;
        const ulong ShfAlloc = 2, ShfExecinstr = 4;
        byte[] wanted = Encoding.ASCII.GetBytes(name);
        for (int s = 0; s < shnum; s++)
        {
            if (Type(s) != ShtDynsym) continue;
            byte[] syms = ReadAt(f, Off(s), Size(s));
            byte[] strs = ReadAt(f, Off(Link(s)), Size(Link(s)));
            for (int e = 0; e + 24 <= syms.Length; e += 24)
            {
                int nameAt = (int)BitConverter.ToUInt32(syms, e);
                byte info = syms[e + 4];
                ushort shndx = BitConverter.ToUInt16(syms, e + 6);
                if ((info & 0xf) != 2 || shndx == 0 || nameAt + wanted.Length >= strs.Length) continue; // STT_FUNC, defined
                bool same = strs[nameAt + wanted.Length] == 0;
                for (int i = 0; same && i < wanted.Length; i++) same = strs[nameAt + i] == wanted[i];
                if (!same) continue;
                ulong value = BitConverter.ToUInt64(syms, e + 8);
                for (int t = 0; t < shnum; t++)
                {
                    if (Type(t) == ShtNobits || (Flags(t) & ShfAlloc) == 0 || (Flags(t) & ShfExecinstr) == 0) continue;
                    if (value >= Addr(t) && value < Addr(t) + (ulong)Size(t))
                        return Off(t) + (long)(value - Addr(t));
                }
                throw new InvalidDataException($"{name} is not inside an executable section");
            }
        }
        return -1;
    }
}
