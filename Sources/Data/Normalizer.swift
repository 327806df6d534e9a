/// Turns pixel bytes into network inputs: scale to [0, 1] by 1/255, then standardise each
/// channel, `(pixel / 255 - mean) / std`.
///
/// `unit` is plain [0, 1] scaling. `featurewise(from:)` is Keras's
/// `featurewise_center` + `featurewise_std_normalization`: one mean and one standard
/// deviation per channel over every training pixel. The normalizer is saved with a
/// checkpoint so evaluation and prediction standardise exactly as training did.
public struct Normalizer: Codable, Equatable, Sendable {
    /// Per-channel mean of the scaled pixels; one entry applies to every channel.
    public var mean: [Float]
    /// Per-channel standard deviation of the scaled pixels (same count as `mean`).
    public var std: [Float]

    public init(mean: [Float], std: [Float]) {
        precondition(!mean.isEmpty && mean.count == std.count, "mean and std need one entry per channel")
        precondition(std.allSatisfy { $0 > 0 && $0.isFinite }, "std must be positive")
        self.mean = mean
        self.std = std
    }

    /// Scale to [0, 1] only.
    public static let unit = Normalizer(mean: [0], std: [1])

    /// Per-channel mean and population standard deviation (NumPy's `std`, as Keras uses)
    /// of `dataset`'s pixels after scaling by 1/255, computed exactly in `Double` from a
    /// histogram of byte values.
    ///
    /// A channel whose pixels are all equal gets std 1 rather than 0 (Keras adds 1e-6
    /// instead; for real images the difference is far below `Float` precision).
    public static func featurewise(from dataset: Dataset) -> Normalizer {
        precondition(dataset.count > 0, "featurewise statistics need at least one image")
        let channels = dataset.channels
        var histogram = [Int](repeating: 0, count: 256 * channels)  // (C, 256) counts
        dataset.images.withUnsafeBufferPointer { pixels in
            histogram.withUnsafeMutableBufferPointer { counts in
                if channels == 1 {
                    for pixel in pixels { counts[Int(pixel)] += 1 }
                } else {
                    for (i, pixel) in pixels.enumerated() { counts[(i % channels) * 256 + Int(pixel)] += 1 }
                }
            }
        }
        var means = [Float](), stds = [Float]()
        for c in 0..<channels {
            let counts = histogram[c * 256 ..< (c + 1) * 256]
            let total = Double(counts.reduce(0, +))
            var sum = 0.0
            for (value, n) in counts.enumerated() { sum += Double(n) * (Double(value) / 255) }
            let mean = sum / total
            var squares = 0.0
            for (value, n) in counts.enumerated() {
                let deviation = Double(value) / 255 - mean
                squares += Double(n) * deviation * deviation
            }
            let std = (squares / total).squareRoot()
            means.append(Float(mean))
            stds.append(std > 0 ? Float(std) : 1)
        }
        return Normalizer(mean: means, std: stds)
    }

    /// Writes the images at `indices` into `out` as standardised floats, NCHW:
    /// image after image, each (C, H, W).
    ///
    /// `out` must have room for `indices.count × channels × height × width` floats.
    /// A table of the 256 possible values per channel makes this one load per pixel.
    public func fill(_ out: UnsafeMutablePointer<Float>, from dataset: Dataset, indices: some Collection<Int>) {
        let channels = dataset.channels
        precondition(mean.count == 1 || mean.count == channels,
                     "normalizer has \(mean.count) channels, the dataset \(channels)")
        let plane = dataset.height * dataset.width
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 256 * channels) { table in  // (C, 256)
            for c in 0..<channels {
                let m = Double(mean[mean.count == 1 ? 0 : c])
                let s = Double(std[std.count == 1 ? 0 : c])
                for value in 0..<256 { table[c * 256 + value] = Float((Double(value) / 255 - m) / s) }
            }
            dataset.images.withUnsafeBufferPointer { pixels in
                var target = out
                for index in indices {
                    precondition(index >= 0 && index < dataset.count, "example \(index) out of 0..<\(dataset.count)")
                    let image = pixels.baseAddress! + index * plane * channels  // (H, W, C)
                    if channels == 1 {
                        for p in 0..<plane { target[p] = table[Int(image[p])] }
                    } else {
                        for c in 0..<channels {
                            for p in 0..<plane { target[c * plane + p] = table[c * 256 + Int(image[p * channels + c])] }
                        }
                    }
                    target += plane * channels
                }
            }
        }
    }
}
