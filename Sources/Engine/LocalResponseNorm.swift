import Foundation

/// Local response normalisation across channels (AlexNet, Krizhevsky et al. 2012), with
/// PyTorch's `nn.LocalResponseNorm` conventions:
///
///     s[c] = k + (alpha / size) · Σ_{c' ∈ W(c)} x[c']²        y[c] = x[c] · s[c]^(−beta)
///
/// **alpha is divided by size**, as in PyTorch and Caffe (TensorFlow's
/// `tf.nn.local_response_normalization` takes `depth_radius = (size − 1) / 2` and does *not*
/// divide: TF's alpha = PyTorch's alpha / size). The window W(c) is
/// `c − size/2 ... c + (size−1)/2` (integer division; symmetric for odd sizes, one more channel
/// before c for even sizes), clipped at the edges, and the divisor stays `size` there: PyTorch
/// zero-pads the squares and average-pools with the padding counted.
///
/// Backward, with t[c] = dy[c] · x[c] · s[c]^(−beta) / s[c]:
///
///     dx[i] = dy[i] · s[i]^(−beta) − (2·alpha·beta / size) · x[i] · Σ_{c : i ∈ W(c)} t[c]
///
/// where `i ∈ W(c)` ⇔ `c ∈ i − (size−1)/2 ... i + size/2` (the mirrored window). No parameters.
public final class LocalResponseNorm: Layer {
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let size: Int
    public let alpha: Float, beta: Float, k: Float
    public var kind: LayerSpec.Kind { .lrn }
    public var slots: [TensorSlot] { [] }
    public var forwardFlops: Int { inputShape.count * (size + 3) }

    // Cached by the forward pass for backward, sized in reserve(batch:).
    /// (N, C, H, W) s = k + alpha/size · Σ window x².
    var scale = FloatBuffer(count: 0)
    /// (N, C, H, W) s^(−beta), the factor y = x · factor.
    var factor = FloatBuffer(count: 0)
    var capacity = 0
    var hasTrainingForward = false

    /// Channels before and after c in its window.
    var before: Int { size / 2 }
    var after: Int { (size - 1) / 2 }

    public init(input: Shape, size: Int, alpha: Float, beta: Float, k: Float) {
        precondition(size >= 1 && k > 0, "LocalResponseNorm: size ≥ 1 and k > 0")
        inputShape = input; self.size = size; self.alpha = alpha; self.beta = beta; self.k = k
    }

    /// Its forward writes the per-batch scale caches in inference too.
    public func reserveInference(batch: Int) { reserve(batch: batch) }

    public func reserve(batch: Int) {
        guard batch > capacity else { return }
        capacity = batch
        scale = FloatBuffer(count: batch * inputShape.count)
        factor = FloatBuffer(count: batch * inputShape.count)
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        precondition(batch <= capacity, "LocalResponseNorm.forward: reserve(batch:) first")
        let C = inputShape.c, S = inputShape.spatial
        let lo = before, hi = after
        let a = alpha / Float(size), kk = k, b = beta
        let sp = scale.pointer, fp = factor.pointer
        Parallel.chunks(batch, cost: C * S * (size + 20)) { _, images in
          for n in images {
            let xn = x + n * C * S, sn = sp + n * C * S, fn = fp + n * C * S, yn = y + n * C * S
            for c in 0..<C {
                // Σ x² over the window, one channel plane at a time (vectorises over space).
                let s = sn + c * S
                s.update(repeating: 0, count: S)
                for j in max(0, c - lo)...min(C - 1, c + hi) {
                    let p = xn + j * S
                    for i in 0..<S { s[i] += p[i] * p[i] }
                }
                let f = fn + c * S, p = xn + c * S, q = yn + c * S
                // s^(−β): a powf per element took eight times the rest of this forward, so the usual
                // β (0.75, AlexNet's and PyTorch's default; 0.5) go by `FastMath`'s reciprocal square
                // root: s^(−¾) = s^(−½)·(s^½)^(−½).
                for i in 0..<S { s[i] = kk + a * s[i] }
                switch b {
                case 0.75:
                    for i in 0..<S {
                        let si = s[i], u = FastMath.reciprocalSquareRoot(si)
                        f[i] = u * FastMath.reciprocalSquareRoot(si * u)
                    }
                case 0.5: for i in 0..<S { f[i] = FastMath.reciprocalSquareRoot(s[i]) }
                default: for i in 0..<S { f[i] = powf(s[i], -b) }
                }
                for i in 0..<S { q[i] = p[i] * f[i] }
            }
          }
        }
        hasTrainingForward = context.training
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        precondition(hasTrainingForward, "LocalResponseNorm.backward without a training forward")
        guard let dx else { return }
        let C = inputShape.c, S = inputShape.spatial
        let lo = before, hi = after
        let coef = 2 * alpha * beta / Float(size)
        let sp = scale.pointer, fp = factor.pointer
        Parallel.chunks(batch, cost: C * S * (size + 6)) { _, images in
          for n in images {
            let off = n * C * S
            let xn = x + off, sn = sp + off, fn = fp + off, gn = dy + off, dn = dx + off
            // Pass 1: the direct term into dx, and t = dy·x·s^(−β)/s in place of dy (ours now).
            for i in 0..<(C * S) {
                let g = gn[i], f = fn[i]
                dn[i] = g * f
                gn[i] = g * xn[i] * f / sn[i]
            }
            // Pass 2: dx[i] −= coef · x[i] · Σ t over the channels whose window holds i.
            for c in 0..<C {
                let d = dn + c * S, p = xn + c * S
                for j in max(0, c - hi)...min(C - 1, c + lo) {
                    let t = gn + j * S
                    for i in 0..<S { d[i] -= coef * p[i] * t[i] }
                }
            }
          }
        }
    }
}
