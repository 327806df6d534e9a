import Engine
import XCTest

/// Every layer's input and parameter gradients against finite differences.
final class LayerGradientTests: XCTestCase {
    func testConvSameStride1() throws {
        try checkGradients(Conv2D(input: Shape(c: 2, h: 6, w: 5), filters: 3, kernel: 3, stride: 1, padding: .same,
                                  activation: .linear, useBias: true, l2: 0), batch: 2)
    }
    func testConvShiftedSameStride1() throws {
        for (k, activation) in [(3, Activation.elu), (2, .linear)] {
            let conv = try Conv2D(input: Shape(c: 3, h: 6, w: 5), filters: 4, kernel: k, stride: 1, padding: .same,
                                  activation: activation, useBias: true, l2: 0)
            conv.algorithm = .shifted
            try checkGradients(conv, batch: 2)
        }
    }
    func testConvWinograd() throws {
        for shape in [Shape(c: 3, h: 6, w: 5), Shape(c: 2, h: 5, w: 19)] {
            let conv = try Conv2D(input: shape, filters: 4, kernel: 3, stride: 1, padding: .same,
                                  activation: .elu, useBias: true, l2: 0)
            conv.algorithm = .winograd
            try checkGradients(conv, batch: 2)
        }
    }
    func testConvSameStride2OddPadding() throws {
        // 7 → 4 with stride 2: total padding 2; 6 → 3: total padding 1 (extra at the bottom/right).
        try checkGradients(Conv2D(input: Shape(c: 2, h: 7, w: 6), filters: 3, kernel: 3, stride: 2, padding: .same,
                                  activation: .elu, useBias: true, l2: 0), batch: 2)
    }
    func testConvValidWithReLU() throws {
        try checkGradients(Conv2D(input: Shape(c: 3, h: 6, w: 6), filters: 2, kernel: 2, stride: 2, padding: .valid,
                                  activation: .relu, useBias: true, l2: 0), batch: 2)
    }
    func testConvPointwise() throws {
        try checkGradients(Conv2D(input: Shape(c: 4, h: 3, w: 3), filters: 2, kernel: 1, stride: 1, padding: .valid,
                                  activation: .linear, useBias: false, l2: 0), batch: 2)
    }
    func testDense() throws {
        try checkGradients(Dense(input: Shape(features: 7), units: 5, activation: .elu, useBias: true, l2: 0), batch: 3)
    }
    func testBatchNormSpatialTraining() throws {
        try checkGradients(BatchNorm(input: Shape(c: 3, h: 4, w: 4), momentum: 0.9, epsilon: 1e-3), batch: 3,
                           step: 5e-3, tolerance: 3e-2)
    }
    func testBatchNormWithFusedELU() throws {
        let bn = BatchNorm(input: Shape(c: 3, h: 4, w: 5), momentum: 0.9, epsilon: 1e-3)
        bn.fusedActivation = .elu
        try checkGradients(bn, batch: 3, step: 5e-3, tolerance: 3e-2)
    }
    func testBatchNormFeaturesTraining() throws {
        try checkGradients(BatchNorm(input: Shape(features: 6), momentum: 0.99, epsilon: 1e-3), batch: 5,
                           step: 5e-3, tolerance: 3e-2)
    }
    func testMaxPoolValid() throws {
        try checkGradients(MaxPool2D(input: Shape(c: 2, h: 6, w: 6), size: 2, stride: 2, padding: .valid), batch: 2,
                           step: 1e-3)
    }
    /// Inference's 2×2 pooling (no argmax) gives the training pass's bits, also where a window
    /// holds ties, +0 and −0, or a NaN (a later element wins only when greater, in both).
    func testMaxPoolInferenceMatchesTrainingBitForBit() throws {
        let pool = try MaxPool2D(input: Shape(c: 3, h: 6, w: 10), size: 2, stride: 2, padding: .valid)
        var x = randomArray(2 * 180, seed: 31)
        for i in stride(from: 0, to: x.count - 1, by: 7) { x[i] = x[i + 1] }     // ties
        for i in stride(from: 2, to: x.count - 1, by: 11) { x[i] = 0; x[i + 1] = -0.0 }
        for i in stride(from: 5, to: x.count - 10, by: 13) { x[i] = -0.0; x[i + 10] = 0 }
        for i in stride(from: 3, to: x.count, by: 29) { x[i] = .nan }
        pool.reserve(batch: 2)
        func run(training: Bool) throws -> [UInt32] {
            var y = [Float](repeating: 7, count: 2 * pool.outputShape.count)
            try pool.forward(x, &y, batch: 2, context: PassContext(training: training))
            return y.map(\.bitPattern)
        }
        let trained = try run(training: true)
        XCTAssertEqual(try run(training: false), trained)
        XCTAssertTrue(trained.contains(Float.nan.bitPattern) || trained.contains { Float(bitPattern: $0).isNaN })
    }

    func testMaxPoolSameOverlapping() throws {
        try checkGradients(MaxPool2D(input: Shape(c: 2, h: 5, w: 5), size: 3, stride: 2, padding: .same), batch: 2,
                           step: 1e-3)
    }
    func testActivations() throws {
        try checkGradients(ActivationLayer(.elu, input: Shape(c: 2, h: 3, w: 3)), batch: 2, step: 1e-3)
        try checkGradients(ActivationLayer(.relu, input: Shape(c: 2, h: 3, w: 3)), batch: 2, step: 1e-3)
    }
    func testDropoutWithFixedKeys() throws {
        let d = Dropout(input: Shape(features: 20), rate: 0.4, layerIndex: 0)
        try checkGradients(d, batch: 3, context: PassContext(training: true, rng: CounterRNG(seed: 5), step: 7))
    }
    func testFlatten() throws {
        try checkGradients(FlattenLayer(input: Shape(c: 2, h: 2, w: 3)), batch: 2)
    }
}
