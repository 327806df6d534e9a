import Foundation

/// An exponential moving average of the parameters (Polyak averaging), kept in a shadow
/// buffer for evaluation, as TensorFlow's `tf.train.ExponentialMovingAverage(decay,
/// num_updates=…)`. Update n (0-based: `updates` before the call) uses the decay
///
///     d_n = min(decay, (1 + n) / (10 + n))
///
/// and sets `shadow −= (1 − d_n)·(shadow − w)`, i.e. `shadow = d_n·shadow + (1 − d_n)·w`.
/// The shadow starts as a copy of the weights at update 0 (TensorFlow initialises it to the
/// variable's value), so it needs no bias correction; the short effective horizon of the
/// first updates (d_1 = 2/11, d_10 = 11/20, …) lets it forget the early weights quickly.
///
/// Only what is passed in is averaged (the trainer passes the parameters; batch-norm running
/// statistics stay the live model's unless it keeps a second average of the state).
public final class WeightAverage {
    public let decay: Double
    /// (P) the averaged parameters.
    public let shadow: FloatBuffer
    /// Updates applied so far (n of the warm-up). Stored in checkpoints with `shadow`.
    public var updates: Int = 0

    public init(count: Int, decay: Double) {
        precondition(decay >= 0 && decay <= 1, "WeightAverage: decay \(decay) outside [0, 1]")
        self.decay = decay
        shadow = FloatBuffer(count: count)
    }

    /// The decay that update `n` (0-based) uses.
    public static func effectiveDecay(_ decay: Double, updates n: Int) -> Double {
        min(decay, Double(1 + n) / Double(10 + n))
    }

    /// Folds the current weights (`shadow.count` of them) into the average.
    public func update(from params: UnsafePointer<Float>) {
        defer { updates += 1 }
        let s = shadow.pointer
        if updates == 0 { s.update(from: params, count: shadow.count); return }
        let rate = Float(1 - WeightAverage.effectiveDecay(decay, updates: updates))
        Parallel.chunks(shadow.count, cost: 4) { _, chunk in
            for i in chunk { s[i] -= rate * (s[i] - params[i]) }
        }
    }

    /// Runs `body` with the averaged weights in `params`, and the live ones back in place
    /// afterwards, however `body` ends (exactly: the two are exchanged, not recomputed).
    public func withAveragedWeights<T>(in params: UnsafeMutablePointer<Float>, _ body: () throws -> T) rethrows -> T {
        swap(with: params)
        defer { swap(with: params) }
        return try body()
    }

    /// Exchanges the shadow and the weights, element by element.
    func swap(with params: UnsafeMutablePointer<Float>) {
        let s = shadow.pointer
        Parallel.chunks(shadow.count, cost: 2) { _, chunk in
            for i in chunk { let t = s[i]; s[i] = params[i]; params[i] = t }
        }
    }
}
