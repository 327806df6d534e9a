/// Fully connected layer: y (N, out) = x (N, in) · Wᵀ + b, W in PyTorch's `[out, in]` layout.
public final class Dense: Layer {
    public let inputShape: Shape, outputShape: Shape
    public let activation: Activation
    public let useBias: Bool
    public let l2: Float
    public var kind: LayerSpec.Kind { .dense }
    var inputs: Int { inputShape.count }
    var units: Int { outputShape.c }

    var weight: UnsafeMutablePointer<Float>!, dWeight: UnsafeMutablePointer<Float>!
    var bias: UnsafeMutablePointer<Float>?, dBias: UnsafeMutablePointer<Float>?

    public init(input: Shape, units: Int, activation: Activation, useBias: Bool, l2: Float) {
        inputShape = input; outputShape = Shape(features: units)
        self.activation = activation; self.useBias = useBias; self.l2 = l2
    }

    public var slots: [TensorSlot] {
        var s = [TensorSlot(name: "weight", shape: [units, inputs], region: .parameters, offset: 0, isKernel: true)]
        if useBias {
            s.append(TensorSlot(name: "bias", shape: [units], region: .parameters, offset: units * inputs,
                                isKernel: false))
        }
        return s
    }

    public var forwardFlops: Int { units * inputs }
    public func trainingFlops(inputGradient: Bool) -> Int { 2 * forwardFlops * (inputGradient ? 3 : 2) }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                     state: UnsafeMutablePointer<Float>) {
        weight = parameters; dWeight = gradients
        if useBias { bias = parameters + units * inputs; dBias = gradients + units * inputs }
    }

    public func initialize(rng: CounterRNG, layerIndex: Int) {
        glorotUniform(weight, count: units * inputs, fanIn: inputs, fanOut: units, rng: rng, layerIndex: layerIndex)
        bias?.update(repeating: 0, count: units)
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        guard batch > 0 else { return }
        context.forEachMicroBatch(batch, cost: forwardFlops) { _, _, rows in
            let xr = x + rows.lowerBound * inputs, yr = y + rows.lowerBound * units
            BLAS.gemm(transB: true, m: rows.count, n: units, k: inputs, xr, lda: inputs, weight, ldb: inputs,
                      beta: 0, yr, ldc: units)
            if let bias {
                for n in 0..<rows.count { let row = yr + n * units; for u in 0..<units { row[u] += bias[u] } }
            }
            ActivationFunction.apply(activation, alpha: 1, yr, count: rows.count * units)
        }
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        guard batch > 0 else { return }
        context.forEachMicroBatch(batch, cost: 3 * forwardFlops) { _, k, rows in
            let dyr = dy + rows.lowerBound * units, xr = x + rows.lowerBound * inputs
            ActivationFunction.backward(activation, alpha: 1, y: y + rows.lowerBound * units, dyr, count: rows.count * units)
            let slot = context.slotOffset(k)
            if let dBias {
                let db = dBias + slot
                for u in 0..<units { db[u] = 0 }
                for n in 0..<rows.count { let row = dyr + n * units; for u in 0..<units { db[u] += row[u] } }
            }
            // dW (out, in) = dyᵀ (out, n) · x (n, in) of this micro-batch, into its slot.
            BLAS.gemm(transA: true, m: units, n: inputs, k: rows.count, dyr, lda: units, xr, ldb: inputs,
                      beta: 0, dWeight + slot, ldc: inputs)
            // dx (n, in) = dy (n, out) · W (out, in)
            if let dx {
                BLAS.gemm(m: rows.count, n: inputs, k: units, dyr, lda: units, weight, ldb: inputs,
                          beta: 0, dx + rows.lowerBound * inputs, ldc: inputs)
            }
        }
    }
}
