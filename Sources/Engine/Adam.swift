import Foundation

/// Adam with Keras's update: α = lr·√(1−β2ᵗ)/(1−β1ᵗ); w −= α·m/(√v + ε).
/// One loop over the flat parameter, gradient and moment buffers.
public struct AdamConfig: Codable, Equatable, Sendable {
    public var learningRate: Double = 1e-3
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-7
    public init(learningRate: Double = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7) {
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
    }
}

public final class Adam {
    public var config: AdamConfig
    /// Steps taken so far (t of the bias correction).
    public var step: Int = 0
    public let m: FloatBuffer, v: FloatBuffer

    public init(parameterCount: Int, config: AdamConfig) {
        self.config = config
        m = FloatBuffer(count: parameterCount); v = FloatBuffer(count: parameterCount)
    }

    /// One update of `w` from `g` (both `m.count` long) at learning rate `lr`.
    public func update(_ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, learningRate lr: Double) {
        step += 1
        let t = Double(step)
        let alpha = Float(lr * (1 - pow(config.beta2, t)).squareRoot() / (1 - pow(config.beta1, t)))
        let b1 = Float(config.beta1), b2 = Float(config.beta2), eps = Float(config.epsilon)
        let mp = m.pointer, vp = v.pointer
        for i in 0..<m.count {
            let gi = g[i]
            let mi = b1 * mp[i] + (1 - b1) * gi
            let vi = b2 * vp[i] + (1 - b2) * gi * gi
            mp[i] = mi; vp[i] = vi
            w[i] -= alpha * mi / (vi.squareRoot() + eps)
        }
    }
}
