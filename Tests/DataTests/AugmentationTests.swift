import Foundation
import XCTest
import Data
import Engine

/// Random affine (and elastic) training augmentation: conventions, exactness, and keyed randomness.
final class AugmentationTests: XCTestCase {
    // MARK: Matrix conventions

    /// The matrix is C · R · T · S · Z · C⁻¹ (Keras's order) about the pixel-grid centre,
    /// output→input, in (x = column, y = row).
    func testMatrixComposesLikeKeras() {
        let (h, w) = (28, 20)
        let t = AffineParameters(rotationDegrees: 17, shearDegrees: -4, shiftX: 1.5, shiftY: -2.25, zoomX: 0.9, zoomY: 1.07)
        let (cx, cy) = (Double(w - 1) / 2, Double(h - 1) / 2)
        let th = 17 * Double.pi / 180, s = -4 * Double.pi / 180
        let expected = product([
            [1, 0, cx, 0, 1, cy, 0, 0, 1],
            [cos(th), -sin(th), 0, sin(th), cos(th), 0, 0, 0, 1],
            [1, 0, 1.5, 0, 1, -2.25, 0, 0, 1],
            [1, -sin(s), 0, 0, cos(s), 0, 0, 0, 1],
            [0.9, 0, 0, 0, 1.07, 0, 0, 0, 1],
            [1, 0, -cx, 0, 1, -cy, 0, 0, 1],
        ])
        let matrix = t.matrix(height: h, width: w)
        XCTAssertEqual(matrix.count, 9)
        for (a, b) in zip(matrix, expected) { XCTAssertEqual(a, b, accuracy: 1e-12) }

        XCTAssertEqual(AffineParameters.identity.matrix(height: 28, width: 28), [1, 0, 0, 0, 1, 0, 0, 0, 1])
        // +90°: output pixel (x 0, y 0) shows input (x 27, y 0), as np.rot90 puts it there.
        let quarter = AffineParameters(rotationDegrees: 90).matrix(height: 28, width: 28)
        XCTAssertEqual(quarter[2], 27)
        XCTAssertEqual(quarter[5], 0)
    }

    // MARK: Exactness

    func testIdentityWarpCopiesBitwise() {
        var rng = SplitMix64(seed: 3)
        for (h, w, c) in [(28, 28, 1), (5, 7, 3)] {
            let src = (0..<h * w * c).map { _ in Float.random(in: -3...300, using: &rng) }
            for fill in [FillMode.nearest, .constant(0), .constant(255)] {
                let out = warped(src, height: h, width: w, channels: c, matrix: [1, 0, 0, 0, 1, 0, 0, 0, 1], fill: fill)
                XCTAssertEqual(out.map(\.bitPattern), src.map(\.bitPattern), "identity warp \(h)×\(w)×\(c), \(fill)")
            }
        }
    }

    /// Ranges of zero (with a non-default fill, and an elastic field scaled by 0) leave
    /// every image untouched, in pixel units and after standardisation.
    func testZeroRangesLeaveImagesUntouched() {
        let dataset = randomDataset(count: 4, channels: 1, seed: 5)
        let normalizer = Normalizer.featurewise(from: dataset)
        let configs = [
            AugmentationConfig(fill: .constant(9)),
            AugmentationConfig(fill: .nearest, elastic: ElasticDistortion(alpha: 0, sigma: 4)),
        ]
        for config in configs {
            let augmenter = Augmenter(config: config, seed: 11)
            for index in 0..<dataset.count {
                let image = Array(dataset.image(index))
                var out = [Float](repeating: .nan, count: image.count)
                image.withUnsafeBufferPointer { pixels in
                    out.withUnsafeMutableBufferPointer {
                        augmenter.transform(image: pixels.baseAddress!, height: 28, width: 28, epoch: 2, index: index,
                                            into: $0.baseAddress!)
                    }
                }
                XCTAssertEqual(out.map(\.bitPattern), image.map { Float($0).bitPattern }, "\(config) image \(index)")
            }
            let indices = [3, 0, 2, 1]
            XCTAssertEqual(augmentedFill(augmenter, dataset, indices, epoch: 1, normalizer).map(\.bitPattern),
                           normalizerFill(normalizer, dataset, indices).map(\.bitPattern), "\(config)")
        }
    }

