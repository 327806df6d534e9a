import Engine
import Hashing
import XCTest

final class NumericsTests: XCTestCase {
    /// ELU's negative side uses our own vectorizable eˣ, not libm's `expf`: over x from −100 to
    /// 10 (through the clamp at −87, zero and the positive side) it stays within 2.5e-7 of
    /// α·expm1(x) in Double, as close as `expf(x) − 1` itself gets, and is exact where x > 0.
    func testELUMatchesExpm1() throws {
        let xs: [Float] = (0..<110_001).map { -100 + Float($0) * 0.001 }
        for alpha: Float in [1, 0.5] {
            let layer = ActivationLayer(.elu, alpha: alpha, input: Shape(features: xs.count))
            let y = try LayerHarness(layer, batch: 1).forward(xs, context: PassContext(training: false))
            var worst: Double = 0, worstLibm: Double = 0
            for (x, v) in zip(xs, y) {
                if x > 0 { XCTAssertEqual(v, x); continue }
                let exact = Double(alpha) * expm1(Double(x))
                worst = max(worst, abs(Double(v) - exact))
                worstLibm = max(worstLibm, abs(Double(alpha * (expf(x) - 1)) - exact))
            }
            XCTAssertLessThanOrEqual(worst, 2.5e-7, "alpha \(alpha): worst |ELU − α·expm1| \(worst) (libm expf − 1: \(worstLibm))")
        }
    }

    /// FastMath's square roots over the whole normal range (300,000 values spread evenly in
    /// log scale, so every exponent and many mantissas), against Double: within 2.5e-7 (measured
    /// worst 1.9e-7 and 1.7e-7, about 1.5 ulps).
    func testFastSquareRootsAreWithinAFewUlps() {
        var worstSqrt = 0.0, worstInverse = 0.0
        for k in 0..<300_000 {
            let s = Float(exp(-87.3 + Double(k) * (88.7 + 87.3) / 300_000))
            let exact = Double(s).squareRoot()
            worstSqrt = max(worstSqrt, abs(Double(FastMath.squareRoot(s)) - exact) / exact)
            worstInverse = max(worstInverse, abs(Double(FastMath.reciprocalSquareRoot(s)) * exact - 1))
        }
        XCTAssertLessThanOrEqual(worstSqrt, 2.5e-7, "√: worst relative error \(worstSqrt)")
        XCTAssertLessThanOrEqual(worstInverse, 2.5e-7, "1/√: worst relative error \(worstInverse)")
        XCTAssertEqual(FastMath.squareRoot(0), 0)
        XCTAssertLessThan(FastMath.squareRoot(Float(bitPattern: 0x0001_0000)), 1.2e-19, "subnormal: tiny, as documented")
    }

    func testSoftmaxCrossEntropyIsStableAndCorrect() {
        let logits: [Float] = [1000, 0, -1000, 2, 1, 0]
        let labels: [Int32] = [0, 1]
        var d = [Float](repeating: 0, count: 6)
        let (loss, correct) = logits.withUnsafeBufferPointer { l in
            labels.withUnsafeBufferPointer { y in
                d.withUnsafeMutableBufferPointer {
                    SoftmaxCrossEntropy.forwardBackward(logits: l.baseAddress!, labels: y.baseAddress!, batch: 2, classes: 3,
                                                        scale: 1, dlogits: $0.baseAddress!)
                }
            }
        }
        let second = log(exp(2.0) + exp(1.0) + 1) - 1
        XCTAssertEqual(loss, second, accuracy: 1e-5)
        XCTAssertEqual(correct, 1)
        XCTAssertTrue(d.allSatisfy { $0.isFinite })
        XCTAssertEqual(d[0], 0, accuracy: 1e-6)
        XCTAssertEqual(Double(d[4]), exp(1.0) / (exp(2.0) + exp(1.0) + 1) - 1, accuracy: 1e-6)
    }

    func testAdamFollowsKerasFormula() {
        let adam = Adam(parameterCount: 1, config: AdamConfig())
        var w: [Float] = [1]
        let g: [Float] = [0.5]
        for _ in 0..<2 { adam.update(&w, g, learningRate: 1e-3) }
        // Double-precision replay of the same two steps.
        var m = 0.0, v = 0.0, wd = 1.0
        for t in 1...2 {
            m = 0.9 * m + 0.1 * 0.5; v = 0.999 * v + 0.001 * 0.25
            let alpha = 1e-3 * (1 - pow(0.999, Double(t))).squareRoot() / (1 - pow(0.9, Double(t)))
            wd -= alpha * m / (v.squareRoot() + 1e-7)
        }
        XCTAssertEqual(Double(w[0]), wd, accuracy: 1e-7)
        XCTAssertEqual(adam.step, 2)
    }

    func testPermutationIsKeyedAndComplete() {
        let rng = CounterRNG(seed: 9)
        let p = rng.permutation(count: 1000, epoch: 3)
        XCTAssertEqual(p.sorted(), Array(0..<1000))
        XCTAssertEqual(p, CounterRNG(seed: 9).permutation(count: 1000, epoch: 3))
        XCTAssertNotEqual(p, rng.permutation(count: 1000, epoch: 4))
        XCTAssertNotEqual(p, CounterRNG(seed: 10).permutation(count: 1000, epoch: 3))
    }

    func testUniformLooksUniform() {
        let rng = CounterRNG(seed: 1)
        let n = 100_000
        let mean = (0..<n).reduce(0.0) { $0 + Double(rng.uniform(.dropout, UInt64($1))) } / Double(n)
        XCTAssertEqual(mean, 0.5, accuracy: 0.01)
    }

    func testWeightsHashIsOfLittleEndianParameterBytes() throws {
        let m = try Model(spec: .seed)
        m.initialize(seed: 2)
        let bytes = UnsafeRawBufferPointer(start: m.parameters.pointer, count: m.parameterCount * 4)
        XCTAssertEqual(m.weightsSHA256(), SHA256.hex(SHA256.hash(bytes)))
        let m2 = try Model(spec: .seed)
        m2.initialize(seed: 2)
        XCTAssertEqual(m.weightsSHA256(), m2.weightsSHA256())
    }
}
