import CZlib
import Foundation
import XCTest
import Data

/// PNG and PGM decoding, and the MNIST-style preparation `distcnn predict` applies.
final class ImageFilesTests: XCTestCase {
    var directory: TemporaryDirectory!

    override func setUpWithError() throws { directory = try TemporaryDirectory() }
    override func tearDown() { directory.remove() }

    // MARK: Decoding

    func testPlainAndRawPGMDecodeTheSame() throws {
        let pixels: [UInt8] = [0, 10, 20, 255, 128, 7]
        let raw = try directory.write("raw.pgm", Array("P5\n# made by a test\n3 2\n255\n".utf8) + pixels)
        let plain = try directory.write("plain.pgm", Array("P2 3 # width\n2 255\n0 10 20\n255 128 7\n".utf8))
        let a = try ImageFiles.read(path: raw), b = try ImageFiles.read(path: plain)
        XCTAssertEqual(a, b)
        XCTAssertEqual([a.width, a.height, a.maxValue], [3, 2, 255])
        XCTAssertEqual(a.pixels, pixels.map(UInt16.init))
    }

    func testSixteenBitPGM() throws {
        let samples: [UInt16] = [0, 1000, 65535, 40000]
        let bytes = samples.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
        let image = try ImageFiles.read(path: try directory.write("deep.pgm", Array("P5 2 2 65535\n".utf8) + bytes))
        XCTAssertEqual(image.maxValue, 65535)
        XCTAssertEqual(image.pixels, samples)
        // The same picture at 16 and 8 bits prepares to the same digit.
        let digit = blob(width: 40, height: 30, at: (8, 5), size: (12, 9))
        let deep = GrayImage(width: 40, height: 30, maxValue: 65535, pixels: digit.map { $0 * 257 })
        let deepPath = try directory.write("d16.pgm", Array("P5 40 30 65535\n".utf8) + deep.pixels.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] })
        let shallowPath = try directory.write("d8.pgm", Array("P5 40 30 255\n".utf8) + digit.map { UInt8($0) })
        XCTAssertEqual(try ImageFiles.read(path: deepPath), deep)
        XCTAssertEqual(try prepare(deepPath), try prepare(shallowPath))
    }

    func testPNGColourTypesAndBitDepthsReadAsGray() throws {
        let gray: [UInt8] = [0, 64, 128, 255, 30, 200]   // 3×2
        let g8 = try directory.write("g8.png", pngFile(width: 3, height: 2, colorType: 0, bitDepth: 8, samples: gray.map(UInt16.init)))
        XCTAssertEqual(try ImageFiles.read(path: g8).pixels, gray.map(UInt16.init))
        let g16 = try directory.write("g16.png", pngFile(width: 3, height: 2, colorType: 0, bitDepth: 16,
                                                     samples: gray.map { UInt16($0) * 257 }))
        try assertClose(try ImageFiles.read(path: g16).pixels, gray, tolerance: 1)
        // Equal R, G and B are that gray; pure colours are darker or lighter grays in order.
        let rgb = try directory.write("rgb.png", pngFile(width: 3, height: 2, colorType: 2, bitDepth: 8,
                                                     samples: gray.flatMap { [UInt16($0), UInt16($0), UInt16($0)] }))
        try assertClose(try ImageFiles.read(path: rgb).pixels, gray, tolerance: 1)
        let colours = try directory.write("colours.png", pngFile(width: 3, height: 1, colorType: 2, bitDepth: 8,
                                                             samples: [0, 0, 255, 255, 0, 0, 0, 255, 0]))
        let c = try ImageFiles.read(path: colours).pixels
        XCTAssertTrue(c[0] < c[1] && c[1] < c[2], "blue < red < green in luminance: \(c)")
        // Palette: indices into an RGB table.
        let palette = try directory.write("pal.png", pngFile(width: 3, height: 2, colorType: 3, bitDepth: 8,
                                                         samples: [0, 1, 2, 2, 1, 0], palette: [0, 0, 0, 128, 128, 128, 255, 255, 255]))
        try assertClose(try ImageFiles.read(path: palette).pixels, [0, 128, 255, 255, 128, 0], tolerance: 1)
    }

    /// A dark digit on a transparent page reads as dark on white, so it is inverted to light on black.
    func testTransparentBackgroundIsComposited() throws {
        let ink = blob(width: 30, height: 30, at: (10, 8), size: (8, 12))
        let rgba = ink.flatMap { v -> [UInt16] in v > 0 ? [0, 0, 0, 255] : [0, 0, 0, 0] }   // black ink, clear page
        let path = try directory.write("clear.png", pngFile(width: 30, height: 30, colorType: 6, bitDepth: 8, samples: rgba))
        let image = try ImageFiles.read(path: path)
        XCTAssertEqual(image.pixels[0], 255, "the transparent page becomes white")
        XCTAssertEqual(image.pixels[10 * 30 + 12], 0, "the opaque ink stays black")
        let lightOnDark = try directory.write("ink.pgm", Array("P5 30 30 255\n".utf8) + ink.map { UInt8($0) })
        XCTAssertEqual(try prepare(path), try prepare(lightOnDark))
    }

    // MARK: MNIST-style preparation

    func testDarkOnLightIsInverted() throws {
        let digit = blob(width: 50, height: 40, at: (12, 9), size: (15, 22))
        let dark = try directory.write("dark.pgm", Array("P5 50 40 255\n".utf8) + digit.map { 255 - UInt8($0) })
        let light = try directory.write("light.pgm", Array("P5 50 40 255\n".utf8) + digit.map { UInt8($0) })
        let out = try prepare(dark)
        XCTAssertEqual(out, try prepare(light))
        XCTAssertEqual(out[0], 0, "background is black")
        XCTAssertEqual(out.max(), 255, "strokes are white")
    }

    /// LeCun's recipe: the centre of mass lands on the centre of the 28×28 field.
    func testOffCentreDigitIsCentredByMass() throws {
        // An "L" near the bottom-right corner of a large page: mass is not at its box's centre.
        var pixels = [UInt16](repeating: 0, count: 300 * 200)
        for y in 120..<190 { for x in 230..<245 { pixels[y * 300 + x] = 255 } }
        for y in 175..<190 { for x in 245..<285 { pixels[y * 300 + x] = 200 } }
        let out = try ImageFiles.mnistStyle(GrayImage(width: 300, height: 200, pixels: pixels), source: "L")
        let (cy, cx) = centreOfMass(out)
        XCTAssertEqual(cy, 14, accuracy: 0.5)
        XCTAssertEqual(cx, 14, accuracy: 0.5)
        let box = boundingBox(out)
        XCTAssertEqual(box.height, 20, "the longer side is scaled to 20")
        XCTAssertEqual(Double(box.width), 16, accuracy: 1)   // 55 × 20 / 70 ≈ 15.7
    }

    func testAspectRatioIsKept() throws {
        // A bar 60 tall and 15 wide becomes 20 × 5; a wide one 5 tall and 20 wide.
        let tall = try ImageFiles.mnistStyle(GrayImage(width: 80, height: 80, pixels: blob(width: 80, height: 80, at: (30, 10), size: (15, 60))), source: "tall")
        XCTAssertEqual(boundingBox(tall).height, 20)
        XCTAssertEqual(boundingBox(tall).width, 5)
        let wide = try ImageFiles.mnistStyle(GrayImage(width: 80, height: 80, pixels: blob(width: 80, height: 80, at: (10, 30), size: (60, 15))), source: "wide")
        XCTAssertEqual(boundingBox(wide).height, 5)
        XCTAssertEqual(boundingBox(wide).width, 20)
        // A tiny digit is enlarged to the same size.
        let tiny = try ImageFiles.mnistStyle(GrayImage(width: 10, height: 10, pixels: blob(width: 10, height: 10, at: (2, 2), size: (3, 6))), source: "tiny")
        XCTAssertEqual(boundingBox(tiny).height, 20)
        XCTAssertEqual(boundingBox(tiny).width, 10)
    }

    /// A real MNIST digit is already prepared: doing it again changes little.
    func testRealMNISTDigitIsNearlyUnchanged() throws {
        let test = try MNISTFiles.loadPair(images: mnistDirectory + "/t10k-images-idx3-ubyte.gz",
                                           labels: mnistDirectory + "/t10k-labels-idx1-ubyte.gz")
        for index in 0..<20 {
            let original = Array(test.image(index))
            let again = try ImageFiles.mnistStyle(GrayImage(width: 28, height: 28, pixels: original.map(UInt16.init)), source: "mnist")
            XCTAssertGreaterThan(correlation(original, again), 0.8, "image \(index)")
            let (cy, cx) = centreOfMass(again)
            XCTAssertEqual(cy, 14, accuracy: 0.5); XCTAssertEqual(cx, 14, accuracy: 0.5)
        }
    }

    func testBlankImagesAreRefused() throws {
        for value: UInt16 in [0, 128, 255] {
            let image = GrayImage(width: 20, height: 20, pixels: [UInt16](repeating: value, count: 400))
            XCTAssertThrowsError(try ImageFiles.mnistStyle(image, source: "flat.png")) { error in
                XCTAssertEqual(error as? ImageError, .blank(path: "flat.png"))
                XCTAssertTrue("\(error)".hasPrefix("flat.png: the image is blank"), "\(error)")
            }
        }
    }

    // MARK: Refused files

    func testCorruptPNGsAreRefused() throws {
        let good = pngFile(width: 8, height: 8, colorType: 0, bitDepth: 8, samples: [UInt16](repeating: 9, count: 64))
        XCTAssertNoThrow(try ImageFiles.read(path: try directory.write("good.png", good)))
        var badCRC = good
        badCRC[29] ^= 0xff   // IHDR's CRC
        try assertRefused(try directory.write("crc.png", badCRC)) { if case .corrupt(_, "PNG", _) = $0 { return true }; return false }
        try assertRefused(try directory.write("short.png", Array(good.prefix(good.count - 30)))) {
            if case .corrupt(_, "PNG", _) = $0 { return true }; return false
        }
        var badData = good
        let idat = Self.find(Array("IDAT".utf8), in: good)!
        badData[idat + 6] ^= 0x55   // inside the deflate stream
        try assertRefused(try directory.write("data.png", badData)) { if case .corrupt(_, "PNG", _) = $0 { return true }; return false }
        // A header claiming a 100000 × 100000 picture is refused before anything is allocated.
        let huge = pngFile(width: 100_000, height: 100_000, colorType: 0, bitDepth: 8, samples: [], rawIDAT: [0])
        try assertRefused(try directory.write("huge.png", huge)) {
            if case .corrupt = $0 { return true }; if case .tooLarge = $0 { return true }; return false
        }
        let wide = pngFile(width: 20000, height: 1, colorType: 0, bitDepth: 8, samples: [], rawIDAT: [0])
        try assertRefused(try directory.write("wide.png", wide)) { $0 == .tooLarge(path: self.directory.path + "/wide.png", width: 20000, height: 1) }
    }

    func testCorruptPGMsAreRefused() throws {
        func corrupt(_ name: String, _ bytes: [UInt8], _ problem: String) throws {
            try assertRefused(try directory.write(name, bytes)) {
                if case let .corrupt(_, "PGM", p) = $0 { return p.contains(problem) }; return false
            }
        }
        try corrupt("short.pgm", Array("P5 10 10 255\n".utf8) + [UInt8](repeating: 1, count: 99), "truncated")
        try corrupt("short16.pgm", Array("P5 10 10 65535\n".utf8) + [UInt8](repeating: 1, count: 150), "200 bytes of pixels")
        try corrupt("words.pgm", Array("P5 ten 10 255\n".utf8), "width is not a number")
        try corrupt("nomax.pgm", Array("P2 2 2".utf8), "header ends before its maximum value")
        try corrupt("zero.pgm", Array("P5 0 10 255\n".utf8), "0×10")
        try corrupt("maxval.pgm", Array("P5 1 1 70000\n\0\0\0".utf8), "maximum value 70000")
        try corrupt("over.pgm", Array("P2 2 1 100\n5 101\n".utf8), "sample 1 is 101")
        try corrupt("plain-short.pgm", Array("P2 2 2 255\n1 2 3   ".utf8), "3 of 4 samples")
        try assertRefused(try directory.write("huge.pgm", Array("P5 20000 20000 255\n".utf8))) {
            if case .tooLarge(_, 20000, 20000) = $0 { return true }; return false
        }
    }

    func testOtherFilesAreRefused() throws {
        try assertRefused(try directory.write("cat.gif", Array("GIF89a".utf8) + [0, 1, 2])) {
            if case let .unknownFormat(_, start) = $0 { return start == "'GIF8'" }; return false
        }
        try assertRefused(try directory.write("empty.png", [])) {
            if case let .unknownFormat(_, start) = $0 { return start.contains("empty") }; return false
        }
        try assertRefused(directory.path + "/missing.png") { $0 == .notFound(path: self.directory.path + "/missing.png") }
        try assertRefused(directory.path) { if case .unreadable = $0 { return true }; return false }
    }

    // MARK: Helpers

    /// A filled rectangle of 255 on 0, (height, width).
    func blob(width: Int, height: Int, at origin: (x: Int, y: Int), size: (w: Int, h: Int)) -> [UInt16] {
        var pixels = [UInt16](repeating: 0, count: width * height)
        for y in origin.y..<origin.y + size.h { for x in origin.x..<origin.x + size.w { pixels[y * width + x] = 255 } }
        return pixels
    }

    func prepare(_ path: String) throws -> [UInt8] { try ImageFiles.mnistStyle(ImageFiles.read(path: path), source: path) }

    func assertClose(_ got: [UInt16], _ want: [UInt8], tolerance: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(got.count, want.count, file: file, line: line)
        for (g, w) in zip(got, want) { XCTAssertLessThanOrEqual(abs(Int(g) - Int(w)), tolerance, "\(got) vs \(want)", file: file, line: line) }
    }

    func assertRefused(_ path: String, file: StaticString = #filePath, line: UInt = #line, _ matches: (ImageError) -> Bool) throws {
        XCTAssertThrowsError(try ImageFiles.read(path: path), file: file, line: line) { error in
            guard let e = error as? ImageError else { return XCTFail("not an ImageError: \(error)", file: file, line: line) }
            XCTAssertTrue(matches(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertTrue(e.description.hasPrefix(path + ": "), "names the file: \(e)", file: file, line: line)
            XCTAssertFalse(e.description.contains("\n"), file: file, line: line)
        }
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        (0...(haystack.count - needle.count)).first { Array(haystack[$0..<$0 + needle.count]) == needle }
    }
}

/// A PNG written here, independently of libpng: signature, IHDR, optional PLTE, one IDAT of
/// zlib-compressed scanlines (filter 0), IEND. `samples` are row-major channel values at
/// `bitDepth` (8 or 16). `rawIDAT` replaces the compressed data (for refused headers).
func pngFile(width: Int, height: Int, colorType: UInt8, bitDepth: UInt8, samples: [UInt16],
         palette: [UInt8]? = nil, rawIDAT: [UInt8]? = nil) -> [UInt8] {
    func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        let crc = body.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
        return bigEndian32(UInt32(data.count)) + body + bigEndian32(crc)
    }
    let channels = [0: 1, 2: 3, 3: 1, 4: 2, 6: 4][Int(colorType)]!
    var scanlines: [UInt8] = []
    for y in 0..<height where rawIDAT == nil {
        scanlines.append(0)
        for s in samples[y * width * channels ..< (y + 1) * width * channels] {
            scanlines += bitDepth == 16 ? [UInt8(s >> 8), UInt8(s & 0xff)] : [UInt8(s)]
        }
    }
    var compressed = [UInt8](repeating: 0, count: scanlines.count + scanlines.count / 100 + 64)
    var length = uLongf(compressed.count)
    precondition(compress2(&compressed, &length, scanlines, uLong(scanlines.count), 6) == Z_OK)
    let ihdr = bigEndian32(UInt32(width)) + bigEndian32(UInt32(height)) + [bitDepth, colorType, 0, 0, 0]
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr)
        + (palette.map { chunk("PLTE", $0) } ?? [])
        + chunk("IDAT", rawIDAT ?? Array(compressed[0..<Int(length)])) + chunk("IEND", [])
}