    func testNoneIsNormalizerFillBitwise() {
        XCTAssertEqual(AugmentationConfig.none, AugmentationConfig())
        for channels in [1, 3] {
            let dataset = randomDataset(count: 6, channels: channels, seed: UInt64(channels))
            for normalizer in [Normalizer.featurewise(from: dataset), .unit] {
                let augmenter = Augmenter(config: .none, seed: 1)
                let indices = [5, 0, 3, 3]
                XCTAssertEqual(augmentedFill(augmenter, dataset, indices, epoch: 4, normalizer).map(\.bitPattern),
                               normalizerFill(normalizer, dataset, indices).map(\.bitPattern), "\(channels) channels")
            }
        }
    }

    /// Quarter turns move pixels onto pixels: +90° is `np.rot90(a)` (counter-clockwise as
    /// displayed), −90° is `np.rot90(a, k=-1)`, 180° and 270° follow.
    func testQuarterTurnsMatchRot90Exactly() {
        let n = 28
        let image = lShape().map(Float.init)
        func at(_ r: Int, _ c: Int) -> Float { image[r * n + c] }
        let expectations: [(Double, (Int, Int) -> Float)] = [
            (90, { r, c in at(c, n - 1 - r) }),           // np.rot90(a, 1)
            (-90, { r, c in at(n - 1 - c, r) }),          // np.rot90(a, -1)
            (180, { r, c in at(n - 1 - r, n - 1 - c) }),  // np.rot90(a, 2)
            (270, { r, c in at(n - 1 - c, r) }),          // np.rot90(a, 3)
            (-450, { r, c in at(n - 1 - c, r) }),
        ]
        for (degrees, expected) in expectations {
            let matrix = AffineParameters(rotationDegrees: degrees).matrix(height: n, width: n)
            for fill in [FillMode.nearest, .constant(77)] {
                let out = warped(image, height: n, width: n, channels: 1, matrix: matrix, fill: fill)
                let truth = (0..<n * n).map { expected($0 / n, $0 % n) }
                XCTAssertEqual(out.map(\.bitPattern), truth.map(\.bitPattern), "\(degrees)°, \(fill)")
            }
        }
        // Sanity: the L really is asymmetric, so the comparisons above could fail.
        let turned = warped(image, height: n, width: n, channels: 1,
                            matrix: AffineParameters(rotationDegrees: 90).matrix(height: n, width: n), fill: .nearest)
        XCTAssertNotEqual(turned, image)
    }

    /// A positive shear tilts a vertical line so its lower end moves right by sin(s) per row,
    /// and bilinear sampling keeps each row's line intact (sum 255, centroid on the line).
    func testShearTiltsAVerticalLine() {
        let n = 28, column = 13
        var image = [Float](repeating: 0, count: n * n)
        for r in 0..<n { image[r * n + column] = 255 }
        for degrees in [30.0, -30.0, 12.0] {
            let matrix = AffineParameters(shearDegrees: degrees).matrix(height: n, width: n)
            let out = warped(image, height: n, width: n, channels: 1, matrix: matrix, fill: .constant(0))
            for r in 0..<n {
                let row = out[r * n ..< (r + 1) * n]
                let sum = row.reduce(0, +)
                let centroid = zip(0..., row).map { Float($0) * $1 }.reduce(0, +) / sum
                let expected = Double(column) + sin(degrees * .pi / 180) * (Double(r) - 13.5)
                XCTAssertEqual(sum, 255, accuracy: 1e-3, "shear \(degrees)°, row \(r)")
                XCTAssertEqual(Double(centroid), expected, accuracy: 1e-3, "shear \(degrees)°, row \(r)")
            }
        }
    }

