import CZlib
import Foundation
import XCTest
import Data

/// The repository root: this file is Tests/DataTests/TestSupport.swift.
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The MNIST files shipped in the repository.
let mnistDirectory = repositoryRoot.appendingPathComponent("data/mnist").path

/// A fresh scratch folder, removed by `remove()`.
///
/// On Linux it lives in `/dev/shm` (memory) when that is writable: the fuzz tests rewrite
/// files thousands of times, and on a disk mounted with `discard` each rewrite waits for
/// the device.
struct TemporaryDirectory {
    let path: String

    init() throws {
        let memory = "/dev/shm"
        let base = FileManager.default.isWritableFile(atPath: memory)
            ? URL(fileURLWithPath: memory) : FileManager.default.temporaryDirectory
        path = base.appendingPathComponent("distcnn-data-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Writes `bytes` to `name` in this folder and returns the file's path.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        try Foundation.Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// An IDX file: magic (`00 00 08 dims`), big-endian dimensions, then `payload`.
func idxFile(dimensions: [Int], payload: [UInt8], typeCode: UInt8 = 0x08) -> [UInt8] {
    var bytes: [UInt8] = [0, 0, typeCode, UInt8(dimensions.count)]
    for d in dimensions { bytes += bigEndian32(UInt32(truncatingIfNeeded: d)) }
    return bytes + payload
}

func bigEndian32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
}

/// `bytes` as one gzip member, the way `gzip` writes it.
func gzip(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
    var stream = z_stream()
    precondition(czlib_deflate_init_gzip(&stream, level) == Z_OK)
    defer { deflateEnd(&stream) }
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 64)
    var input = bytes
    let produced = input.withUnsafeMutableBufferPointer { source in
        output.withUnsafeMutableBufferPointer { target in
            stream.next_in = source.baseAddress
            stream.avail_in = uInt(source.count)
            stream.next_out = target.baseAddress
            stream.avail_out = uInt(target.count)
            precondition(deflate(&stream, Z_FINISH) == Z_STREAM_END)
            return target.count - Int(stream.avail_out)
        }
    }
    return Array(output[0..<produced])
}

/// SplitMix64: a tiny seeded generator, so randomised tests repeat exactly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// `count` random images of `height × width` and labels below `classes`, as IDX bytes.
func syntheticIDX(count: Int, height: Int = 28, width: Int = 28, classes: Int = 10,
                  seed: UInt64 = 1) -> (images: [UInt8], labels: [UInt8]) {
    var rng = SplitMix64(seed: seed)
    let pixels = (0..<count * height * width).map { _ in UInt8.random(in: 0...255, using: &rng) }
    let labels = (0..<count).map { _ in UInt8.random(in: 0..<UInt8(classes), using: &rng) }
    return (idxFile(dimensions: [count, height, width], payload: pixels),
            idxFile(dimensions: [count], payload: labels))
}

/// Asserts that `body` throws a `DataError` satisfying `matches`, and returns it.
@discardableResult
func assertDataError<T>(_ body: @autoclosure () throws -> T, file: StaticString = #filePath, line: UInt = #line,
                        _ matches: (DataError) -> Bool) -> DataError? {
    do {
        _ = try body()
        XCTFail("expected a DataError, got success", file: file, line: line)
    } catch let error as DataError {
        XCTAssertTrue(matches(error), "unexpected error: \(error)", file: file, line: line)
        XCTAssertFalse(error.description.contains("\n"), "message must be one line: \(error)", file: file, line: line)
        return error
    } catch {
        XCTFail("expected a DataError, got \(error)", file: file, line: line)
    }
    return nil
}

/// Centre of mass of a side × side image in pixel indices (row, column); MNIST's digits have
/// theirs at (14, 14).
func centreOfMass(_ image: [UInt8], side: Int = 28) -> (Double, Double) {
    var m = 0.0, y = 0.0, x = 0.0
    for (i, v) in image.enumerated() {
        m += Double(v); y += Double(v) * Double(i / side); x += Double(v) * Double(i % side)
    }
    return (y / m, x / m)
}

/// Height and width of the box around an image's lit pixels.
func boundingBox(_ image: [UInt8], side: Int = 28) -> (height: Int, width: Int) {
    let lit = image.indices.filter { image[$0] > 0 }
    let ys = lit.map { $0 / side }, xs = lit.map { $0 % side }
    return (ys.max()! - ys.min()! + 1, xs.max()! - xs.min()! + 1)
}

/// Pearson correlation of two images' pixels.
func correlation(_ a: [UInt8], _ b: [UInt8]) -> Double {
    let x = a.map(Double.init), y = b.map(Double.init)
    let mx = x.reduce(0, +) / Double(x.count), my = y.reduce(0, +) / Double(y.count)
    var sxy = 0.0, sxx = 0.0, syy = 0.0
    for i in x.indices { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) * (x[i] - mx); syy += (y[i] - my) * (y[i] - my) }
    return sxy / (sxx * syy).squareRoot()
}
