import Engine
import XCTest

/// A layer with its own parameter, gradient and state buffers, for checking it in isolation.
final class LayerHarness {
    let layer: Layer
    let params: FloatBuffer, grads: FloatBuffer, state: FloatBuffer
    let batch: Int

    init(_ layer: Layer, batch: Int, seed: UInt64 = 3) {
        self.layer = layer; self.batch = batch
        params = FloatBuffer(count: layer.parameterCount); grads = FloatBuffer(count: layer.parameterCount)
        state = FloatBuffer(count: layer.stateCount)
        layer.bind(parameters: params.pointer, gradients: grads.pointer, state: state.pointer)
        layer.initialize(rng: CounterRNG(seed: seed), layerIndex: 0)
        layer.reserve(batch: batch)
        // Non-trivial biases, gammas and betas so their gradients are exercised.
        let rng = CounterRNG(seed: seed + 1)
        for slot in layer.slots where slot.region == .parameters && !slot.isKernel {
            for i in 0..<slot.count { params.pointer[slot.offset + i] += 0.5 * (rng.uniform(.initialization, 9, UInt64(slot.offset + i)) - 0.5) }
        }
    }

    func forward(_ x: [Float], context: PassContext) throws -> [Float] {
        var y = [Float](repeating: 0, count: batch * layer.outputShape.count)
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeMutableBufferPointer { yp in
                try layer.forward(xp.baseAddress!, yp.baseAddress!, batch: batch, context: context)
            }
        }
        return y
    }

    /// L = Σ r·y in Double.
    func loss(_ x: [Float], _ r: [Float], context: PassContext) throws -> Double {
        let y = try forward(x, context: context)
        return zip(y, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Analytic dL/dx and dL/dθ for L = Σ r·y.
    func gradients(_ x: [Float], _ r: [Float], context: PassContext) throws -> (dx: [Float], dparams: [Float]) {
        grads.zero()
        let y = try forward(x, context: context)
        var dy = r, dx = [Float](repeating: 0, count: x.count)
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeBufferPointer { yp in
                try dy.withUnsafeMutableBufferPointer { dyp in
                    try dx.withUnsafeMutableBufferPointer { dxp in
                        try layer.backward(xp.baseAddress!, yp.baseAddress!, dyp.baseAddress!, dxp.baseAddress!,
                                           batch: batch, context: context)
                    }
                }
            }
        }
        return (dx, grads.array)
    }
}

func randomArray(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    let rng = CounterRNG(seed: seed)
    return (0..<n).map { scale * (2 * rng.uniform(.augmentation, UInt64($0)) - 1) }
}

/// Checks a layer's input and parameter gradients against central finite differences of
/// L = Σ r·y, evaluated in Double from the Float forward pass.
func checkGradients(_ layer: Layer, batch: Int, context: PassContext = PassContext(training: true),
                    step h: Float = 1e-2, tolerance: Double = 2e-2, samples: Int = 60,
                    file: StaticString = #filePath, line: UInt = #line) throws {
    let harness = LayerHarness(layer, batch: batch)
    let x = randomArray(batch * layer.inputShape.count, seed: 11)
    let r = randomArray(batch * layer.outputShape.count, seed: 12)
    let (dx, dp) = try harness.gradients(x, r, context: context)

    func numeric(_ perturb: (Float) -> Void) throws -> Double {
        perturb(h); let up = try harness.loss(x, r, context: context)
        perturb(-2 * h); let down = try harness.loss(x, r, context: context)
        perturb(h)
        return (up - down) / (2 * Double(h))
    }
    var worst = 0.0, worstWhere = ""
    func compare(_ analytic: Float, _ numeric: Double, _ what: String) {
        let err = abs(Double(analytic) - numeric) / max(1, abs(numeric))
        if err > worst { worst = err; worstWhere = "\(what): analytic \(analytic), numeric \(numeric)" }
    }
    let xStride = max(1, x.count / samples)
    for i in stride(from: 0, to: x.count, by: xStride) {
        var xp = x
        xp[i] += h; let up = try harness.loss(xp, r, context: context)
        xp[i] -= 2 * h; let down = try harness.loss(xp, r, context: context)
        compare(dx[i], (up - down) / (2 * Double(h)), "dx[\(i)]")
    }
    let pStride = max(1, dp.count / samples)
    for i in stride(from: 0, to: dp.count, by: pStride) {
        let n = try numeric { harness.params.pointer[i] += $0 }
        compare(dp[i], n, "dparam[\(i)]")
    }
    XCTAssertLessThan(worst, tolerance, "\(layer.kind): worst relative gradient error \(worst) at \(worstWhere)", file: file, line: line)
}
