import Foundation
import XCTest
import Data

/// `DigitPreparation` on synthetic photos: uneven light, sensor noise, specks, other marks.
final class DigitPreparationTests: XCTestCase {
    /// A thick "7" (a bar and a slanted stroke) as ink in 0...1 on a `side × side` page, its
    /// box from (top, left) spanning `size` pixels.
    static func seven(side: Int, top: Int, left: Int, size: Int, stroke: Int) -> [Float] {
        var ink = [Float](repeating: 0, count: side * side)
        func dot(_ y: Int, _ x: Int) {
            for yy in max(0, y - stroke / 2)..<min(side, y + stroke - stroke / 2) {
                for xx in max(0, x - stroke / 2)..<min(side, x + stroke - stroke / 2) { ink[yy * side + xx] = 1 }
            }
        }
        for x in left..<left + size * 3 / 4 { dot(top + stroke / 2, x) }
        for t in 0..<size {  // from the bar's right end down and to the left
            dot(top + t, left + size * 3 / 4 - t * size / 2 / size)
        }
        return ink
    }

    /// `ink` printed dark on paper lit from one corner (brightness `dim` there, 250 at the
    /// opposite one) with Gaussian noise of `noise` (8-bit units), as a photo of a page.
    static func photo(_ ink: [Float], side: Int, dim: Double = 110, noise: Double = 12, seed: UInt64 = 1) -> GrayImage {
        var rng = SplitMix64(seed: seed)
        func gaussian() -> Double {
            let u = max(Double.leastNonzeroMagnitude, Double.random(in: 0..<1, using: &rng)), v = Double.random(in: 0..<1, using: &rng)
            return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * .pi * v)
        }
        let pixels = (0..<side * side).map { i -> UInt16 in
            let y = Double(i / side), x = Double(i % side)
            let paper = dim + (250 - dim) * (x + y) / Double(2 * (side - 1))
            let value = paper * (1 - 0.75 * Double(ink[i])) + noise * gaussian()
            return UInt16(min(255, max(0, value.rounded())))
        }
        return GrayImage(width: side, height: side, pixels: pixels)
    }

    /// The same digit clean (white on black, no noise) prepared: what the photo should give.
    static func clean(_ ink: [Float], side: Int) throws -> [UInt8] {
        try DigitPreparation.prepare(GrayImage(width: side, height: side, pixels: ink.map { UInt16($0 * 255) }), source: "clean").pixels
    }

    /// The case: a digit on unevenly lit, noisy paper comes out centred, 20 pixels
    /// tall, with nothing of the paper left, and like the clean digit.
    func testGradientAndNoiseAreRemoved() throws {
        let ink = Self.seven(side: 140, top: 30, left: 40, size: 80, stroke: 9)
        let digit = try DigitPreparation.prepare(Self.photo(ink, side: 140), source: "photo")
        let out = digit.pixels
        let (cy, cx) = centreOfMass(out)
        XCTAssertEqual(cy, 14, accuracy: 0.5)
        XCTAssertEqual(cx, 14, accuracy: 0.5)
        XCTAssertEqual(boundingBox(out).height, 20, "the digit's longer side is 20 pixels")
        XCTAssertLessThanOrEqual(boundingBox(out).width, 20)
        // Background-free: every pixel outside the digit's 20-pixel box is black, and most of
        // the field is.
        XCTAssertGreaterThan(out.filter { $0 == 0 }.count, 28 * 28 / 2)
        XCTAssertGreaterThan(correlation(out, try Self.clean(ink, side: 140)), 0.9)
        XCTAssertEqual(digit.doubts, [], "a clear digit raises no doubt")
    }

    /// Without removing the background the light gradient itself would be read as ink: with
    /// it removed, a darker lighting changes little.
    func testDarkerLightingGivesTheSameDigit() throws {
        let ink = Self.seven(side: 140, top: 20, left: 30, size: 90, stroke: 11)
        let bright = try DigitPreparation.prepare(Self.photo(ink, side: 140, dim: 230, noise: 4), source: "bright").pixels
        let dark = try DigitPreparation.prepare(Self.photo(ink, side: 140, dim: 60, noise: 12, seed: 2), source: "dark").pixels
        XCTAssertGreaterThan(correlation(bright, dark), 0.9)
    }

    /// Specks of dirt and a short line away from the digit are left out.
    func testSpecksAreDropped() throws {
        var ink = Self.seven(side: 140, top: 30, left: 40, size: 80, stroke: 9)
        let plain = try DigitPreparation.prepare(Self.photo(ink, side: 140), source: "plain").pixels
        for (y, x) in [(5, 5), (130, 20), (120, 128), (10, 125)] {
            for yy in y..<y + 3 { for xx in x..<x + 3 { ink[yy * 140 + xx] = 1 } }
        }
        let specked = try DigitPreparation.prepare(Self.photo(ink, side: 140), source: "specks")
        XCTAssertGreaterThan(correlation(specked.pixels, plain), 0.98)
        XCTAssertEqual(boundingBox(specked.pixels).height, 20)
        XCTAssertEqual(specked.doubts, [], "small specks are no reason for doubt")
    }

    /// A digit whose bar the pen left apart from its stem is kept whole.
    func testBrokenStrokeIsKept() throws {
        var ink = Self.seven(side: 140, top: 30, left: 40, size: 80, stroke: 9)
        let whole = try DigitPreparation.prepare(Self.photo(ink, side: 140), source: "whole").pixels
        for y in 36..<41 { for x in 0..<140 { ink[y * 140 + x] = 0 } }   // a gap under the bar
        let broken = try DigitPreparation.prepare(Self.photo(ink, side: 140), source: "broken")
        XCTAssertEqual(broken.keptShare, 1, accuracy: 1e-9)
        XCTAssertEqual(boundingBox(broken.pixels).height, 20)
        // The bar is there: the digit's top row is as wide as the whole digit's, not the
        // stem's few pixels.
        func topRowWidth(_ image: [UInt8]) -> Int {
            let row = image.indices.first { image[$0] > 0 }! / 28
            return (0..<28).filter { image[row * 28 + $0] > 0 }.count
        }
        XCTAssertGreaterThanOrEqual(topRowWidth(broken.pixels), 10)
        XCTAssertEqual(Double(topRowWidth(broken.pixels)), Double(topRowWidth(whole)), accuracy: 2)
    }

    /// Two digits on one page: the larger is kept and the result is called doubtful.
    func testTwoDigitsAreDoubtful() throws {
        var ink = Self.seven(side: 140, top: 20, left: 5, size: 60, stroke: 8)
        let other = Self.seven(side: 140, top: 24, left: 75, size: 56, stroke: 8)
        for i in ink.indices { ink[i] = max(ink[i], other[i]) }
        let digit = try DigitPreparation.prepare(Self.photo(ink, side: 140), source: "two")
        XCTAssertLessThan(digit.keptShare, 0.7)
        XCTAssertTrue(digit.doubts.contains { $0.contains("more than one digit") }, "\(digit.doubts)")
    }

    /// A solid blot and a digit cut by the picture's edge are doubtful; real MNIST digits are not.
    func testDoubtfulShapes() throws {
        var blot = [Float](repeating: 0, count: 100 * 100)
        for y in 30..<70 { for x in 35..<65 { blot[y * 100 + x] = 1 } }
        let b = try DigitPreparation.prepare(Self.photo(blot, side: 100), source: "blot")
        XCTAssertTrue(b.doubts.contains { $0.contains("blot") }, "\(b.doubts)")

        let cut = Self.seven(side: 100, top: 0, left: 30, size: 70, stroke: 8)
        let c = try DigitPreparation.prepare(Self.photo(cut, side: 100), source: "cut")
        XCTAssertTrue(c.doubts.contains { $0.contains("edge") }, "\(c.doubts)")

        let test = try MNISTFiles.loadPair(images: mnistDirectory + "/t10k-images-idx3-ubyte.gz",
                                           labels: mnistDirectory + "/t10k-labels-idx1-ubyte.gz")
        var doubtful: [Int: [String]] = [:]
        for index in 0..<1000 {
            let image = GrayImage(width: 28, height: 28, pixels: Array(test.image(index)).map(UInt16.init))
            let d = try DigitPreparation.prepare(image, source: "mnist")
            if !d.doubts.isEmpty { doubtful[index] = d.doubts }
        }
        XCTAssertEqual(doubtful, [:], "MNIST digits called doubtful")
    }

    /// A large photo is worked on at a bounded size and gives the digit its small copy gives.
    func testLargePhotoIsScaledDown() throws {
        let small = Self.seven(side: 140, top: 30, left: 40, size: 80, stroke: 9)
        let side = 1400
        var large = [Float](repeating: 0, count: side * side)
        for y in 0..<side { for x in 0..<side { large[y * side + x] = small[(y / 10) * 140 + x / 10] } }
        let big = try DigitPreparation.prepare(Self.photo(large, side: side, noise: 20), source: "large").pixels
        let (cy, cx) = centreOfMass(big)
        XCTAssertEqual(cy, 14, accuracy: 0.5)
        XCTAssertEqual(cx, 14, accuracy: 0.5)
        XCTAssertGreaterThan(correlation(big, try Self.clean(small, side: 140)), 0.9)
    }

    /// The running minimum and maximum match the plain definition for every window and length.
    func testRunningExtremeMatchesNaive() {
        var rng = SplitMix64(seed: 7)
        for n in [1, 2, 5, 13, 40] {
            let values = (0..<n).map { _ in Float.random(in: 0..<1, using: &rng) }
            for k in [1, 2, 3, 4, 7, 9, 50] {
                let got = DigitPreparation.runningExtreme(values, window: k, min)
                let want = (0..<n).map { i in values[max(0, i - k / 2)...min(n - 1, i - k / 2 + k - 1)].min()! }
                XCTAssertEqual(got, want, "n \(n), window \(k)")
            }
        }
    }

    /// Otsu's threshold falls between two well-separated groups of values.
    func testOtsuSeparatesTwoGroups() {
        let values: [Float] = Array(repeating: 0.1, count: 900) + Array(repeating: 0.8, count: 100)
        let t = DigitPreparation.otsu(values, top: 0.8)
        XCTAssertGreaterThan(t, 0.1)
        XCTAssertLessThanOrEqual(t, 0.8)
    }
}
