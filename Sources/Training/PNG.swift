/// A minimal PNG encoder for small images (report thumbnails): 8 bits per sample, no
/// filtering, and zlib "stored" (uncompressed) deflate blocks, so it needs no compressor.
public enum PNG {
    /// PNG bytes of an 8-bit image, `pixels` (H, W, C) row-major with C = 1 (gray),
    /// 2 (gray + alpha), 3 (RGB) or 4 (RGBA).
    public static func encode(pixels: some Collection<UInt8>, height: Int, width: Int, channels: Int = 1) -> [UInt8] {
        precondition(height > 0 && width > 0 && pixels.count == height * width * channels,
                     "PNG.encode: \(pixels.count) bytes are not \(height)×\(width)×\(channels)")
        let colorType: UInt8
        switch channels {
        case 1: colorType = 0
        case 2: colorType = 4
        case 3: colorType = 2
        case 4: colorType = 6
        default: preconditionFailure("PNG.encode: \(channels) channels")
        }
        // Scanlines, each led by filter type 0 (none).
        let rowBytes = width * channels
        var raw: [UInt8] = []
        raw.reserveCapacity(height * (rowBytes + 1))
        var it = pixels.makeIterator()
        for _ in 0..<height {
            raw.append(0)
            for _ in 0..<rowBytes { raw.append(it.next()!) }
        }

        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        chunk("IHDR", bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, colorType, 0, 0, 0], into: &png)
        chunk("IDAT", zlibStored(raw), into: &png)
        chunk("IEND", [], into: &png)
        return png
    }

    /// A chunk: length, type, data, CRC-32 of type and data.
    static func chunk(_ type: String, _ data: [UInt8], into png: inout [UInt8]) {
        let typed = Array(type.utf8) + data
        png += bigEndian(UInt32(data.count)) + typed + bigEndian(CRC32.ieee.checksum(typed))
    }

    /// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951 §3.2.4), ≤ 65,535 bytes each.
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]   // deflate, 32K window; header check: 0x7801 % 31 == 0
        var start = 0
        repeat {
            let n = min(65_535, data.count - start)
            let final: UInt8 = start + n == data.count ? 1 : 0
            out.append(final)             // BFINAL, BTYPE = 00 (stored)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[start..<(start + n)]
            start += n
        } while start < data.count
        return out + bigEndian(adler32(data))
    }

    public static func adler32(_ data: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        // 5552 bytes is the most that can be summed before b may overflow 32 bits.
        var i = 0
        while i < data.count {
            let end = min(i + 5552, data.count)
            for byte in data[i..<end] { a += UInt32(byte); b += a }
            a %= 65_521; b %= 65_521
            i = end
        }
        return b << 16 | a
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
}