    /// Nearest extends the border pixels; a constant surrounds the image with its value and
    /// blends with the border under bilinear sampling.
    func testFillModesAtTheBorder() {
        let n = 28
        var image = [Float](repeating: 50, count: n * n)
        for r in 0..<n { image[r * n + n - 1] = 200 }
        // Shift x by 3: the output shows the source 3 columns to the right.
        let shift3 = AffineParameters(shiftX: 3).matrix(height: n, width: n)
        let nearest = warped(image, height: n, width: n, channels: 1, matrix: shift3, fill: .nearest)
        let constant = warped(image, height: n, width: n, channels: 1, matrix: shift3, fill: .constant(7))
        for r in 0..<n {
            for c in 0..<n {
                let source = c + 3  // beyond n − 1 for the last three columns
                XCTAssertEqual(nearest[r * n + c], source >= n - 1 ? 200 : 50, "nearest (\(r), \(c))")
                XCTAssertEqual(constant[r * n + c], source > n - 1 ? 7 : source == n - 1 ? 200 : 50,
                               "constant (\(r), \(c))")
            }
        }
        // Half a pixel beyond the last column: nearest repeats it, constant blends half and half.
        let shiftHalf = AffineParameters(shiftX: 0.5).matrix(height: n, width: n)
        XCTAssertEqual(warped(image, height: n, width: n, channels: 1, matrix: shiftHalf, fill: .nearest)[n - 1], 200)
        XCTAssertEqual(warped(image, height: n, width: n, channels: 1, matrix: shiftHalf, fill: .constant(7))[n - 1], 103.5)

        // Through the Augmenter: rotating a black image brings in the fill at the corners only.
        let black = Dataset(images: [UInt8](repeating: 0, count: n * n), labels: [0], height: n, width: n, classes: 2)
        let config = AugmentationConfig(rotationDegrees: 30)
        for (fill, cornerIsFilled) in [(FillMode.nearest, false), (.constant(255), true)] {
            var c = config
            c.fill = fill
            let out = augmentedFill(Augmenter(config: c, seed: 9), black, [0], epoch: 0, .unit)
            XCTAssertEqual(out[n * n / 2 + n / 2], 0, "the centre stays black with \(fill)")
            XCTAssertEqual(out[0] > 0, cornerIsFilled, "corner with \(fill)")
        }
    }

    // MARK: Keyed randomness

    /// An image's augmentation depends on (seed, epoch, index) only: not on the other images
    /// in the batch nor their order (what a rank of any world size would be handed).
    func testSameKeySameImageWhateverTheBatch() {
        let dataset = randomDataset(count: 7, channels: 1, seed: 21)
        let normalizer = Normalizer.featurewise(from: dataset)
        let plane = 28 * 28
        let configs = [AugmentationConfig.seed, .standard,
                       AugmentationConfig(rotationDegrees: 10, fill: .constant(0), elastic: .simard)]
        for config in configs {
            let whole = augmentedFill(Augmenter(config: config, seed: 42), dataset, Array(0..<7), epoch: 3, normalizer)
            func image(_ i: Int) -> [UInt32] { whole[i * plane ..< (i + 1) * plane].map(\.bitPattern) }
            for batch in [[6], [2, 6, 0], [6, 5, 4, 3, 2, 1, 0], [4, 4]] {
                // A fresh Augmenter, as another rank would build from the same seed.
                let out = augmentedFill(Augmenter(config: config, seed: 42), dataset, batch, epoch: 3, normalizer)
                for (slot, index) in batch.enumerated() {
                    XCTAssertEqual(out[slot * plane ..< (slot + 1) * plane].map(\.bitPattern), image(index),
                                   "\(config): image \(index) in batch \(batch)")
                }
            }
        }
    }

