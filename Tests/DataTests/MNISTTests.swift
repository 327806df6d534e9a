import Foundation
import Hashing
import XCTest
import Data

/// The real MNIST shipped in data/mnist: shapes, known values, and its checksums.
final class MNISTTests: XCTestCase {
    func testLoadsRealMNIST() throws {
        let (train, test) = try MNISTFiles.load(directory: mnistDirectory)
        XCTAssertEqual(train.count, 60000)
        XCTAssertEqual(test.count, 10000)
        for set in [train, test] {
            XCTAssertEqual(set.height, 28)
            XCTAssertEqual(set.width, 28)
            XCTAssertEqual(set.channels, 1)
            XCTAssertEqual(set.classes, 10)
            XCTAssertEqual(set.images.count, set.count * 784)
        }
        XCTAssertEqual(Array(train.labels.prefix(5)), [5, 0, 4, 1, 9])
        XCTAssertEqual(Array(test.labels.prefix(3)), [7, 2, 1])
        // Every digit occurs; the training set has 5923 zeros (LeCun's counts).
        XCTAssertEqual(Set(train.labels).count, 10)
        XCTAssertEqual(train.labels.filter { $0 == 0 }.count, 5923)
    }

    /// The well-known MNIST statistics, 0.1307 and 0.3081.
    func testFeaturewiseStatisticsOfMNIST() throws {
        let train = try MNISTFiles.loadPair(images: mnistDirectory + "/train-images-idx3-ubyte.gz",
                                            labels: mnistDirectory + "/train-labels-idx1-ubyte.gz")
        let normalizer = Normalizer.featurewise(from: train)
        XCTAssertEqual(normalizer.mean.count, 1)
        XCTAssertEqual(normalizer.mean[0], 0.130_660_48, accuracy: 1e-6)
        XCTAssertEqual(normalizer.std[0], 0.308_107_8, accuracy: 1e-6)
    }

    /// `SHA256SUMS` pins the .gz files; `SHA256SUMS.raw` pins what they decompress to.
    func testChecksums() throws {
        let sums = try checksums("SHA256SUMS")
        XCTAssertEqual(Set(sums.keys), Set(MNISTFiles.baseNames.map { $0 + ".gz" }))
        for (name, expected) in sums {
            let bytes = try [UInt8](Foundation.Data(contentsOf: URL(fileURLWithPath: mnistDirectory + "/" + name)))
            XCTAssertEqual(SHA256.hex(SHA256.hash(bytes)), expected, name)
        }

        let rawSums = try checksums("SHA256SUMS.raw")
        XCTAssertEqual(Set(rawSums.keys), Set(MNISTFiles.baseNames))
        for (name, expected) in rawSums {
            // Stream the decompressed bytes straight into the hasher.
            let reader = try GzipReader(file: FileReader(path: mnistDirectory + "/" + name + ".gz"))
            var hasher = SHA256()
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = try chunk.withUnsafeMutableBytes { try reader.read(into: $0) }
                chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                if n < chunk.count { break }
            }
            try reader.checkEnd()
            XCTAssertEqual(SHA256.hex(hasher.finalize()), expected, name)
        }
    }

    /// The parsed dataset re-serialised as IDX is byte-for-byte the decompressed file.
    func testParsedImagesMatchRawChecksum() throws {
        let rawSums = try checksums("SHA256SUMS.raw")
        let test = try MNISTFiles.loadPair(images: mnistDirectory + "/t10k-images-idx3-ubyte.gz",
                                           labels: mnistDirectory + "/t10k-labels-idx1-ubyte.gz")
        var images = SHA256()
        images.update(idxFile(dimensions: [test.count, test.height, test.width], payload: []))
        images.update(test.images)
        XCTAssertEqual(SHA256.hex(images.finalize()), rawSums["t10k-images-idx3-ubyte"])
        let labels = SHA256.hash(idxFile(dimensions: [test.count], payload: test.labels))
        XCTAssertEqual(SHA256.hex(labels), rawSums["t10k-labels-idx1-ubyte"])
    }

    /// Fashion-MNIST from Debian's `dataset-fashion-mnist` (scripts/install-deps installs it): same layout.
    func testFashionMNIST() throws {
        let directory = "/usr/share/datasets/fashion-mnist"
        guard FileManager.default.fileExists(atPath: directory) else {
            return XCTFail("\(directory) is missing; run the tests with scripts/test, which installs dataset-fashion-mnist")
        }
        let (train, test) = try MNISTFiles.load(directory: directory)
        XCTAssertEqual(train.count, 60000)
        XCTAssertEqual(test.count, 10000)
        XCTAssertEqual(train.classes, 10)
        XCTAssertEqual(train.height, 28)
        XCTAssertEqual(train.labels[0], 9)  // an ankle boot
    }

    /// `name → hex digest` from a `sha256sum` listing in data/mnist.
    private func checksums(_ file: String) throws -> [String: String] {
        let text = try String(contentsOfFile: mnistDirectory + "/" + file, encoding: .utf8)
        var sums = [String: String]()
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            XCTAssertEqual(fields.count, 2, "bad line in \(file): \(line)")
            sums[String(fields[1]).trimmingCharacters(in: CharacterSet(charactersIn: "*"))] = String(fields[0])
        }
        return sums
    }
}
