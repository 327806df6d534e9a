import XCTest
import Data

/// Each kind of broken input gives its own `DataError`, raw and gzipped.
final class IDXValidationTests: XCTestCase {
    private var folder: TemporaryDirectory!
    private var images: [UInt8] = []  // 20 valid 28×28 images, IDX
    private var labels: [UInt8] = []  // their 20 labels, IDX

    override func setUpWithError() throws {
        folder = try TemporaryDirectory()
        (images, labels) = syntheticIDX(count: 20)
    }

    override func tearDown() { folder.remove() }

    func testValidFilesRawAndGzip() throws {
        let raw = try IDXReader.readImages(path: folder.write("images", images))
        let gz = try IDXReader.readImages(path: folder.write("images.gz", gzip(images)))
        for parsed in [raw, gz] {
            XCTAssertEqual([parsed.count, parsed.height, parsed.width, parsed.channels], [20, 28, 28, 1])
            XCTAssertEqual(parsed.pixels, Array(images[16...]))
        }
        XCTAssertEqual(try IDXReader.readLabels(path: folder.write("labels.gz", gzip(labels))), Array(labels[8...]))
    }

    /// Gzip is recognised by content, not by name.
    func testFormatDetectedByMagicNotName() throws {
        let gzipNamedRaw = try folder.write("images-idx3-ubyte", gzip(images))
        let rawNamedGzip = try folder.write("images-idx3-ubyte.gz", images)
        XCTAssertEqual(try IDXReader.readImages(path: gzipNamedRaw).pixels, Array(images[16...]))
        XCTAssertEqual(try IDXReader.readImages(path: rawNamedGzip).pixels, Array(images[16...]))
    }

    /// `cat a.gz b.gz` is a valid gzip file holding both parts.
    func testConcatenatedGzipMembers() throws {
        let path = try folder.write("images.gz", gzip(Array(images[..<5000])) + gzip(Array(images[5000...])))
        XCTAssertEqual(try IDXReader.readImages(path: path).pixels, Array(images[16...]))
    }

    /// A 4-dimensional N×H×W×C file is read with its channels.
    func testFourDimensionalImages() throws {
        let pixels = (0..<2 * 3 * 4 * 3).map { UInt8($0) }
        let path = try folder.write("rgb", idxFile(dimensions: [2, 3, 4, 3], payload: pixels))
        let parsed = try IDXReader.readImages(path: path)
        XCTAssertEqual([parsed.count, parsed.height, parsed.width, parsed.channels], [2, 3, 4, 3])
        XCTAssertEqual(parsed.pixels, pixels)
    }

