import Engine
import Foundation
import XCTest

final class ModelTests: XCTestCase {
    func testPresetParameterCounts() throws {
        let seed = try Model(spec: .seed), ref = try Model(spec: .ref)
        XCTAssertEqual(seed.parameterCount, 9_100)
        XCTAssertEqual(seed.parameterCount + seed.stateCount, 9_130)
        XCTAssertEqual(ref.parameterCount, 871_530)
        XCTAssertEqual(seed.classes, 10)
        XCTAssertEqual(seed.layers[5].outputShape.count, 160)
        XCTAssertEqual(ref.layers[13].outputShape.count, 64 * 7 * 7)
    }

    func testBadSpecsGiveOneLineErrors() throws {
        // An unknown layer type fails where the file is read, in one line naming the place and the known kinds.
        let unknown = ModelSpec.seed.canonicalJSON().replacingOccurrences(of: "maxpool2d", with: "maxpool3d")
        XCTAssertThrowsError(try ModelSpec.decode(Data(unknown.utf8), source: "m.json")) {
            XCTAssertEqual("\($0)", "m.json: unknown type 'maxpool3d' (known: conv2d, dense, batchnorm, maxpool2d, flatten, dropout, relu, elu, lrn) at .layers[2].type")
        }
        var v = ModelSpec.seed
        v.layers[0] = .conv(4, kernel: 40, padding: .valid)
        XCTAssertThrowsError(try Model(spec: v)) { XCTAssertTrue("\($0)".contains("does not fit input"), "\($0)") }
        var d = ModelSpec.seed
        d.layers.remove(at: 5)   // dense after a conv without flatten
        XCTAssertThrowsError(try Model(spec: d)) { XCTAssertTrue("\($0)".contains("not flat"), "\($0)") }
        XCTAssertThrowsError(try ModelSpec.decode(Data("{\"name\":\"x\",\"input\":[28,28,1],\"layers\":[{\"filters\":3}]}".utf8), source: "m.json")) {
            XCTAssertTrue("\($0)".contains("m.json: missing 'type'"), "\($0)")
        }
        XCTAssertThrowsError(try ModelSpec.decode(Data("{".utf8), source: "m.json")) {
            XCTAssertTrue("\($0)".hasPrefix("m.json: not valid JSON"), "\($0)")
        }
    }

    /// The GEMM layers count in the training FLOPs (no input gradient for the first), and only
    /// batch norms after a linear convolution fold into it.
    func testTrainingFlopsAndFoldedBatchNorms() throws {
        let seed = try Model(spec: .seed), ref = try Model(spec: .ref)
        // conv 5×9×196 (first: no dx), conv 10×45×16, dense 160→50, dense 50→10.
        XCTAssertEqual(seed.trainingFlopsPerExample, 2 * (5 * 9 * 196 * 2 + 10 * 45 * 16 * 3 + 160 * 50 * 3 + 50 * 10 * 3))
        XCTAssertEqual(seed.batchNormsFoldedInInference, [])    // its convolutions end in ELU
        XCTAssertEqual(ref.batchNormsFoldedInInference, [1, 4, 8, 11])   // not 16, after a dense layer
        ref.foldsBatchNormInInference = false
        XCTAssertEqual(ref.batchNormsFoldedInInference, [])
    }

    /// Every kind a model file may name builds a layer that reports that kind.
    func testEveryKindBuildsItsLayer() throws {
        for kind in LayerSpec.Kind.allCases {
            var layer = LayerSpec(type: kind)
            layer.filters = 2; layer.units = 2; layer.kernel = 3; layer.size = 2
            let flat = kind == .dense
            let spec = ModelSpec(name: "one", input: flat ? [1, 1, 4] : [6, 6, 3], layers: flat ? [.flatten, layer] : [layer])
            XCTAssertEqual(try Model(spec: spec).layers.last?.kind, kind)
            XCTAssertEqual(try ModelSpec.decode(Data(spec.canonicalJSON().utf8), source: "x"), spec)
        }
    }

    func testSpecJSONRoundTrip() throws {
        let json = ModelSpec.ref.canonicalJSON()
        XCTAssertEqual(try ModelSpec.decode(Data(json.utf8), source: "x"), .ref)
    }

