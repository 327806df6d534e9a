import Data
import Foundation
import Training
import XCTest

/// The report's PNG thumbnails, written by libpng: decodable by an independent reader, and
/// read back by Data's PNG reader pixel for pixel.
final class PNGTests: XCTestCase {
    /// One image of each format, and a larger one that libpng filters and compresses across
    /// several rows of patterns.
    let images: [(pixels: [UInt8], h: Int, w: Int, c: Int)] = [
        ((0..<35).map { UInt8($0 * 7) }, 5, 7, 1),
        ((0..<(4 * 3 * 2)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 5) }, 4, 3, 2),
        ((0..<(3 * 2 * 3)).map { UInt8(255 - $0) }, 3, 2, 3),
        ((0..<(2 * 5 * 4)).map { UInt8(truncatingIfNeeded: $0 &* 53) }, 2, 5, 4),
        ((0..<(300 * 300)).map { UInt8(truncatingIfNeeded: ($0 % 300) &* ($0 / 300) &+ $0 / 7) }, 300, 300, 1),
    ]

    /// Decoded by Python's zlib (which checks Adler-32) with every chunk's CRC checked and
    /// the scanline filters undone by hand: the pixels come back as written.
    func testPNGDecodesWithZlib() throws {
        let dir = temporaryDirectory(self)
        for (i, im) in images.enumerated() {
            let png = PNG.encode(pixels: im.pixels, height: im.h, width: im.w, channels: im.c)
            try Data(png).write(to: URL(fileURLWithPath: dir + "/\(i).png"))
            try Data(im.pixels).write(to: URL(fileURLWithPath: dir + "/\(i).raw"))
        }
        let script = """
            import struct, sys, zlib
            def unfilter(raw, h, row, bpp):
                out, prev, filters = bytearray(), bytearray(row), set()
                for r in range(h):
                    f = raw[r * (row + 1)]
                    filters.add(f)
                    line = bytearray(raw[r * (row + 1) + 1:(r + 1) * (row + 1)])
                    for x in range(row):
                        a = line[x - bpp] if x >= bpp else 0
                        b = prev[x]
                        c = prev[x - bpp] if x >= bpp else 0
                        if f == 0: p = 0
                        elif f == 1: p = a
                        elif f == 2: p = b
                        elif f == 3: p = (a + b) // 2
                        elif f == 4:
                            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                            p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                        else: raise AssertionError("row %d: filter type %d" % (r, f))
                        line[x] = (line[x] + p) & 255
                    out += line
                    prev = line
                return bytes(out), filters
            used = set()
            for i in range(int(sys.argv[2])):
                data = open("%s/%d.png" % (sys.argv[1], i), "rb").read()
                assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", "signature"
                pos, chunks, order = 8, {}, []
                while pos < len(data):
                    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
                    body = data[pos + 8:pos + 8 + n]
                    crc, = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
                    assert crc == zlib.crc32(kind + body), "%d: CRC of %s" % (i, kind)
                    chunks[kind] = chunks.get(kind, b"") + body
                    order.append(kind)
                    pos += 12 + n
                assert order[0] == b"IHDR" and order[-1] == b"IEND", order
                w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
                channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
                raw = zlib.decompress(chunks[b"IDAT"])
                row = w * channels
                assert len(raw) == h * (row + 1), "%d: %d bytes" % (i, len(raw))
                pixels, filters = unfilter(raw, h, row, channels)
                used |= filters
                want = open("%s/%d.raw" % (sys.argv[1], i), "rb").read()
                assert depth == 8 and pixels == want, "%d: pixels differ" % i
            print("ok", "".join(str(f) for f in sorted(used)))
            """
        let r = try runProcess("/usr/bin/env", ["python3", "-c", script, dir, "\(images.count)"], timeout: 60)
        XCTAssertEqual(r.status, 0, "python3 decoding the PNGs: \(r.stderr)")
        let out = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(out.hasPrefix("ok "), out)
        // The unfiltering was exercised: some row used a filter other than none.
        XCTAssertTrue(out.dropFirst(3).contains { $0 != "0" }, "only unfiltered rows: \(out)")
    }

    /// Gray and opaque gray + alpha thumbnails read back through libpng by `ImageFiles.read`
    /// (the reader `distcnn predict` uses) with the same size and every pixel equal.
    func testPNGRoundTripsThroughDataReader() throws {
        let dir = temporaryDirectory(self)
        let opaque: [UInt8] = (0..<(6 * 4)).flatMap { (i: Int) -> [UInt8] in [UInt8(truncatingIfNeeded: i &* 11), 255] }
        let cases = images.filter { $0.c == 1 } + [(pixels: opaque, h: 6, w: 4, c: 2)]
        for (i, im) in cases.enumerated() {
            let path = dir + "/\(i).png"
            try Data(PNG.encode(pixels: im.pixels, height: im.h, width: im.w, channels: im.c)).write(to: URL(fileURLWithPath: path))
            let back = try ImageFiles.read(path: path)
            XCTAssertEqual(back.width, im.w, path)
            XCTAssertEqual(back.height, im.h, path)
            XCTAssertEqual(back.maxValue, 255, path)
            let gray = stride(from: 0, to: im.pixels.count, by: im.c).map { UInt16(im.pixels[$0]) }
            XCTAssertEqual(back.pixels, gray, path)
        }
    }
}
