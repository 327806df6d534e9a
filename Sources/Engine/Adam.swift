import Foundation

/// Adam's hyper-parameters, stored in training configs and checkpoints.
public struct AdamConfig: Codable, Equatable, Sendable {
    public var learningRate: Double = 1e-3
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-7
    /// Decoupled weight decay (AdamW); 0 is plain Adam. Configs written before it existed
    /// decode with 0.
    public var weightDecay: Double = 0

    public init(learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7,
                weightDecay: Double = 0) {
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    enum CodingKeys: String, CodingKey {
        case learningRate, beta1, beta2, epsilon, weightDecay
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        learningRate = try c.decode(Double.self, forKey: .learningRate)
        beta1 = try c.decode(Double.self, forKey: .beta1)
        beta2 = try c.decode(Double.self, forKey: .beta2)
        epsilon = try c.decode(Double.self, forKey: .epsilon)
        weightDecay = try c.decodeIfPresent(Double.self, forKey: .weightDecay) ?? 0
    }
}

/// Adam with Keras's update, and optionally AdamW's decoupled weight decay with PyTorch's
/// semantics. At step t (1-based) with the step's (scheduled) learning rate `lr`:
///
///     m = β1·m + (1−β1)·g                 v = β2·v + (1−β2)·g²
///     w = w · (1 − lr·wd)                 only for parameters in `decayRanges`, and wd > 0
///     α = lr·√(1−β2ᵗ)/(1−β1ᵗ)             w −= α·m/(√v + ε)
///
/// The decay multiplies the weights *before* the Adam step and uses the same scheduled `lr`,
/// as PyTorch's `torch.optim.AdamW` does (`param.mul_(1 − lr·weight_decay)`; so does Keras's
/// `AdamW`); it is not scaled by the bias correction. The Adam part keeps Keras's ε placement
/// (ε added to √v, not to √v̂), which the PyTorch reference test pins. With wd = 0 the update
/// is bit for bit the plain Adam one.
///
/// One element-wise loop over the flat parameter, gradient and moment buffers, split into
/// contiguous chunks across the engine's workers; every element's arithmetic is the same
/// whatever the split, so the result does not depend on the worker count.
public final class Adam {
    public var config: AdamConfig
    /// Steps taken so far (t of the bias correction).
    public var step: Int = 0
    public let m: FloatBuffer, v: FloatBuffer
    /// The parameter index ranges that weight decay applies to (sorted, disjoint), nil for
    /// all parameters (PyTorch's default). The trainer passes `Adam.kernelRanges(of: model)`
    /// so biases and batch-norm γ/β are not decayed.
    public private(set) var decayRanges: [Range<Int>]?
    /// `decayRanges` with nil spelled out, so the step allocates nothing.
    var decayedRanges: [Range<Int>] = []

    public init(parameterCount: Int, config: AdamConfig, decayRanges: [Range<Int>]? = nil) {
        self.config = config
        m = FloatBuffer(count: parameterCount); v = FloatBuffer(count: parameterCount)
        setDecayRanges(decayRanges)
    }

    /// Sets which parameters decay (see `decayRanges`); ranges are sorted and merged here.
    public func setDecayRanges(_ ranges: [Range<Int>]?) {
        guard let ranges else { decayRanges = nil; decayedRanges = m.count > 0 ? [0..<m.count] : []; return }
        var merged: [Range<Int>] = []
        for r in ranges.filter({ !$0.isEmpty }).sorted(by: { $0.lowerBound < $1.lowerBound }) {
            precondition(r.lowerBound >= 0 && r.upperBound <= m.count, "Adam: decay range \(r) outside 0..<\(m.count)")
            if let last = merged.last, r.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        decayRanges = merged; decayedRanges = merged
    }

    /// The model's kernels (conv and dense weights): what weight decay should apply to.
    public static func kernelRanges(of model: Model) -> [Range<Int>] {
        model.tensors.filter { $0.region == .parameters && $0.isKernel }.map { $0.offset..<($0.offset + $0.count) }
    }

    /// One update of `w` from `g` (both `m.count` long) at learning rate `lr`, of the elements
    /// in `range` only (nil: all). With a sharded step each rank passes its shard: the other
    /// elements' moments stay as they were here, and their owners update them bit for bit
    /// as this rank would.
    public func update(_ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, learningRate lr: Double,
                       range: Range<Int>? = nil) {
        let range = range ?? 0 ..< m.count
        precondition(range.lowerBound >= 0 && range.upperBound <= m.count, "Adam: range \(range) outside 0..<\(m.count)")
        step += 1
        let t = Double(step)
        let alpha = Float(lr * (1 - pow(config.beta2, t)).squareRoot() / (1 - pow(config.beta1, t)))
        let b1 = Float(config.beta1), b2 = Float(config.beta2), eps = Float(config.epsilon)
        let mp = m.pointer, vp = v.pointer
        let keep = Float(1 - lr * config.weightDecay)
        let ranges = config.weightDecay == 0 ? [] : decayedRanges

        // Elements lo..<hi, with the weights first multiplied by `keep` when `decay`.
        @inline(__always) func run(_ lo: Int, _ hi: Int, decay: Bool) {
            if decay {
                for i in lo..<hi {
                    let gi = g[i]
                    let mi = b1 * mp[i] + (1 - b1) * gi
                    let vi = b2 * vp[i] + (1 - b2) * gi * gi
                    mp[i] = mi; vp[i] = vi
                    w[i] = w[i] * keep - alpha * mi / (FastMath.squareRoot(vi) + eps)
                }
            } else {
                for i in lo..<hi {
                    let gi = g[i]
                    let mi = b1 * mp[i] + (1 - b1) * gi
                    let vi = b2 * vp[i] + (1 - b2) * gi * gi
                    mp[i] = mi; vp[i] = vi
                    w[i] -= alpha * mi / (FastMath.squareRoot(vi) + eps)
                }
            }
        }
        ranges.withUnsafeBufferPointer { decayed in
            _ = Parallel.chunks(range.count, cost: 16) { _, relative in
                let chunk = (range.lowerBound + relative.lowerBound) ..< (range.lowerBound + relative.upperBound)
                // Walk the chunk, alternating plain and decayed segments.
                var i = chunk.lowerBound
                for r in decayed where r.upperBound > i {
                    if r.lowerBound >= chunk.upperBound { break }
                    let start = max(r.lowerBound, i), end = min(r.upperBound, chunk.upperBound)
                    if start > i { run(i, start, decay: false) }
                    run(start, end, decay: true)
                    i = end
                }
                if i < chunk.upperBound { run(i, chunk.upperBound, decay: false) }
            }
        }
    }
}
