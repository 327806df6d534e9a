import XCTest
import Data

/// Seeded mutation fuzzing: damaged IDX files, raw and gzipped, must either parse into a
/// consistent result or throw a `DataError`. A crash (trap, bad allocation) fails the run.
final class IDXFuzzTests: XCTestCase {
    private var folder: TemporaryDirectory!

    override func setUpWithError() throws { folder = try TemporaryDirectory() }
    override func tearDown() { folder.remove() }

    /// One random damage: bit flips (often in the header), a cut, an extension, or a splice.
    private func mutate(_ original: [UInt8], using rng: inout SplitMix64) -> [UInt8] {
        var bytes = original
        switch Int.random(in: 0..<5, using: &rng) {
        case 0, 1:  // flip 1…4 bytes, half of them within the first 24 (headers)
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let limit = Bool.random(using: &rng) ? min(24, bytes.count) : bytes.count
                bytes[Int.random(in: 0..<limit, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            }
        case 2:  // cut anywhere
            bytes = Array(bytes[..<Int.random(in: 0..<bytes.count, using: &rng)])
        case 3:  // extend with random bytes
            bytes += (0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        default:  // overwrite a random run with random bytes
            let start = Int.random(in: 0..<bytes.count, using: &rng)
            let end = min(bytes.count, start + Int.random(in: 1...32, using: &rng))
            for i in start..<end { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        }
        return bytes
    }

    private func fuzz(_ original: [UInt8], iterations: Int, seed: UInt64,
                      parse: (String) throws -> Int) throws -> (parsed: Int, refused: Int) {
        var rng = SplitMix64(seed: seed)
        var parsed = 0, refused = 0
        for iteration in 0..<iterations {
            let path = try folder.write("case", mutate(original, using: &rng))
            do {
                _ = try parse(path)
                parsed += 1
            } catch is DataError {
                refused += 1
            } catch {
                XCTFail("iteration \(iteration): \(error) is not a DataError")
            }
        }
        return (parsed, refused)
    }

    /// Parses images and checks every invariant a caller relies on.
    private func parseImages(_ path: String) throws -> Int {
        let images = try IDXReader.readImages(path: path)
        XCTAssertGreaterThan(images.count, 0)
        XCTAssertTrue((1...IDXReader.maxSide).contains(images.height))
        XCTAssertTrue((1...IDXReader.maxSide).contains(images.width))
        XCTAssertTrue((1...IDXReader.maxChannels).contains(images.channels))
        XCTAssertEqual(images.pixels.count, images.count * images.height * images.width * images.channels)
        return images.count
    }

    private func parseLabels(_ path: String) throws -> Int {
        let labels = try IDXReader.readLabels(path: path)
        XCTAssertGreaterThan(labels.count, 0)
        return labels.count
    }

    func testMutatedImageFiles() throws {
        let images = syntheticIDX(count: 20).images
        let raw = try fuzz(images, iterations: 1500, seed: 1, parse: parseImages)
        let gz = try fuzz(gzip(images), iterations: 1500, seed: 2, parse: parseImages)
        // Both outcomes occur: flips in pixel bytes parse, most other damage is refused.
        XCTAssertGreaterThan(raw.parsed, 100, "raw: \(raw)")
        XCTAssertGreaterThan(raw.refused, 500, "raw: \(raw)")
        XCTAssertGreaterThan(gz.refused, 1000, "gz: \(gz)")
    }

    func testMutatedLabelFiles() throws {
        let labels = syntheticIDX(count: 20).labels
        let raw = try fuzz(labels, iterations: 1000, seed: 3, parse: parseLabels)
        let gz = try fuzz(gzip(labels), iterations: 1000, seed: 4, parse: parseLabels)
        XCTAssertGreaterThan(raw.parsed, 50, "raw: \(raw)")
        XCTAssertGreaterThan(raw.refused, 300, "raw: \(raw)")
        XCTAssertGreaterThan(gz.refused, 500, "gz: \(gz)")
    }

    /// Whole folders with one damaged file load or fail with a `DataError`, never trap.
    func testMutatedDatasetFolders() throws {
        let train = syntheticIDX(count: 20, seed: 5)
        let test = syntheticIDX(count: 8, seed: 6)
        let originals = [train.images, train.labels, test.images, test.labels].map { gzip($0) }
        let names = MNISTFiles.baseNames.map { $0 + ".gz" }
        var rng = SplitMix64(seed: 8)
        var loaded = 0
        for _ in 0..<300 {
            let victim = Int.random(in: 0..<4, using: &rng)
            for (i, name) in names.enumerated() {
                try folder.write(name, i == victim ? mutate(originals[i], using: &rng) : originals[i])
            }
            do {
                let (train, test) = try MNISTFiles.load(directory: folder.path)
                XCTAssertTrue(train.labels.allSatisfy { Int($0) < train.classes })
                XCTAssertTrue(test.labels.allSatisfy { Int($0) < train.classes })
                XCTAssertEqual([test.height, test.width, test.channels], [train.height, train.width, train.channels])
                loaded += 1
            } catch is DataError {
            }
        }
        XCTAssertLessThan(loaded, 300)
    }
}
