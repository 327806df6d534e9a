import Engine

/// The random training augmentation to apply, as ranges Keras's `ImageDataGenerator` would
/// take; each image of each epoch draws its own parameters from them (see `Augmenter`).
///
/// All ranges are symmetric: an angle or fraction `r` means a uniform draw in `[−r, r]`.
public struct AugmentationConfig: Codable, Equatable, Sendable {
    /// Rotation angle range in degrees (Keras `rotation_range`).
    public var rotationDegrees: Double
    /// Shear angle range in degrees (Keras `shear_range`, which is in degrees).
    public var shearDegrees: Double
    /// Shift range as a fraction of the width (x) and of the height (y), drawn separately
    /// (Keras `width_shift_range` = `height_shift_range` < 1).
    public var translate: Double
    /// Zoom range `z`: the two axes' scales are drawn separately, uniform in `[1 − z, 1 + z]`
    /// (Keras `zoom_range`).
    public var zoom: Double
    /// What fills the area the transform brings in from outside the image.
    public var fill: FillMode
    /// Elastic distortion on top of the affine transform, or nil for none.
    public var elastic: ElasticDistortion?

    public init(rotationDegrees: Double = 0, shearDegrees: Double = 0, translate: Double = 0, zoom: Double = 0,
                fill: FillMode = .nearest, elastic: ElasticDistortion? = nil) {
        self.rotationDegrees = rotationDegrees
        self.shearDegrees = shearDegrees
        self.translate = translate
        self.zoom = zoom
        self.fill = fill
        self.elastic = elastic
    }

    /// No augmentation: `Augmenter.fill` is exactly `Normalizer.fill`.
    public static let none = AugmentationConfig()

    /// What the original notebook used: `ImageDataGenerator(rotation_range=20,
    /// shear_range=3, featurewise_center=True, featurewise_std_normalization=True)`, i.e.
    /// rotation ±20°, shear ±3°, Keras's default `fill_mode="nearest"`, no shift or zoom.
    ///
    /// The featurewise half is not augmentation: it is `Normalizer.featurewise(from:)` over
    /// the training images, applied after the transform as Keras's `standardize` is. A run
    /// with `--augment seed` must therefore also standardise featurewise (the trainer turns
    /// that on) to reproduce the notebook.
    public static let seed = AugmentationConfig(rotationDegrees: 20, shearDegrees: 3, fill: .nearest)

    /// A strong modern MNIST recipe: rotation ±10°, shift ±10 % of each side, zoom ±10 %
    /// per axis (the settings of the well-known Keras ensembles that reach ≈ 99.7 % on MNIST),
    /// plus a mild ±5° shear for slant variety; constant 0 fill, MNIST's background, so no
    /// stroke that touches the border gets smeared outwards.
    public static let standard = AugmentationConfig(rotationDegrees: 10, shearDegrees: 5, translate: 0.1, zoom: 0.1,
                                                    fill: .constant(0))

    /// The presets by their command-line names.
    public static let presetNames = ["none", "seed", "standard"]

    /// The preset called `name` (`none`, `seed`, `standard`), or nil.
    public static func named(_ name: String) -> AugmentationConfig? {
        switch name {
        case "none": return AugmentationConfig.none
        case "seed": return .seed
        case "standard": return .standard
        default: return nil
        }
    }
}

/// Draws and applies a random augmentation for each training example.
///
/// Every random number is `CounterRNG(seed:)` with purpose `.augmentation` keyed by
/// `(epoch, example index in the dataset, parameter key)`, so an image's augmentation is a
/// pure function of `(seed, epoch, index)`: the same on whichever rank, in whichever batch,
/// at whatever position it is drawn, and again after a resume.
///
/// Per image: draw the parameters, compose one affine matrix (`AffineParameters`), optionally
/// draw an elastic displacement field, then one bilinear pass over the output pixels.
/// `fill` then scales and standardises like `Normalizer.fill` (Keras's order:
/// `random_transform`, then `standardize`).
public struct Augmenter: Sendable {
    public let config: AugmentationConfig
    public let seed: UInt64
    private let rng: CounterRNG
    /// The elastic smoothing kernel, (2r + 1); empty without elastic distortion.
    private let elasticKernel: [Float]

