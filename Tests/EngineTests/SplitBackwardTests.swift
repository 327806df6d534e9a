import Engine
import XCTest

/// The split backward (`SplitBackward`) and the model's use of it: a weight gradient deferred to
/// the batch-norm exchange below gives the same bits as the plain backward.
final class SplitBackwardTests: XCTestCase {
    override func tearDown() { Parallel.configure(threads: 1) }

    /// backwardInput then backwardParameters writes the dx and adds the gradients that backward does.
    func checkSplit(_ layer: SplitBackward, batch: Int, name: String) throws {
        XCTAssertTrue(layer.splitsBackward, "\(name): no split")
        let x = randomArray(batch * layer.inputShape.count, seed: 41)
        let r = randomArray(batch * layer.outputShape.count, seed: 42)
        let h = LayerHarness(layer, batch: batch)
        var y = try h.forward(x, context: PassContext(training: true))
        func run(split: Bool) throws -> (dx: [Float], grads: [Float]) {
            h.grads.pointer.update(repeating: 0.25, count: layer.parameterCount)  // backward adds
            var dy = r, dx = [Float](repeating: .nan, count: x.count)
            try x.withUnsafeBufferPointer { xp in
                try y.withUnsafeMutableBufferPointer { yp in
                    try dy.withUnsafeMutableBufferPointer { dyp in
                        try dx.withUnsafeMutableBufferPointer { dxp in
                            if split {
                                try layer.backwardInput(xp.baseAddress!, yp.baseAddress!, dyp.baseAddress!, dxp.baseAddress!,
                                                        batch: batch, context: PassContext(training: true))
                                layer.backwardParameters(xp.baseAddress!, dyp.baseAddress!, batch: batch)
                            } else {
                                try layer.backward(xp.baseAddress!, yp.baseAddress!, dyp.baseAddress!, dxp.baseAddress!,
                                                   batch: batch, context: PassContext(training: true))
                            }
                        }
                    }
                }
            }
            return (dx, h.grads.array)
        }
        let whole = try run(split: false), split = try run(split: true)
        XCTAssertEqual(differing(split.dx, whole.dx), 0, "\(name): dx differs")
        XCTAssertEqual(differing(split.grads, whole.grads), 0, "\(name): parameter gradients differ")
        XCTAssertTrue(whole.grads.contains { $0 != 0.25 }, "\(name): no gradient was added")
    }

    /// How many elements differ in their bits.
    func differing(_ a: [Float], _ b: [Float]) -> Int {
        zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count + abs(a.count - b.count)
    }

    func testWinogradConvolutionSplitsExactly() throws {
        Parallel.configure(threads: 2)
        let cases: [(Shape, Int, Activation, Int)] = [
            (Shape(c: 8, h: 14, w: 14), 6, .linear, 5),
            (Shape(c: 3, h: 7, w: 9), 4, .relu, 3),
            (Shape(c: 2, h: 17, w: 18), 3, .elu, 40),   // several groups per worker, a partial last one
        ]
        for (shape, filters, activation, batch) in cases {
            let conv = try Conv2D(input: shape, filters: filters, kernel: 3, stride: 1, padding: .same,
                                  activation: activation, useBias: true, l2: 0)
            conv.algorithm = .winograd
            try checkSplit(conv, batch: batch, name: "winograd \(shape) \(activation) batch \(batch)")
        }
    }

    func testDenseSplitsExactly() throws {
        Parallel.configure(threads: 2)
        let dense = Dense(input: Shape(features: 37), units: 11, activation: .elu, useBias: true, l2: 0)
        try checkSplit(dense, batch: 9, name: "dense")
    }

    /// Paths that do not split do all of backward in backwardInput and nothing in backwardParameters.
    func testOtherConvolutionPathsDoNotSplit() throws {
        let conv = try Conv2D(input: Shape(c: 1, h: 6, w: 6), filters: 2, kernel: 3, stride: 1, padding: .same,
                              activation: .linear, useBias: true, l2: 0)
        XCTAssertEqual(conv.path, .im2col)
        XCTAssertFalse(conv.splitsBackward)
    }

    /// Sums nothing (as one rank would) but says it spans ranks, so the model defers weight
    /// gradients to it; counts the overlapped calls in which the gradient buffer changed.
    final class OverlapProbe: StatisticsReducer {
        var gradients: UnsafeMutableBufferPointer<Float>?
        var productiveOverlaps = 0
        var spansRanks: Bool { true }
        func sum(_ buffer: UnsafeMutableBufferPointer<Double>, phase: String) throws {}
        func sum(_ buffer: UnsafeMutableBufferPointer<Double>, phase: String, overlapping work: () -> Void) throws {
            let before = gradients.map { Array($0) }
            work()
            if let before, let gradients, before != Array(gradients) { productiveOverlaps += 1 }
        }
    }

    /// A model with both kinds of gap between a layer with weights and the batch norm below it
    /// (adjacent, and across max-pooling and flatten, which needs the third gradient buffer):
    /// deferring gives the same gradients bit for bit, and each deferral ran inside an exchange.
    func testDeferredWeightGradientsGiveTheSameGradients() throws {
        Parallel.configure(threads: 2)
        let spec = ModelSpec(name: "split", input: [12, 12, 1], layers: [
            .conv(8, kernel: 3), .batchNorm(), .relu,
            .conv(8, kernel: 3), .batchNorm(), .relu,    // Winograd (8 inputs), BN adjacent below
            .maxPool(2),
            .conv(8, kernel: 3), .batchNorm(), .relu,    // Winograd, pooling between it and the BN below
            .maxPool(2), .flatten,
            .dense(16), .batchNorm(), .relu,             // dense, pooling and flatten between it and the BN below
            .dropout(0.3),
            .dense(10),                                  // dense, dropout and fused ReLU then the BN
        ], batchSize: 6, learningRate: 1e-3)
        let batch = 6
        let x = randomArray(batch * 144, seed: 51)
        let labels: [Int32] = [0, 3, 9, 3, 1, 7]
        func gradients(overlap: Bool) throws -> ([Float], Int) {
            let model = try Model(spec: spec)
            model.overlapsParameterGradients = overlap
            model.initialize(seed: 6)
            model.reserve(batch: batch)
            let probe = OverlapProbe()
            probe.gradients = UnsafeMutableBufferPointer(start: model.gradients, count: model.parameterCount)
            let ctx = PassContext(training: true, rng: CounterRNG(seed: 2), step: 1, reducer: probe)
            model.input.pointer.update(from: x, count: x.count)
            let logits = try model.forward(batch: batch, context: ctx)
            let dlogits = FloatBuffer(count: batch * 10)
            labels.withUnsafeBufferPointer {
                _ = SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, batch: batch, classes: 10,
                                                        scale: 1 / Float(batch), dlogits: dlogits.pointer)
            }
            model.zeroGradients()
            try model.backward(batch: batch, dlogits: dlogits.pointer, context: ctx)
            return (Array(UnsafeBufferPointer(start: model.gradients, count: model.parameterCount)), probe.productiveOverlaps)
        }
        let (plain, none) = try gradients(overlap: false)
        let (deferred, overlapped) = try gradients(overlap: true)
        XCTAssertEqual(none, 0)
        XCTAssertEqual(overlapped, 4, "the two Winograd convolutions and both dense layers each deferred to a batch norm")
        XCTAssertEqual(deferred.count, plain.count)
        XCTAssertEqual(differing(deferred, plain), 0, "deferred weight gradients changed the gradients")
    }
}
