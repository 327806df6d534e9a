import Foundation

/// Softmax cross-entropy on integer labels, from logits, numerically stable (log-sum-exp),
/// with optional label smoothing as in PyTorch's `F.cross_entropy(label_smoothing=ε)` and
/// Keras's `CategoricalCrossentropy(label_smoothing=ε)`: the target of a row is
/// `q = (1−ε)·onehot(label) + ε/C`, so with p = softmax(z) and L = log Σ exp z,
///
///     loss = −Σ_c q_c·log p_c = (1−ε)·(L − z_label) + (ε/C)·Σ_c (L − z_c)
///     dloss/dz_c = p_c − q_c
public enum SoftmaxCrossEntropy {
    /// Writes dlogits = (softmax − target)·scale and returns the summed loss and the number of
    /// correct argmax predictions (argmax == label, whatever the smoothing) over the `batch`
    /// rows. logits, dlogits: (N, classes). `smoothing` ε in [0, 1]; 0 is the plain one-hot
    /// loss, computed exactly as without the parameter.
    @discardableResult
    public static func forwardBackward(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                                       batch: Int, classes: Int, scale: Float,
                                       dlogits: UnsafeMutablePointer<Float>?,
                                       smoothing: Float = 0) -> (lossSum: Double, correct: Int) {
        precondition(smoothing >= 0 && smoothing <= 1, "SoftmaxCrossEntropy: smoothing \(smoothing) outside [0, 1]")
        let uniform = smoothing / Float(classes), onTarget = 1 - smoothing
        var lossSum = 0.0, correct = 0
        for n in 0..<batch {
            let z = logits + n * classes
            var maxv = z[0], arg = 0
            for c in 1..<classes where z[c] > maxv { maxv = z[c]; arg = c }
            var sum: Float = 0
            for c in 0..<classes { sum += expf(z[c] - maxv) }
            let logSum = logf(sum) + maxv
            let label = Int(labels[n])
            if arg == label { correct += 1 }
            if smoothing == 0 {
                lossSum += Double(logSum - z[label])
                if let d = dlogits.map({ $0 + n * classes }) {
                    for c in 0..<classes { d[c] = expf(z[c] - logSum) * scale }
                    d[label] -= scale
                }
            } else {
                // Each −log p_c ≥ 0, summed in Double so the ε/C share is not lost.
                var all = 0.0
                for c in 0..<classes { all += Double(logSum - z[c]) }
                lossSum += Double(onTarget) * Double(logSum - z[label]) + Double(uniform) * all
                if let d = dlogits.map({ $0 + n * classes }) {
                    for c in 0..<classes { d[c] = (expf(z[c] - logSum) - uniform) * scale }
                    d[label] -= onTarget * scale
                }
            }
        }
        return (lossSum, correct)
    }
}
