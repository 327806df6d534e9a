import Foundation

/// Element-wise activation, applied in place after a conv or dense bias, or as a layer.
/// Derivatives are taken from the *output* y, so nothing extra is kept for backward.
public enum ActivationFunction {
    @inline(__always)
    static func apply(_ a: Activation, alpha: Float, _ v: UnsafeMutablePointer<Float>, count: Int) {
        apply(a, alpha: alpha, from: v, to: v, count: count)
    }

    /// y = f(x); x and y may be the same buffer. Branch-free so it vectorizes.
    @inline(__always)
    static func apply(_ a: Activation, alpha: Float, from x: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>,
                      count: Int) {
        switch a {
        case .linear: if UnsafePointer(y) != x { y.update(from: x, count: count) }
        case .relu: for i in 0..<count { y[i] = max(x[i], 0) }
        case .elu: for i in 0..<count { let v = x[i]; y[i] = v > 0 ? v : alpha * (FastMath.exp(negative: v) - 1) }
        }
    }

    /// dz = dy · f'(y), in place on dy.
    @inline(__always)
    static func backward(_ a: Activation, alpha: Float, y: UnsafePointer<Float>,
                         _ dy: UnsafeMutablePointer<Float>, count: Int) {
        backward(a, alpha: alpha, y: y, dy: UnsafePointer(dy), dx: dy, count: count)
    }

    /// dx = dy · f'(y); dy and dx may be the same buffer. Branch-free so it vectorizes.
    @inline(__always)
    static func backward(_ a: Activation, alpha: Float, y: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                         dx: UnsafeMutablePointer<Float>, count: Int) {
        switch a {
        case .linear: if UnsafePointer(dx) != dy { dx.update(from: dy, count: count) }
        case .relu: for i in 0..<count { dx[i] = y[i] > 0 ? dy[i] : 0 }
        case .elu: for i in 0..<count { let v = y[i]; dx[i] = v > 0 ? dy[i] : dy[i] * (v + alpha) }
        }
    }
}

/// ReLU or ELU as a layer of its own.
public final class ActivationLayer: Layer {
    public let function: Activation
    public let alpha: Float
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let kind: LayerSpec.Kind
    public var slots: [TensorSlot] { [] }

    /// `function` is ReLU or ELU (a linear activation is no layer).
    public init(_ function: Activation, alpha: Float = 1, input: Shape) {
        switch function {
        case .relu: kind = .relu
        case .elu: kind = .elu
        case .linear: preconditionFailure("ActivationLayer: a linear activation is no layer")
        }
        self.function = function; self.alpha = alpha; self.inputShape = input
    }

    public var fusibleActivation: (function: Activation, alpha: Float)? { (function, alpha) }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        let per = inputShape.count
        Parallel.chunks(batch, cost: per) { _, r in
            ActivationFunction.apply(function, alpha: alpha, from: x + r.lowerBound * per, to: y + r.lowerBound * per,
                                     count: r.count * per)
        }
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        guard let dx else { return }
        let per = inputShape.count
        Parallel.chunks(batch, cost: per) { _, r in
            let o = r.lowerBound * per
            ActivationFunction.backward(function, alpha: alpha, y: y + o, dy: dy + o, dx: dx + o, count: r.count * per)
        }
    }
}

/// Flatten: (C, H, W) → (C·H·W), PyTorch's order; with NCHW activations it is a copy.
public final class FlattenLayer: Layer {
    public let inputShape: Shape
    public var outputShape: Shape { Shape(features: inputShape.count) }
    public var kind: LayerSpec.Kind { .flatten }
    public var slots: [TensorSlot] { [] }
    public init(input: Shape) { inputShape = input }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        y.update(from: x, count: batch * inputShape.count)
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        dx?.update(from: dy, count: batch * inputShape.count)
    }
}
