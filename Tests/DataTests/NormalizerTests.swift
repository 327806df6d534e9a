import Foundation
import XCTest
import Data

/// Featurewise statistics and the NCHW float conversion.
final class NormalizerTests: XCTestCase {
    func testFeaturewiseStatistics() {
        // Half the pixels 0, half 255: mean 0.5, std 0.5 after scaling.
        let halves = Dataset(images: [0, 255, 0, 255, 255, 0, 255, 0], labels: [0, 1], height: 2, width: 2, classes: 2)
        let normalizer = Normalizer.featurewise(from: halves)
        XCTAssertEqual(normalizer.mean, [0.5])
        XCTAssertEqual(normalizer.std, [0.5])

        // Against a direct two-pass computation in Double.
        var rng = SplitMix64(seed: 7)
        let pixels = (0..<5 * 4 * 4).map { _ in UInt8.random(in: 0...200, using: &rng) }
        let random = Dataset(images: pixels, labels: [0, 1, 0, 1, 0], height: 4, width: 4, classes: 2)
        let scaled = pixels.map { Double($0) / 255 }
        let mean = scaled.reduce(0, +) / Double(scaled.count)
        let std = (scaled.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(scaled.count)).squareRoot()
        let fitted = Normalizer.featurewise(from: random)
        XCTAssertEqual(Double(fitted.mean[0]), mean, accuracy: 1e-7)
        XCTAssertEqual(Double(fitted.std[0]), std, accuracy: 1e-7)
    }

    /// Each channel gets its own statistics (pixels are stored H, W, C).
    func testFeaturewisePerChannel() {
        // One 1×2 image, 3 channels: channel 0 = {0, 255}, channel 1 = {51, 51}, channel 2 = {255, 255}.
        let rgb = Dataset(images: [0, 51, 255, 255, 51, 255], labels: [0], height: 1, width: 2, channels: 3, classes: 2)
        let normalizer = Normalizer.featurewise(from: rgb)
        XCTAssertEqual(normalizer.mean[0], 0.5, accuracy: 1e-7)
        XCTAssertEqual(normalizer.mean[1], 0.2, accuracy: 1e-7)
        XCTAssertEqual(normalizer.mean[2], 1.0, accuracy: 1e-7)
        XCTAssertEqual(normalizer.std[0], 0.5, accuracy: 1e-7)
        XCTAssertEqual(normalizer.std[1], 1, "a constant channel gets std 1, not 0")
        XCTAssertEqual(normalizer.std[2], 1)
    }

    func testFillWritesStandardisedImagesInOrder() {
        let dataset = Dataset(images: [0, 51, 102, 255,   10, 20, 30, 40,   255, 255, 0, 0],
                              labels: [0, 1, 0], height: 2, width: 2, classes: 2)
        let normalizer = Normalizer(mean: [0.25], std: [0.5])
        var out = [Float](repeating: .nan, count: 8)
        out.withUnsafeMutableBufferPointer { normalizer.fill($0.baseAddress!, from: dataset, indices: [2, 0]) }
        let expected: [UInt8] = [255, 255, 0, 0, 0, 51, 102, 255]
        for (value, pixel) in zip(out, expected) {
            XCTAssertEqual(value, (Float(pixel) / 255 - 0.25) / 0.5, accuracy: 1e-6)
        }

        // Unit scaling is plain division by 255; a range works as the index collection.
        var unit = [Float](repeating: .nan, count: 4)
        unit.withUnsafeMutableBufferPointer { Normalizer.unit.fill($0.baseAddress!, from: dataset, indices: 1..<2) }
        XCTAssertEqual(unit, [10, 20, 30, 40].map { Float($0) / 255 })
    }

    /// Channels-last bytes come out channels-first (C, H, W), each with its own statistics.
    func testFillTransposesToNCHW() {
        // One 1×2 image, 2 channels: pixel 0 = (0, 255), pixel 1 = (255, 0).
        let dataset = Dataset(images: [0, 255, 255, 0], labels: [1], height: 1, width: 2, channels: 2, classes: 2)
        let normalizer = Normalizer(mean: [0, 1], std: [1, 2])
        var out = [Float](repeating: .nan, count: 4)
        out.withUnsafeMutableBufferPointer { normalizer.fill($0.baseAddress!, from: dataset, indices: [0]) }
        XCTAssertEqual(out, [0, 1, 0, -0.5])
    }

    func testCodableRoundTrip() throws {
        let normalizer = Normalizer(mean: [0.1307], std: [0.3081])
        let json = try JSONEncoder().encode(normalizer)
        XCTAssertEqual(try JSONDecoder().decode(Normalizer.self, from: json), normalizer)
        XCTAssertEqual(Normalizer.unit, Normalizer(mean: [0], std: [1]))
    }
}