    /// `fill` is `transform` (the drawn matrix applied by `warp`) followed by standardisation.
    func testFillIsTheDrawnMatrixThenStandardisation() {
        let dataset = randomDataset(count: 3, channels: 1, seed: 8)
        let normalizer = Normalizer(mean: [0.13], std: [0.31])
        let augmenter = Augmenter(config: .standard, seed: 5)
        let filled = augmentedFill(augmenter, dataset, [0, 1, 2], epoch: 6, normalizer)
        for index in 0..<3 {
            let transform = augmenter.parameters(epoch: 6, index: index, height: 28, width: 28)
            let source = dataset.image(index).map(Float.init)
            let expected = warped(source, height: 28, width: 28, channels: 1,
                                  matrix: transform.matrix(height: 28, width: 28), fill: .constant(0))
            let image = Array(dataset.image(index))
            var viaTransform = [Float](repeating: .nan, count: image.count)
            image.withUnsafeBufferPointer { pixels in
                viaTransform.withUnsafeMutableBufferPointer {
                    augmenter.transform(image: pixels.baseAddress!, height: 28, width: 28, epoch: 6, index: index,
                                        into: $0.baseAddress!)
                }
            }
            XCTAssertEqual(viaTransform.map(\.bitPattern), expected.map(\.bitPattern), "image \(index)")
            let standardised = expected.map { Float((Double($0) / 255 - Double(Float(0.13))) / Double(Float(0.31))) }
            XCTAssertEqual(filled[index * 784 ..< (index + 1) * 784].map(\.bitPattern), standardised.map(\.bitPattern))
        }
    }

    func testEpochsSeedsAndIndicesDrawDifferently() {
        let dataset = randomDataset(count: 4, channels: 1, seed: 13)
        let augmenter = Augmenter(config: .seed, seed: 1)
        let epoch0 = augmentedFill(augmenter, dataset, [0, 1, 2, 3], epoch: 0, .unit)
        let epoch1 = augmentedFill(augmenter, dataset, [0, 1, 2, 3], epoch: 1, .unit)
        let otherSeed = augmentedFill(Augmenter(config: .seed, seed: 2), dataset, [0, 1, 2, 3], epoch: 0, .unit)
        for i in 0..<4 {
            let slot = i * 784 ..< (i + 1) * 784
            XCTAssertNotEqual(Array(epoch0[slot]), Array(epoch1[slot]), "image \(i): epochs 0 and 1")
            XCTAssertNotEqual(Array(epoch0[slot]), Array(otherSeed[slot]), "image \(i): seeds 1 and 2")
        }

        // Parameters stay within their ranges, vary per index, and use both signs.
        var rotations = [Double]()
        for index in 0..<200 {
            let seedDraw = augmenter.parameters(epoch: 0, index: index, height: 28, width: 28)
            XCTAssertLessThanOrEqual(abs(seedDraw.rotationDegrees), 20)
            XCTAssertLessThanOrEqual(abs(seedDraw.shearDegrees), 3)
            XCTAssertEqual([seedDraw.shiftX, seedDraw.shiftY, seedDraw.zoomX, seedDraw.zoomY], [0, 0, 1, 1])
            rotations.append(seedDraw.rotationDegrees)
            let standardDraw = Augmenter(config: .standard, seed: 1).parameters(epoch: 0, index: index, height: 28, width: 28)
            XCTAssertLessThanOrEqual(abs(standardDraw.shiftX), 2.8)
            XCTAssertLessThanOrEqual(abs(standardDraw.shiftY), 2.8)
            XCTAssertLessThanOrEqual(abs(standardDraw.zoomX - 1), 0.1)
            XCTAssertLessThanOrEqual(abs(standardDraw.zoomY - 1), 0.1)
            XCTAssertNotEqual(standardDraw.zoomX, standardDraw.zoomY, "axes draw their zoom separately")
        }
        XCTAssertEqual(Set(rotations).count, 200)
        XCTAssertGreaterThan(rotations.filter { $0 < -10 }.count, 20)
        XCTAssertGreaterThan(rotations.filter { $0 > 10 }.count, 20)
    }

    // MARK: Elastic distortion

