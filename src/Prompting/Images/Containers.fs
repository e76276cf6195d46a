namespace Prompting

open System

/// Structural checks of image files, run before decoding: stb_image is lenient and decodes a
/// JPEG cut to a third of its bytes (or a BMP cut short) into an image whose missing part is
/// grey or black, without a word. These walks find such files; each returns the problem, if any.
module ImageContainers =
    let private isJpeg (b: byte[]) = b.Length >= 2 && b[0] = 0xFFuy && b[1] = 0xD8uy

    let private isPng (b: byte[]) =
        b.Length >= 8 && b[0] = 0x89uy && b[1] = byte 'P' && b[2] = byte 'N' && b[3] = byte 'G'

    let private isBmp (b: byte[]) = b.Length >= 2 && b[0] = byte 'B' && b[1] = byte 'M'

    /// JPEG: marker segments from SOI, entropy-coded data after each SOS, up to EOI. Bytes after
    /// EOI are allowed (cameras append some); a file without EOI, or with no scan, is not.
    let jpegProblem (b: byte[]) : string option =
        let n = b.Length
        let mutable i = 2
        let mutable problem = None
        let mutable finished = false
        let mutable scans = 0
        let fail text =
            problem <- Some text
            finished <- true
        while not finished do
            if i >= n then fail "truncated JPEG data (no end-of-image marker)"
            elif b[i] <> 0xFFuy then fail (sprintf "corrupt JPEG data (no marker at byte %d)" i)
            else
                while i < n && b[i] = 0xFFuy do
                    i <- i + 1
                if i >= n then fail "truncated JPEG data (no end-of-image marker)"
                else
                    let marker = b[i]
                    i <- i + 1
                    match marker with
                    | 0xD9uy -> if scans = 0 then fail "JPEG has no image data (no scan before the end-of-image marker)" else finished <- true
                    | 0x01uy -> ()
                    | m when m >= 0xD0uy && m <= 0xD7uy -> ()
                    | 0x00uy
                    | 0xD8uy -> fail (sprintf "corrupt JPEG data (unexpected marker 0x%02x at byte %d)" marker (i - 1))
                    | _ ->
                        if i + 2 > n then fail "truncated JPEG data (in a marker segment)"
                        else
                            let length = (int b[i] <<< 8) ||| int b[i + 1]
                            if length < 2 then fail (sprintf "corrupt JPEG data (segment length %d at byte %d)" length i)
                            elif i + length > n then fail "truncated JPEG data (in a marker segment)"
                            else
                                i <- i + length
                                if marker = 0xDAuy then
                                    scans <- scans + 1
                                    // Entropy-coded data runs to the next marker that is neither a
                                    // stuffed zero (FF 00), a restart marker nor a fill byte.
                                    let mutable scanning = true
                                    while scanning && i < n do
                                        if b[i] = 0xFFuy && i + 1 < n then
                                            let next = b[i + 1]
                                            if next = 0x00uy || (next >= 0xD0uy && next <= 0xD7uy) then i <- i + 2
                                            elif next = 0xFFuy then i <- i + 1
                                            else scanning <- false
                                        else i <- i + 1
        problem

    /// CRC-32 (IEEE) as PNG uses it.
    let private crcTable =
        Array.init 256 (fun n ->
            let mutable c = uint32 n
            for _ in 0..7 do
                c <- if c &&& 1u <> 0u then 0xEDB88320u ^^^ (c >>> 1) else c >>> 1
            c)

    let private crc (b: byte[]) (start: int) (length: int) =
        let mutable c = 0xFFFFFFFFu
        for k in start .. start + length - 1 do
            c <- crcTable[int ((c ^^^ uint32 b[k]) &&& 0xFFu)] ^^^ (c >>> 8)
        c ^^^ 0xFFFFFFFFu

    let private bigEndian32 (b: byte[]) (o: int) =
        (uint32 b[o] <<< 24) ||| (uint32 b[o + 1] <<< 16) ||| (uint32 b[o + 2] <<< 8) ||| uint32 b[o + 3]

    /// PNG: the chunks from the signature to IEND, each inside the file with a matching CRC.
    let pngProblem (b: byte[]) : string option =
        let n = b.Length
        let mutable i = 8
        let mutable problem = None
        let mutable finished = false
        let mutable first = true
        while not finished do
            if i + 12 > n then
                problem <- Some "truncated PNG data (no IEND chunk)"
                finished <- true
            else
                let length = int64 (bigEndian32 b i)
                let kind = Text.Encoding.ASCII.GetString(b, i + 4, 4)
                if int64 i + 12L + length > int64 n then
                    problem <- Some(sprintf "truncated PNG data (chunk %s at byte %d runs past the end)" kind i)
                    finished <- true
                elif first && kind <> "IHDR" then
                    problem <- Some "corrupt PNG data (the first chunk is not IHDR)"
                    finished <- true
                elif crc b (i + 4) (int length + 4) <> bigEndian32 b (i + 8 + int length) then
                    problem <- Some(sprintf "corrupt PNG data (CRC mismatch in chunk %s at byte %d)" kind i)
                    finished <- true
                elif kind = "IEND" then finished <- true
                else
                    first <- false
                    i <- i + 12 + int length
        problem

    /// Uncompressed BMP (BI_RGB, BI_BITFIELDS): the pixel rows must all be in the file.
    let bmpProblem (b: byte[]) : string option =
        if b.Length < 34 then Some "truncated BMP header"
        else
            let int32At o = BitConverter.ToInt32(b, o)
            let offset = int64 (int32At 10)
            let headerSize = int32At 14
            if headerSize < 40 then None // OS/2 headers: left to the decoder
            else
                let width = int64 (int32At 18)
                let height = abs (int64 (int32At 22))
                let bits = int64 (BitConverter.ToUInt16(b, 28))
                let compression = int32At 30
                if compression <> 0 && compression <> 3 then None
                else
                    let stride = (width * bits + 31L) / 32L * 4L
                    let needed = offset + stride * height
                    if width > 0L && needed > int64 b.Length then
                        Some(sprintf "truncated BMP data (%d bytes, the pixel rows need %d)" b.Length needed)
                    else None

    /// The structural problem of an image file's bytes, by content; None when none was found
    /// (or the format has no check here: GIF and TGA are left to the decoder).
    let problem (b: byte[]) =
        if isJpeg b then jpegProblem b
        elif isPng b then pngProblem b
        elif isBmp b then bmpProblem b
        else None
