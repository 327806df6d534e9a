import Foundation

/// Element-wise activation, applied in place after a conv or dense bias, or as a layer.
/// Derivatives are taken from the *output* y, so nothing extra is kept for backward.
public enum ActivationFunction {
    @inline(__always)
    static func apply(_ a: Activation, alpha: Float, _ v: UnsafeMutablePointer<Float>, count: Int) {
        switch a {
        case .linear: break
        case .relu: for i in 0..<count { v[i] = max(v[i], 0) }
        case .elu: for i in 0..<count { let x = v[i]; v[i] = x > 0 ? x : alpha * (expf(x) - 1) }
        }
    }

    /// dz = dy · f'(y), in place on dy.
    @inline(__always)
    static func backward(_ a: Activation, alpha: Float, y: UnsafePointer<Float>,
                         _ dy: UnsafeMutablePointer<Float>, count: Int) {
        switch a {
        case .linear: break
        case .relu: for i in 0..<count where y[i] <= 0 { dy[i] = 0 }
        case .elu: for i in 0..<count where y[i] <= 0 { dy[i] *= y[i] + alpha }
        }
    }
}

/// ReLU or ELU as a layer of its own.
public final class ActivationLayer: Layer {
    public let function: Activation
    public let alpha: Float
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public var kind: String { function.rawValue }
    public var slots: [TensorSlot] { [] }

    public init(_ function: Activation, alpha: Float = 1, input: Shape) {
        self.function = function; self.alpha = alpha; self.inputShape = input
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        let n = batch * inputShape.count
        y.update(from: x, count: n)
        ActivationFunction.apply(function, alpha: alpha, y, count: n)
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        guard let dx else { return }
        let n = batch * inputShape.count
        ActivationFunction.backward(function, alpha: alpha, y: y, dy, count: n)
        dx.update(from: dy, count: n)
    }
}

/// Flatten: (C, H, W) → (C·H·W), PyTorch's order; with NCHW activations it is a copy.
public final class FlattenLayer: Layer {
    public let inputShape: Shape
    public var outputShape: Shape { Shape(features: inputShape.count) }
    public var kind: String { "flatten" }
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
