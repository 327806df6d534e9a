#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Engine

/// Elastic distortion after Simard, Steinkraus & Platt (2003), "Best practices for
/// convolutional neural networks applied to visual document analysis": each pixel gets a
/// random displacement, uniform in [−1, 1) per axis, the two displacement fields are
/// smoothed with a Gaussian of standard deviation `sigma` pixels and scaled by `alpha`.
///
/// Smoothing follows the common reference implementation (`scipy.ndimage.gaussian_filter`
/// with `mode="constant"`, truncated at 4σ): outside the image the random field is zero.
/// The paper found σ = 4 with α = 34 good for MNIST (`simard`); small σ gives noise-like
/// fields, large α strong warping.
public struct ElasticDistortion: Codable, Equatable, Sendable {
    /// Scale of the smoothed field, in pixels.
    public var alpha: Double
    /// Standard deviation of the smoothing Gaussian, in pixels.
    public var sigma: Double

    public init(alpha: Double, sigma: Double) {
        self.alpha = alpha
        self.sigma = sigma
    }

    /// α = 34, σ = 4, the values Simard et al. used for MNIST.
    public static let simard = ElasticDistortion(alpha: 34, sigma: 4)

    /// The normalised 1-D Gaussian, radius `Int(4σ + 0.5)` as SciPy truncates it: (2r + 1).
    func kernel() -> [Float] {
        precondition(sigma > 0 && sigma.isFinite, "elastic sigma must be positive, not \(sigma)")
        precondition(alpha >= 0 && alpha.isFinite, "elastic alpha must be non-negative, not \(alpha)")
        let radius = Int(4 * sigma + 0.5)
        let weights = (-radius...radius).map { exp(-Double($0 * $0) / (2 * sigma * sigma)) }
        let total = weights.reduce(0, +)
        return weights.map { Float($0 / total) }
    }

    /// Writes the displacement fields for one image into `dx` and `dy`, each (H, W), using
    /// `scratch` (H × W floats).
    ///
    /// One keyed draw `(epoch, index, key)` seeds the image's field; pixel `p` then takes
    /// SplitMix64's output for that seed and counter `p`, four times cheaper than a keyed
    /// draw per pixel and still a pure function of `(seed, epoch, index)`.
    static func field(rng: CounterRNG, epoch: Int, index: Int, key: UInt64, height: Int, width: Int,
                      kernel: UnsafeBufferPointer<Float>, alpha: Float,
                      dx: UnsafeMutablePointer<Float>, dy: UnsafeMutablePointer<Float>,
                      scratch: UnsafeMutablePointer<Float>) {
        let plane = height * width
        let imageSeed = rng.bits(.augmentation, UInt64(epoch), UInt64(index), key)
        // One 64-bit value per pixel gives two 24-bit uniforms, one per axis, in [−1, 1).
        for p in 0..<plane {
            let bits = splitMix64(imageSeed &+ UInt64(p + 1) &* 0x9E37_79B9_7F4A_7C15)
            dx[p] = Float(bits >> 40) * (2.0 / 16_777_216.0) - 1
            dy[p] = Float((bits >> 8) & 0xFF_FFFF) * (2.0 / 16_777_216.0) - 1
        }
        smooth(dx, height: height, width: width, kernel: kernel, scale: alpha, scratch: scratch)
        smooth(dy, height: height, width: width, kernel: kernel, scale: alpha, scratch: scratch)
    }

    /// `field ← scale · (G ∗ field)`, separable, zero outside the image; `scratch` is (H, W).
    ///
    /// Both passes are written as a sum of shifted rows (`acc[j] += w · row[j + k]`) so the
    /// inner loops are contiguous and vectorise.
    static func smooth(_ field: UnsafeMutablePointer<Float>, height: Int, width: Int,
                       kernel: UnsafeBufferPointer<Float>, scale: Float, scratch: UnsafeMutablePointer<Float>) {
        let radius = kernel.count / 2
        // Along each row: scratch[i, j] = Σ_k w[k] · field[i, j + k]
        scratch.update(repeating: 0, count: height * width)
        for i in 0..<height {
            let row = field + i * width, acc = scratch + i * width
            for k in max(-radius, -(width - 1))...min(radius, width - 1) {
                let w = kernel[k + radius]
                for j in max(0, -k)..<min(width, width - k) { acc[j] += w * row[j + k] }
            }
        }
        // Along each column: field[i, j] = scale · Σ_k w[k] · scratch[i + k, j]
        field.update(repeating: 0, count: height * width)
        for i in 0..<height {
            let acc = field + i * width
            for k in max(-radius, -i)...min(radius, height - 1 - i) {
                let w = kernel[k + radius] * scale
                let row = scratch + (i + k) * width
                for j in 0..<width { acc[j] += w * row[j] }
            }
        }
    }
}

/// SplitMix64's finalizer: a bijection with full avalanche (the mixer `CounterRNG` uses).
@inline(__always)
private func splitMix64(_ z0: UInt64) -> UInt64 {
    var z = z0
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