    func testWrongMagic() throws {
        var bytes = images
        bytes[0] = 0x12
        for path in try [folder.write("bad", bytes), folder.write("bad.gz", gzip(bytes))] {
            let error = assertDataError(try IDXReader.readImages(path: path)) {
                if case .badMagic(path, 0x1200_0803, IDXReader.imageMagic) = $0 { return true } else { return false }
            }
            XCTAssertTrue(error?.description.contains("magic number is 0x12000803, expected 0x00000803") ?? false)
        }
        // A file that is not IDX at all, e.g. a PNG.
        let png = try folder.write("digit.png", [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
        assertDataError(try IDXReader.readLabels(path: png)) {
            if case .badMagic = $0 { return true } else { return false }
        }
    }

    func testUnsupportedElementType() throws {
        let floats = try folder.write("floats", idxFile(dimensions: [1, 2, 2], payload: [UInt8](repeating: 0, count: 16), typeCode: 0x0D))
        let error = assertDataError(try IDXReader.readImages(path: floats)) {
            if case .unsupportedElementType(floats, 0x0D) = $0 { return true } else { return false }
        }
        XCTAssertTrue(error?.description.contains("float") ?? false)
    }

    func testWrongDimensionCount() throws {
        let twoDimensional = try folder.write("2d", idxFile(dimensions: [20, 784], payload: Array(images[16...])))
        assertDataError(try IDXReader.readImages(path: twoDimensional)) {
            if case .wrongDimensionCount(twoDimensional, 2, _) = $0 { return true } else { return false }
        }
        let labelsAsImages = try folder.write("labels", labels)
        let swapped = assertDataError(try IDXReader.readImages(path: labelsAsImages)) {
            if case .wrongDimensionCount(labelsAsImages, 1, _) = $0 { return true } else { return false }
        }
        XCTAssertTrue(swapped?.description.contains("swapped") ?? false)
        let imagesAsLabels = try folder.write("images.gz", gzip(images))
        assertDataError(try IDXReader.readLabels(path: imagesAsLabels)) {
            if case .wrongDimensionCount(imagesAsLabels, 3, "1") = $0 { return true } else { return false }
        }
    }

    func testTruncatedRaw() throws {
        let path = try folder.write("images", Array(images[..<(16 + 1000)]))
        let error = assertDataError(try IDXReader.readImages(path: path)) {
            if case .truncated(path, "pixels", 15680, 1000, false) = $0 { return true } else { return false }
        }
        XCTAssertEqual(error?.description,
                       "\(path): truncated: header promises 15680 bytes of pixels, the file has 1000 (re-download the file or check --data)")
        // Cut inside the header.
        let header = try folder.write("header", Array(images[..<10]))
        assertDataError(try IDXReader.readImages(path: header)) {
            if case .truncated(header, "IDX header", 16, 10, false) = $0 { return true } else { return false }
        }
        let empty = try folder.write("empty", [])
        assertDataError(try IDXReader.readLabels(path: empty)) {
            if case .truncated(empty, "IDX header", 4, 0, false) = $0 { return true } else { return false }
        }
    }

    /// A .gz cut short: the decompressed data ends early, or only the gzip trailer is missing.
    func testTruncatedGzip() throws {
        // The payload itself is incomplete: gzip a short file (valid stream, short data).
        let shortStream = try folder.write("short.gz", gzip(Array(images[..<(16 + 1000)])))
        assertDataError(try IDXReader.readImages(path: shortStream)) {
            if case .truncated(shortStream, "pixels", 15680, 1000, true) = $0 { return true } else { return false }
        }
        // The compressed file is cut in half: fewer bytes come out than promised.
        let compressed = gzip(images)
        let half = try folder.write("half.gz", Array(compressed[..<(compressed.count / 2)]))
        assertDataError(try IDXReader.readImages(path: half)) {
            if case .truncated(half, "pixels", 15680, let found, true) = $0 { return found < 15680 } else { return false }
        }
        // Only the 8-byte trailer (CRC-32, length) is cut: all data is there but unverified.
        let noTrailer = try folder.write("notrailer.gz", Array(compressed.dropLast(8)))
        let error = assertDataError(try IDXReader.readImages(path: noTrailer)) {
            if case .corruptGzip(noTrailer, _) = $0 { return true } else { return false }
        }
        XCTAssertTrue(error?.description.contains("truncated") ?? false)
    }

    func testTrailingBytes() throws {
        let raw = try folder.write("images", images + [1, 2, 3])
        let error = assertDataError(try IDXReader.readImages(path: raw)) {
            if case .trailingBytes(raw, 15680, 3, false) = $0 { return true } else { return false }
        }
        XCTAssertTrue(error?.description.contains("3 unexpected bytes") ?? false)
        // Extra data inside the compressed stream.
        let gz = try folder.write("images.gz", gzip(images + [UInt8](repeating: 7, count: 100)))
        assertDataError(try IDXReader.readImages(path: gz)) {
            if case .trailingBytes(gz, 15680, 100, true) = $0 { return true } else { return false }
        }
        // Junk after the end of the gzip stream.
        let junk = try folder.write("junk.gz", gzip(images) + [0, 0, 0, 0])
        let junkError = assertDataError(try IDXReader.readImages(path: junk)) {
            if case .corruptGzip(junk, _) = $0 { return true } else { return false }
        }
        XCTAssertTrue(junkError?.description.contains("4 bytes of non-gzip data") ?? false)
    }

    func testCorruptGzip() throws {
        let compressed = gzip(images)
        // A flipped byte in the CRC-32 of the trailer.
        var badCRC = compressed
        badCRC[badCRC.count - 8] ^= 0xff
        let crcPath = try folder.write("crc.gz", badCRC)
        let crcError = assertDataError(try IDXReader.readImages(path: crcPath)) {
            if case .corruptGzip(crcPath, _) = $0 { return true } else { return false }
        }
        XCTAssertTrue(crcError?.description.contains("CRC-32 mismatch") ?? false)
        // A damaged stored length.
        var badLength = compressed
        badLength[badLength.count - 1] ^= 0x01
        let lengthPath = try folder.write("length.gz", badLength)
        assertDataError(try IDXReader.readImages(path: lengthPath)) {
            if case .corruptGzip(lengthPath, _) = $0 { return true } else { return false }
        }
        // Damage in the deflate data (past the part that holds the IDX header): zlib refuses it
        // or the CRC catches it.
        for offset in stride(from: compressed.count / 3, to: compressed.count - 20, by: compressed.count / 11) {
            var damaged = compressed
            damaged[offset] ^= 0x55
            let path = try folder.write("body\(offset).gz", damaged)
            assertDataError(try IDXReader.readImages(path: path)) {
                switch $0 {
                case .corruptGzip(path, _): return true
                // A flip can also change how much comes out before zlib notices.
                case .truncated(path, _, _, _, true), .trailingBytes(path, _, _, true): return true
                default: return false
                }
            }
        }
        // An invalid block type (first deflate byte after the 10-byte gzip header).
        var badBlock = compressed
        badBlock[10] = 0x07  // BFINAL=1, BTYPE=11 (reserved)
        let blockPath = try folder.write("block.gz", badBlock)
        let blockError = assertDataError(try IDXReader.readImages(path: blockPath)) {
            if case .corruptGzip(blockPath, _) = $0 { return true } else { return false }
        }
        XCTAssertTrue(blockError?.description.contains("invalid block type") ?? false)
    }

    /// Headers that promise absurd sizes are refused from the header alone.
    func testAbsurdDimensionsRefusedBeforeReading() throws {
        let cases: [([Int], String)] = [
            ([1 << 31, 28, 28], "examples"),          // 2^31 images
            ([20, 1 << 31, 28], "larger than"),       // 2^31 rows
            ([20, 28, 5000], "larger than"),
            ([100_000_000, 28, 28], "2 GiB"),         // 78 GB of pixels
            ([0, 28, 28], "zero"),
            ([20, 28, 0], "zero"),
            ([20, 28, 28, 5], "channels"),
        ]
        for (dimensions, phrase) in cases {
            // Only the header: if the reader tried to read the data it would say "truncated".
            for path in try [folder.write("absurd", idxFile(dimensions: dimensions, payload: [])),
                             folder.write("absurd.gz", gzip(idxFile(dimensions: dimensions, payload: [])))] {
                let error = assertDataError(try IDXReader.readImages(path: path)) {
                    if case .badDimensions(path, _, _) = $0 { return true } else { return false }
                }
                XCTAssertTrue(error?.description.contains(phrase) ?? false, "\(dimensions): \(String(describing: error))")
            }
        }
        let labelsPath = try folder.write("labels", idxFile(dimensions: [200_000_000], payload: []))
        assertDataError(try IDXReader.readLabels(path: labelsPath)) {
            if case .badDimensions = $0 { return true } else { return false }
        }
    }

    /// A tiny .gz whose header promises 1.5 GB is refused without inflating or allocating for it.
    func testGzipPromisingMoreThanItCanHold() throws {
        let header = idxFile(dimensions: [2_000_000, 28, 28], payload: [1, 2, 3])
        let path = try folder.write("bomb.gz", gzip(header))
        assertDataError(try IDXReader.readImages(path: path)) {
            if case .truncated(path, "pixels", 1_568_000_000, 3, true) = $0 { return true } else { return false }
        }
    }

    func testMissingAndUnreadableFiles() throws {
        let missing = folder.path + "/nope"
        assertDataError(try IDXReader.readLabels(path: missing)) { $0 == .notFound(path: missing) }
        assertDataError(try IDXReader.readLabels(path: folder.path)) {
            if case .unreadable(self.folder.path, _) = $0 { return true } else { return false }
        }
    }
}
