import Foundation
import Engine
import XCTest

/// The im2col convolution against the naive direct one, and TensorFlow's padding rules.
final class ConvolutionTests: XCTestCase {
    func testIm2colMatchesNaive() throws {
        let cases: [(Shape, Int, Int, Int, Padding)] = [
            (Shape(c: 1, h: 28, w: 28), 5, 3, 2, .same),
            (Shape(c: 3, h: 7, w: 9), 4, 3, 1, .same),
            (Shape(c: 3, h: 7, w: 9), 4, 3, 2, .same),
            (Shape(c: 2, h: 8, w: 6), 3, 2, 2, .same),
            (Shape(c: 2, h: 8, w: 7), 3, 3, 1, .valid),
            (Shape(c: 2, h: 9, w: 7), 3, 3, 2, .valid),
            (Shape(c: 5, h: 4, w: 4), 6, 1, 1, .valid),
            (Shape(c: 2, h: 5, w: 5), 2, 5, 2, .same),
        ]
        for (shape, filters, k, stride, padding) in cases {
            let conv = try Conv2D(input: shape, filters: filters, kernel: k, stride: stride, padding: padding,
                                  activation: .linear, useBias: true, l2: 0)
            let batch = 3
            let h = LayerHarness(conv, batch: batch)
            let x = randomArray(batch * shape.count, seed: 21)
            let fast = try h.forward(x, context: PassContext(training: true))
            let w = Array(h.params.array[0..<(filters * shape.c * k * k)])
            let b = Array(h.params.array[(filters * shape.c * k * k)...])
            let slow = NaiveConvolution.forward(conv, x: x, weight: w, bias: b, batch: batch)
            let worst = zip(fast, slow).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-5, "conv \(shape) k\(k) s\(stride) \(padding): max difference \(worst)")
        }
    }

    /// The shifted-sgemm path (stride 1, `same`) against the naive convolution, and its
    /// gradients (dx, dW, db, through a fused activation) against the im2col path's, with
    /// two workers so the per-worker partial gradients are exercised.
    func testShiftedMatchesNaiveAndIm2col() throws {
        try checkAgainstNaiveAndIm2col(.shifted, cases: [
            (Shape(c: 3, h: 7, w: 9), 4, 3, .linear),
            (Shape(c: 8, h: 5, w: 6), 6, 3, .relu),
            (Shape(c: 2, h: 6, w: 5), 3, 2, .elu),     // even kernel: padding 0 before, 1 after
            (Shape(c: 4, h: 9, w: 8), 5, 5, .linear),
            (Shape(c: 1, h: 6, w: 6), 2, 3, .relu),
        ])
    }

    /// The Winograd path the same way: odd sizes (tiles that hang over the edge), rows of
    /// more than eight tiles, and images large enough that a worker runs several groups,
    /// the last one partial.
    /// One training forward and backward of `conv` on keyed random input (`seed`) and output
    /// gradient (`seed + 1`): y, dx, the parameter gradients and the parameters.
    func passes(_ conv: Conv2D, batch: Int, seed: UInt64) throws -> (y: [Float], dx: [Float], dp: [Float], w: [Float]) {
        let h = LayerHarness(conv, batch: batch)
        let x = randomArray(batch * conv.inputShape.count, seed: seed)
        let r = randomArray(batch * conv.outputShape.count, seed: seed + 1)
        let y = try h.forward(x, context: PassContext(training: true))
        let (dx, dp) = try h.gradients(x, r, context: PassContext(training: true))
        return (y, dx, dp, h.params.array)
    }

    /// im2col/col2im through the offset table give the same bits as the row loops: forward,
    /// dx, dW and db, for strides, paddings, kernels and widths either side of the auto choice.
    func testGatherTableIsBitwiseTheRowLoops() throws {
        let cases: [(Shape, Int, Int, Int, Padding)] = [
            (Shape(c: 5, h: 7, w: 7), 10, 3, 2, .same),     // seed's second convolution (4×4 outputs)
            (Shape(c: 1, h: 28, w: 28), 5, 3, 2, .same),    // seed's first (14×14)
            (Shape(c: 1, h: 28, w: 28), 4, 3, 1, .same),    // ref's first (28×28: loops under auto)
            (Shape(c: 3, h: 9, w: 7), 4, 5, 2, .same),
            (Shape(c: 2, h: 8, w: 7), 3, 3, 1, .valid),
            (Shape(c: 2, h: 6, w: 5), 3, 2, 2, .same),
        ]
        for (shape, filters, k, stride, padding) in cases {
            let batch = 3
            func run(table: Bool) throws -> [[Float]] {
                let conv = try Conv2D(input: shape, filters: filters, kernel: k, stride: stride, padding: padding,
                                      activation: .elu, useBias: true, l2: 0)
                conv.algorithm = .im2col
                conv.gathersByTable = table
                let p = try passes(conv, batch: batch, seed: 61)
                return [p.y, p.dx, p.dp]
            }
            let table = try run(table: true), loops = try run(table: false)
            for (part, (a, b)) in zip(["y", "dx", "dW/db"], zip(table, loops)) {
                XCTAssertEqual(a.count, b.count)
                let differing = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                XCTAssertEqual(differing, 0, "\(shape) k\(k) s\(stride) \(padding): \(part) differs in \(differing) of \(a.count)")
            }
        }
    }

    func testWinogradMatchesNaiveAndIm2col() throws {
        try checkAgainstNaiveAndIm2col(.winograd, cases: [
            (Shape(c: 3, h: 7, w: 9), 4, 3, .linear),
            (Shape(c: 8, h: 5, w: 6), 6, 3, .relu),
            (Shape(c: 2, h: 17, w: 18), 3, 3, .elu),
            (Shape(c: 3, h: 28, w: 30), 5, 3, .linear),
            (Shape(c: 1, h: 6, w: 6), 2, 3, .relu),
            (Shape(c: 5, h: 1, w: 2), 2, 3, .linear),
        ])
    }

    func checkAgainstNaiveAndIm2col(_ algorithm: ConvolutionAlgorithm,
                                    cases: [(Shape, Int, Int, Activation)]) throws {
        let saved = Parallel.workers
        defer { Parallel.configure(threads: saved) }
        Parallel.configure(threads: 2)
        for (shape, filters, k, activation) in cases {
            let batch = 5
            func run(_ algorithm: ConvolutionAlgorithm) throws -> (y: [Float], dx: [Float], dp: [Float], w: [Float]) {
                let conv = try Conv2D(input: shape, filters: filters, kernel: k, stride: 1, padding: .same,
                                      activation: activation, useBias: true, l2: 0)
                conv.algorithm = algorithm
                return try passes(conv, batch: batch, seed: 31)
            }
            let fast = try run(algorithm), reference = try run(.im2col)
            let name = "\(algorithm) conv \(shape) k\(k) \(activation)"
            let conv = try Conv2D(input: shape, filters: filters, kernel: k, stride: 1, padding: .same,
                                  activation: .linear, useBias: true, l2: 0)
            conv.algorithm = algorithm
            XCTAssertTrue(algorithm == .shifted ? conv.usesShifted : conv.usesWinograd, "\(name): path not taken")
            let kernelCount = filters * shape.c * k * k
            let x = randomArray(batch * shape.count, seed: 31)
            var naive = NaiveConvolution.forward(conv, x: x, weight: Array(fast.w[0..<kernelCount]),
                                                 bias: Array(fast.w[kernelCount...]), batch: batch)
            naive = naive.map { v in activation == .relu ? max(v, 0) : activation == .elu ? (v > 0 ? v : expm1(v)) : v }
            XCTAssertLessThan(maxDifference(fast.y, naive), 1e-5, "\(name): forward vs naive")
            XCTAssertLessThan(maxDifference(fast.dx, reference.dx), 1e-4, "\(name): dx")
            XCTAssertLessThan(maxDifference(fast.dp, reference.dp), 1e-4, "\(name): dW, db")
        }
    }

    /// The im2col path keeps a training forward's column matrices for the weight gradient; after
    /// an inference forward of other images in between, backward rebuilds them instead (its only
    /// layout work without dx), with the same bits either way.
    func testKeptColumnsGiveTheRebuiltGradients() throws {
        let saved = Parallel.workers
        Parallel.workers = 1  // layout time is counted on worker 0
        defer { Parallel.workers = saved }
        let conv = try Conv2D(input: Shape(c: 2, h: 9, w: 9), filters: 3, kernel: 3, stride: 2, padding: .same,
                              activation: .relu, useBias: true, l2: 0)
        conv.algorithm = .im2col
        let batch = 4, inCount = batch * conv.inputShape.count
        let h = LayerHarness(conv, batch: batch)
        let x = randomArray(inCount, seed: 41), other = randomArray(inCount, seed: 43)
        let r = randomArray(batch * conv.outputShape.count, seed: 42)
        conv.timesLayout = true
        func weightGradients(inferenceBetween: Bool) throws -> (bits: [UInt32], rebuildSeconds: Double) {
            h.grads.zero()
            conv.layoutSeconds = [0, 0]
            let y = try h.forward(x, context: PassContext(training: true))
            if inferenceBetween { _ = try h.forward(other, context: PassContext(training: false)) }
            var dy = r
            try x.withUnsafeBufferPointer { xp in
                try dy.withUnsafeMutableBufferPointer { dyp in
                    try conv.backward(xp.baseAddress!, y, dyp.baseAddress!, nil, batch: batch,
                                      context: PassContext(training: true))
                }
            }
            return (h.grads.array.map(\.bitPattern), conv.layoutSeconds[1])
        }
        let kept = try weightGradients(inferenceBetween: false)
        let rebuilt = try weightGradients(inferenceBetween: true)
        XCTAssertEqual(kept.rebuildSeconds, 0, "backward rebuilt column matrices it had kept")
        XCTAssertGreaterThan(rebuilt.rebuildSeconds, 0, "backward did not rebuild after an inference forward")
        XCTAssertEqual(rebuilt.bits, kept.bits)
    }

    /// A model's convolutions share one budget for kept column matrices, in layer order.
    func testKeptColumnsShareOneBudgetPerModel() throws {
        let spec = try ModelSpec.decode(Data("""
            {"name": "budget", "input": [10, 10, 4], "layers": [
             {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "valid"},
             {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "valid"},
             {"type": "flatten"}, {"type": "dense", "units": 2}]}
            """.utf8), source: "test")
        let model = try Model(spec: spec)
        // Per image: 36 × 64 floats for the first convolution, 36 × 36 for the second.
        XCTAssertEqual(model.keptColumnFloats(batch: 1000), 1000 * (36 * 64 + 36 * 36))
        XCTAssertEqual(model.keptColumnFloats(batch: 1200), 1200 * 36 * 64)  // the second no longer fits
        XCTAssertLessThanOrEqual(1200 * (36 * 64 + 36 * 36), 2 * Conv2D.keptColumnsBudget)
        XCTAssertGreaterThan(1200 * (36 * 64 + 36 * 36), Conv2D.keptColumnsBudget)
        XCTAssertEqual(try Model(spec: .ref).keptColumnFloats(batch: 128), 128 * 9 * 784)  // its first convolution
    }

    func testSamePaddingFollowsTensorFlow() {
        // out = ceil(in / stride); the odd padding goes bottom/right.
        let g = AxisGeometry(input: 28, kernel: 3, stride: 2, padding: .same)!
        XCTAssertEqual(g.output, 14); XCTAssertEqual(g.padBefore, 0)     // total 1: 0 before, 1 after
        let g2 = AxisGeometry(input: 7, kernel: 3, stride: 2, padding: .same)!
        XCTAssertEqual(g2.output, 4); XCTAssertEqual(g2.padBefore, 1)    // total 2
        let g3 = AxisGeometry(input: 28, kernel: 3, stride: 1, padding: .same)!
        XCTAssertEqual(g3.output, 28); XCTAssertEqual(g3.padBefore, 1)
        let g4 = AxisGeometry(input: 300, kernel: 3, stride: 2, padding: .same)!
        XCTAssertEqual(g4.output, 150)
        let v = AxisGeometry(input: 7, kernel: 3, stride: 2, padding: .valid)!
        XCTAssertEqual(v.output, 3); XCTAssertEqual(v.padBefore, 0)
        XCTAssertNil(AxisGeometry(input: 2, kernel: 3, stride: 1, padding: .valid))
    }
}

func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}