    /// Simard's α = 34, σ = 4 moves a digit-sized ring by about a pixel: the ink stays near
    /// the ring, the centroid barely moves, and the result is a pure function of the key.
    ///
    /// The bounds come from 3,000 draws of the same algorithm in SciPy (`gaussian_filter`,
    /// `map_coordinates`): the mean change over 8 images is 0.41…0.72 of the ink, while an
    /// unsmoothed field (σ = 1) gives > 1.1 and a 3× stronger α > 0.9; at most 7 % of the ink
    /// leaves the ring's 3-pixel neighbourhood (σ = 1: typically 24 %).
    func testElasticDistortionIsLocalAndDeterministic() {
        let n = 28
        var ring = [UInt8](repeating: 0, count: n * n)
        var nearRing = [Bool](repeating: false, count: n * n)
        for r in 0..<n {
            for c in 0..<n {
                let d = ((Double(r) - 13.5) * (Double(r) - 13.5) + (Double(c) - 13.5) * (Double(c) - 13.5)).squareRoot()
                if d >= 5 && d <= 9 { ring[r * n + c] = 255 }
                nearRing[r * n + c] = d >= 2 && d <= 12
            }
        }
        let count = 8
        let dataset = Dataset(images: Array(repeating: ring, count: count).flatMap { $0 },
                              labels: [UInt8](repeating: 0, count: count), height: n, width: n, classes: 10)
        let config = AugmentationConfig(elastic: .simard)
        let first = augmentedFill(Augmenter(config: config, seed: 4), dataset, Array(0..<count), epoch: 0, .unit)
        let again = augmentedFill(Augmenter(config: config, seed: 4), dataset, Array((0..<count).reversed()),
                                  epoch: 0, .unit)
        let original = ring.map { Float($0) / 255 }
        let ink = original.reduce(0, +)
        var totalChange: Float = 0, totalShift = 0.0
        for i in 0..<count {
            let image = Array(first[i * n * n ..< (i + 1) * n * n])
            XCTAssertEqual(image.map(\.bitPattern), again[(count - 1 - i) * n * n ..< (count - i) * n * n].map(\.bitPattern),
                           "image \(i) is the same in another batch order")
            totalChange += zip(image, original).map { abs($0 - $1) }.reduce(0, +) / ink
            let outside = zip(image, nearRing).filter { !$1 }.map(\.0).reduce(0, +)
            XCTAssertLessThan(outside, 0.15 * image.reduce(0, +), "image \(i): ink stays near the ring")
            let (cx, cy) = centroid(image, width: n)
            totalShift += ((cx - 13.5) * (cx - 13.5) + (cy - 13.5) * (cy - 13.5)).squareRoot()
            for j in 0..<i {
                XCTAssertNotEqual(image, Array(first[j * n * n ..< (j + 1) * n * n]), "images \(j) and \(i) differ")
            }
        }
        XCTAssertGreaterThan(totalChange / Float(count), 0.3, "the ring is distorted")
        XCTAssertLessThan(totalChange / Float(count), 0.9, "the ring stays mostly in place")
        XCTAssertLessThan(totalShift / Double(count), 2.0, "the centroid stays within a pixel or two")
        let nextEpoch = augmentedFill(Augmenter(config: config, seed: 4), dataset, [0], epoch: 1, .unit)
        XCTAssertNotEqual(nextEpoch, Array(first[0 ..< n * n]), "another epoch draws another field")
    }

    // MARK: Presets

