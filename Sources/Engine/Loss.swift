import Foundation

/// Softmax cross-entropy on integer labels, from logits, numerically stable (log-sum-exp).
public enum SoftmaxCrossEntropy {
    /// Writes dlogits = (softmax − onehot)·scale and returns the summed loss and the number of
    /// correct argmax predictions over the `batch` rows. logits, dlogits: (N, classes).
    @discardableResult
    public static func forwardBackward(logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                                       batch: Int, classes: Int, scale: Float,
                                       dlogits: UnsafeMutablePointer<Float>?) -> (lossSum: Double, correct: Int) {
        var lossSum = 0.0, correct = 0
        for n in 0..<batch {
            let z = logits + n * classes
            var maxv = z[0], arg = 0
            for c in 1..<classes where z[c] > maxv { maxv = z[c]; arg = c }
            var sum: Float = 0
            for c in 0..<classes { sum += expf(z[c] - maxv) }
            let logSum = logf(sum) + maxv
            let label = Int(labels[n])
            lossSum += Double(logSum - z[label])
            if arg == label { correct += 1 }
            if let d = dlogits.map({ $0 + n * classes }) {
                for c in 0..<classes { d[c] = expf(z[c] - logSum) * scale }
                d[label] -= scale
            }
        }
        return (lossSum, correct)
    }
}