    /// The third key of each draw: one per parameter; `elastic` seeds the image's field.
    private enum Key: UInt64 {
        case rotation = 1, shear, shiftX, shiftY, zoomX, zoomY, elastic
    }

    public init(config: AugmentationConfig, seed: UInt64) {
        precondition(config.rotationDegrees >= 0 && config.rotationDegrees <= 180,
                     "rotation range must be in 0…180 degrees, not \(config.rotationDegrees)")
        precondition(config.shearDegrees >= 0 && config.shearDegrees < 90,
                     "shear range must be in 0..<90 degrees, not \(config.shearDegrees)")
        precondition(config.translate >= 0 && config.translate < 1,
                     "translate must be a fraction in 0..<1, not \(config.translate)")
        precondition(config.zoom >= 0 && config.zoom < 1, "zoom must be in 0..<1, not \(config.zoom)")
        if case .constant(let value) = config.fill {
            precondition(value.isFinite, "the constant fill value must be finite")
        }
        self.config = config
        self.seed = seed
        self.rng = CounterRNG(seed: seed)
        self.elasticKernel = config.elastic?.kernel() ?? []
    }

    /// The affine parameters drawn for example `index` in `epoch` (shifts in pixels of a
    /// `height × width` image).
    public func parameters(epoch: Int, index: Int, height: Int, width: Int) -> AffineParameters {
        precondition(epoch >= 0 && index >= 0, "epoch and index are non-negative")
        // Uniform in [−range, range); exactly 0 when the range is 0, with no draw.
        func symmetric(_ range: Double, _ key: Key) -> Double {
            if range == 0 { return 0 }
            return (2 * rng.uniformDouble(.augmentation, UInt64(epoch), UInt64(index), key.rawValue) - 1) * range
        }
        return AffineParameters(rotationDegrees: symmetric(config.rotationDegrees, .rotation),
                               shearDegrees: symmetric(config.shearDegrees, .shear),
                               shiftX: symmetric(config.translate, .shiftX) * Double(width),
                               shiftY: symmetric(config.translate, .shiftY) * Double(height),
                               zoomX: 1 + symmetric(config.zoom, .zoomX),
                               zoomY: 1 + symmetric(config.zoom, .zoomY))
    }

    /// Writes the images at `indices` into `out`, augmented for `epoch`, then scaled and
    /// standardised as NCHW floats exactly as `normalizer.fill` does: image after image,
    /// each (C, H, W), `(value / 255 − mean) / std` per channel computed in `Double`.
    ///
    /// `out` must have room for `indices.count × channels × height × width` floats. With
    /// `config == .none` this is `normalizer.fill`, bit for bit.
    public func fill(_ out: UnsafeMutablePointer<Float>, from dataset: Dataset, indices: some Collection<Int>,
                     epoch: Int, normalizer: Normalizer) {
        if config == .none {
            normalizer.fill(out, from: dataset, indices: indices)
            return
        }
        let channels = dataset.channels, height = dataset.height, width = dataset.width
        precondition(normalizer.mean.count == 1 || normalizer.mean.count == channels,
                     "normalizer has \(normalizer.mean.count) channels, the dataset \(channels)")
        let plane = height * width
        withUnsafeTemporaryAllocation(of: Float.self, capacity: Augmenter.scratchCount(
            height: height, width: width, channels: channels)) { scratch in
            dataset.images.withUnsafeBufferPointer { pixels in
                var target = out  // (C, H, W) of the current image
                for index in indices {
                    precondition(index >= 0 && index < dataset.count, "example \(index) out of 0..<\(dataset.count)")
                    render(pixels.baseAddress! + index * dataset.imageSize, height: height, width: width,
                           channels: channels, epoch: epoch, index: index, scratch: scratch.baseAddress!, into: target)
                    for c in 0..<channels {
                        // The same expression as Normalizer.fill's table, so untouched pixels agree bitwise.
                        let mean = Double(normalizer.mean[normalizer.mean.count == 1 ? 0 : c])
                        let std = Double(normalizer.std[normalizer.std.count == 1 ? 0 : c])
                        let values = target + c * plane
                        for p in 0..<plane { values[p] = Float((Double(values[p]) / 255 - mean) / std) }
                    }
                    target += channels * plane
                }
            }
        }
    }