    func testPresetsAndCoding() throws {
        XCTAssertEqual(AugmentationConfig.named("none"), AugmentationConfig.none)
        XCTAssertEqual(AugmentationConfig.named("seed"),
                       AugmentationConfig(rotationDegrees: 20, shearDegrees: 3, translate: 0, zoom: 0, fill: .nearest))
        XCTAssertEqual(AugmentationConfig.named("standard"),
                       AugmentationConfig(rotationDegrees: 10, shearDegrees: 5, translate: 0.1, zoom: 0.1,
                                          fill: .constant(0)))
        XCTAssertNil(AugmentationConfig.named("strong"))
        XCTAssertEqual(AugmentationConfig.presetNames.compactMap(AugmentationConfig.named).count, 3)
        for config in [AugmentationConfig.standard, .seed,
                       AugmentationConfig(rotationDegrees: 5, fill: .constant(12.5), elastic: .simard)] {
            let json = try JSONEncoder().encode(config)
            XCTAssertEqual(try JSONDecoder().decode(AugmentationConfig.self, from: json), config)
        }
        let fill = try JSONDecoder().decode(FillMode.self, from: Foundation.Data(#"{"mode":"constant","value":3}"#.utf8))
        XCTAssertEqual(fill, .constant(3))
        XCTAssertThrowsError(try JSONDecoder().decode(FillMode.self, from: Foundation.Data(#"{"mode":"wrap"}"#.utf8)))
    }
}

// MARK: Helpers

/// An L on a 28×28 grid with a dot off to one side: no rotation or mirror maps it onto itself.
private func lShape() -> [UInt8] {
    let n = 28
    var image = [UInt8](repeating: 0, count: n * n)
    for r in 4...21 { image[r * n + 6] = 255; image[r * n + 7] = 180 }  // the stem
    for c in 6...16 { image[21 * n + c] = 120 }                          // the foot
    image[3 * n + 22] = 60                                               // a dot up right
    return image
}

/// `count` random images of 28×28×`channels`.
private func randomDataset(count: Int, channels: Int, seed: UInt64) -> Dataset {
    var rng = SplitMix64(seed: seed)
    let pixels = (0..<count * 28 * 28 * channels).map { _ in UInt8.random(in: 0...255, using: &rng) }
    return Dataset(images: pixels, labels: [UInt8](repeating: 1, count: count), height: 28, width: 28,
                   channels: channels, classes: 10)
}

private func warped(_ src: [Float], height: Int, width: Int, channels: Int, matrix: [Double], fill: FillMode) -> [Float] {
    var out = [Float](repeating: .nan, count: src.count)
    src.withUnsafeBufferPointer { source in
        out.withUnsafeMutableBufferPointer {
            Augmenter.warp(source.baseAddress!, height: height, width: width, channels: channels, matrix: matrix,
                           fill: fill, into: $0.baseAddress!)
        }
    }
    return out
}

private func augmentedFill(_ augmenter: Augmenter, _ dataset: Dataset, _ indices: [Int], epoch: Int,
                           _ normalizer: Normalizer) -> [Float] {
    var out = [Float](repeating: .nan, count: indices.count * dataset.imageSize)
    out.withUnsafeMutableBufferPointer {
        augmenter.fill($0.baseAddress!, from: dataset, indices: indices, epoch: epoch, normalizer: normalizer)
    }
    return out
}

private func normalizerFill(_ normalizer: Normalizer, _ dataset: Dataset, _ indices: [Int]) -> [Float] {
    var out = [Float](repeating: .nan, count: indices.count * dataset.imageSize)
    out.withUnsafeMutableBufferPointer { normalizer.fill($0.baseAddress!, from: dataset, indices: indices) }
    return out
}

/// 3×3 row-major matrices multiplied left to right.
private func product(_ matrices: [[Double]]) -> [Double] {
    var result = matrices[0]
    for b in matrices.dropFirst() {
        var next = [Double](repeating: 0, count: 9)
        for row in 0..<3 {
            for column in 0..<3 {
                for k in 0..<3 { next[row * 3 + column] += result[row * 3 + k] * b[k * 3 + column] }
            }
        }
        result = next
    }
    return result
}

/// Intensity-weighted centre (x, y) of a (H, W) image.
private func centroid(_ image: [Float], width: Int) -> (Double, Double) {
    var total = 0.0, x = 0.0, y = 0.0
    for (p, v) in image.enumerated() {
        total += Double(v); x += Double(v) * Double(p % width); y += Double(v) * Double(p / width)
    }
    return (x / total, y / total)
}