    /// The whole network (seed: conv, ELU, BN, pool, dense, dropout, L2) with softmax
    /// cross-entropy, against finite differences of the total loss.
    func testWholeModelGradient() throws {
        let model = try Model(spec: .seed)
        model.initialize(seed: 4)
        let batch = 4
        model.reserve(batch: batch)
        let x = randomArray(batch * 784, seed: 8, scale: 0.5).map { $0 + 0.5 }
        let labels: [Int32] = [3, 1, 4, 1]
        let ctx = PassContext(training: true, rng: CounterRNG(seed: 1), step: 2)
        func loss() throws -> Double {
            model.input.pointer.update(from: x, count: x.count)
            let logits = try model.forward(batch: batch, context: ctx)
            let (l, _) = labels.withUnsafeBufferPointer {
                SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, batch: batch, classes: 10,
                                                    scale: 1, dlogits: nil)
            }
            return l / Double(batch) + model.l2Loss()
        }
        _ = try loss()
        let dlogits = FloatBuffer(count: batch * 10)
        labels.withUnsafeBufferPointer {
            _ = SoftmaxCrossEntropy.forwardBackward(logits: model.logits, labels: $0.baseAddress!, batch: batch, classes: 10,
                                                    scale: 1 / Float(batch), dlogits: dlogits.pointer)
        }
        model.zeroGradients()
        try model.backward(batch: batch, dlogits: dlogits.pointer, context: ctx)
        model.addL2Gradients()
        let analytic = Array(UnsafeBufferPointer(start: model.gradients, count: model.parameterCount))
        // Central differences at two step sizes; where they disagree a kink (max-pool switch,
        // ELU/ReLU corner) lies within reach and that parameter is skipped. Most must be checked.
        var worst = 0.0, worstAt = 0, checked = 0, sampled = 0
        func numeric(_ i: Int, _ h: Float) throws -> Double {
            let w = model.parameters.pointer + i
            let saved = w.pointee
            w.pointee = saved + h; let up = try loss()
            w.pointee = saved - h; let down = try loss()
            w.pointee = saved
            return (up - down) / (2 * Double(h))
        }
        for i in stride(from: 0, to: model.parameterCount, by: 97) {
            sampled += 1
            let a = try numeric(i, 4e-3), b = try numeric(i, 2e-3)
            guard abs(a - b) <= 1e-2 * max(0.1, abs(b)) else { continue }
            checked += 1
            let err = abs(b - Double(analytic[i])) / max(0.1, abs(b))
            if err > worst { worst = err; worstAt = i }
        }
        XCTAssertGreaterThan(checked, sampled * 8 / 10, "too many parameters near a kink")
        XCTAssertLessThan(worst, 2e-2, "worst relative error \(worst) at parameter \(worstAt)")
    }

    /// Per-worker partial gradients: a call that runs fewer chunks than an earlier one must not
    /// add the earlier call's leftovers.
    func testConvGradientsWithChangingChunkCounts() throws {
        func gradients(workers: Int) throws -> [Float] {
            let saved = Parallel.workers
            Parallel.workers = workers
            defer { Parallel.workers = saved }
            let conv = try Conv2D(input: Shape(c: 2, h: 8, w: 8), filters: 3, kernel: 3, stride: 1, padding: .same,
                                  activation: .linear, useBias: true, l2: 0)
            // 64 images make 3 chunks; 2 images are too little work to split, so 1 chunk runs.
            let h = LayerHarness(conv, batch: 64)
            let big = randomArray(64 * 128, seed: 5), bigR = randomArray(64 * 192, seed: 6)
            _ = try h.gradients(big, bigR, context: PassContext(training: true))
            let small = Array(big[0..<256]), smallR = Array(bigR[0..<384])
            let two = LayerHarness(conv, batch: 2)
            return try two.gradients(small, smallR, context: PassContext(training: true)).dparams
        }
        let reference = try gradients(workers: 1), threaded = try gradients(workers: 3)
        let worst = zip(reference, threaded).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThan(worst, 1e-5, "stale partial gradients: worst difference \(worst)")
    }

    /// Inference after training-sized reservations: layers with per-batch caches (LRN) are sized
    /// for the inference batch, and inference gives what a training-mode pass gives for LRN.
    func testInferenceBatchLargerThanTrainingBatch() throws {
        let spec = try ModelSpec.decode(Data("""
            {"name": "lrn", "input": [8, 8, 1], "layers": [
             {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
             {"type": "lrn", "size": 3}, {"type": "maxpool2d", "size": 2},
             {"type": "flatten"}, {"type": "dense", "units": 3}]}
            """.utf8), source: "test")
        let model = try Model(spec: spec)
        model.initialize(seed: 3)
        model.reserve(batch: 2)
        model.reserveInference(batch: 9)
        let x = randomArray(9 * 64, seed: 4)
        model.input.pointer.update(from: x, count: x.count)
        let inferred = Array(UnsafeBufferPointer(start: try model.forward(batch: 9, context: PassContext(training: false)), count: 27))
        let trained = try Model(spec: spec)
        trained.initialize(seed: 3)
        trained.reserve(batch: 9)
        trained.input.pointer.update(from: x, count: x.count)
        let direct = Array(UnsafeBufferPointer(start: try trained.forward(batch: 9, context: PassContext(training: true)), count: 27))
        XCTAssertEqual(inferred, direct)
    }

    /// Inference folds a batch norm that follows a linear convolution into it (weights w·s, bias
    /// (b − mean)·s + β) and applies the batch norm's fused activation there. On every convolution
    /// path, with and without a convolution bias, with ReLU, ELU and no activation after the batch
    /// norm, and with batch-norm parameters and running statistics far from their initial values,
    /// the logits match the two separate passes up to rounding; and a training step after a
    /// folded inference gives the same bits as before it (training never sees folded weights).
    func testInferenceFoldsBatchNormIntoTheConvolutionBefore() throws {
        let spec = try ModelSpec.decode(Data("""
            {"name": "fold", "input": [8, 8, 2], "layers": [
             {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
             {"type": "batchnorm"}, {"type": "relu"},
             {"type": "conv2d", "filters": 5, "kernel": 3, "padding": "same", "use_bias": false},
             {"type": "batchnorm"},
             {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
             {"type": "batchnorm"}, {"type": "elu"},
             {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 3}]}
            """.utf8), source: "test")
        let batch = 5
        let x = randomArray(batch * 128, seed: 21)
        for algorithm in [ConvolutionAlgorithm.im2col, .winograd, .shifted] {
            let model = try Model(spec: spec)
            XCTAssertEqual(model.batchNormsFoldedInInference, [1, 4, 6])
            for case let conv as Conv2D in model.layers { conv.algorithm = algorithm }
            model.initialize(seed: 4)
            let p = randomArray(model.parameters.count, seed: 22)
            model.parameters.pointer.update(from: p, count: p.count)
            let s = randomArray(model.state.count, seed: 23)
            for t in model.tensors where t.region == .state {
                for i in t.offset ..< t.offset + t.count {
                    // Running means in [−1, 1), variances in [0.25, 1.25).
                    model.state.pointer[i] = t.name.hasSuffix("running_var") ? 0.75 + 0.5 * s[i] : s[i]
                }
            }
            model.reserveInference(batch: batch)
            func logits(folding: Bool) throws -> [Float] {
                model.foldsBatchNormInInference = folding
                model.input.pointer.update(from: x, count: x.count)
                let out = try model.forward(batch: batch, context: PassContext(training: false))
                return Array(UnsafeBufferPointer(start: out, count: batch * 3))
            }
            let folded = try logits(folding: true), separate = try logits(folding: false)
            XCTAssertFalse(separate.contains { !$0.isFinite })
            let scale = separate.map(abs).max()!
            let worst = zip(folded, separate).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-5 * max(scale, 1), "\(algorithm): folded logits differ by \(worst)")
            XCTAssertEqual(folded, try logits(folding: true), "\(algorithm): folding is not deterministic")

            model.reserve(batch: batch)
            let dlogits = randomArray(batch * 3, seed: 24)
            func trainingGradients() throws -> [Float] {
                model.input.pointer.update(from: x, count: x.count)
                model.zeroGradients()
                let context = PassContext(training: true)
                try model.forward(batch: batch, context: context)
                try model.backward(batch: batch, dlogits: dlogits, context: context)
                return Array(UnsafeBufferPointer(start: model.gradients, count: model.parameterCount))
            }
            let before = try trainingGradients()
            _ = try logits(folding: true)
            let after = try trainingGradients()
            XCTAssertTrue(before.elementsEqual(after) { $0.bitPattern == $1.bitPattern },
                          "\(algorithm): a training step after a folded inference differs")
        }
    }

    /// Only a batch norm right after a convolution without an activation of its own folds.
    func testBatchNormAfterAnActivationOrAnotherLayerIsNotFolded() throws {
        let spec = try ModelSpec.decode(Data("""
            {"name": "nofold", "input": [8, 8, 1], "layers": [
             {"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same", "activation": "relu"},
             {"type": "batchnorm"},
             {"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"},
             {"type": "maxpool2d", "size": 2}, {"type": "batchnorm"},
             {"type": "conv2d", "filters": 2, "kernel": 3, "padding": "same"}, {"type": "batchnorm"},
             {"type": "flatten"}, {"type": "dense", "units": 3}, {"type": "batchnorm"}]}
            """.utf8), source: "test")
        let model = try Model(spec: spec)
        XCTAssertEqual(model.batchNormsFoldedInInference, [6])
        model.foldsBatchNormInInference = false
        XCTAssertEqual(model.batchNormsFoldedInInference, [])
    }
}