    /// One image augmented as example `index` of `epoch`, in pixel units (0…255 up to
    /// interpolation), before any scaling: `image` is (H, W, C) bytes, `out` (C, H, W) floats.
    public func transform(image: UnsafePointer<UInt8>, height: Int, width: Int, channels: Int = 1,
                          epoch: Int, index: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(height > 0 && width > 0 && channels > 0, "image dimensions must be positive")
        withUnsafeTemporaryAllocation(of: Float.self, capacity: Augmenter.scratchCount(
            height: height, width: width, channels: channels)) { scratch in
            render(image, height: height, width: width, channels: channels, epoch: epoch, index: index,
                   scratch: scratch.baseAddress!, into: out)
        }
    }

    /// Resamples (C, H, W) planes `src` into `out` through `matrix`, the 3×3 row-major
    /// output→input map in (x = column, y = row) pixel coordinates (see `AffineParameters`),
    /// with bilinear interpolation (Keras's `interpolation_order=1`) and `fill` outside the
    /// source. The identity matrix copies `src` bit for bit.
    public static func warp(_ src: UnsafePointer<Float>, height: Int, width: Int, channels: Int = 1,
                            matrix: [Double], fill: FillMode, into out: UnsafeMutablePointer<Float>) {
        precondition(height > 0 && width > 0 && channels > 0, "image dimensions must be positive")
        warpPlanes(src, height: height, width: width, channels: channels, affine: Affine2D(rowMajor: matrix),
                   displacement: nil, fill: fill, into: out)
    }

    /// Floats of scratch one image needs: the source as (C, H, W) floats, then the elastic
    /// fields dx, dy and their smoothing buffer, (H, W) each.
    private static func scratchCount(height: Int, width: Int, channels: Int) -> Int {
        (channels + 3) * height * width
    }

    /// `image` (H, W, C) bytes → `out` (C, H, W) pixel-valued floats, transformed.
    private func render(_ image: UnsafePointer<UInt8>, height: Int, width: Int, channels: Int, epoch: Int,
                        index: Int, scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let plane = height * width
        let source = scratch  // (C, H, W)
        if channels == 1 {
            for p in 0..<plane { source[p] = Float(image[p]) }
        } else {
            for c in 0..<channels {
                for p in 0..<plane { source[c * plane + p] = Float(image[p * channels + c]) }
            }
        }
        let affine = parameters(epoch: epoch, index: index, height: height, width: width)
            .affine(height: height, width: width)

        if let elastic = config.elastic {
            let dx = scratch + channels * plane, dy = dx + plane, smoothing = dy + plane  // (H, W) each
            elasticKernel.withUnsafeBufferPointer { kernel in
                ElasticDistortion.field(rng: rng, epoch: epoch, index: index, key: Key.elastic.rawValue,
                                        height: height, width: width, kernel: kernel, alpha: Float(elastic.alpha),
                                        dx: dx, dy: dy, scratch: smoothing)
            }
            warpPlanes(source, height: height, width: width, channels: channels, affine: affine,
                       displacement: (UnsafePointer(dx), UnsafePointer(dy)), fill: config.fill, into: out)
        } else if affine == .identity {
            out.update(from: source, count: channels * plane)
        } else {
            warpPlanes(source, height: height, width: width, channels: channels, affine: affine,
                       displacement: nil, fill: config.fill, into: out)
        }
    }
}
