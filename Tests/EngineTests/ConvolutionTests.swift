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
