import Engine
import Foundation
import XCTest

/// Local response normalisation: gradients against finite differences, values against the
/// formula in Double and against PyTorch's `F.local_response_norm`, and building from a spec.
final class LRNTests: XCTestCase {
    // alpha large enough that the normalisation term, not just y = x / k^β, is exercised.
    func testGradientOddSize() throws {
        try checkGradients(LocalResponseNorm(input: Shape(c: 7, h: 3, w: 2), size: 5, alpha: 2, beta: 0.75, k: 2),
                           batch: 2, tolerance: 1e-2)
    }
    func testGradientEvenSizeIsAsymmetric() throws {
        try checkGradients(LocalResponseNorm(input: Shape(c: 6, h: 2, w: 3), size: 4, alpha: 3, beta: 0.6, k: 1),
                           batch: 2, tolerance: 1e-2)
    }
    func testGradientWindowWiderThanChannels() throws {
        try checkGradients(LocalResponseNorm(input: Shape(c: 3, h: 2, w: 2), size: 9, alpha: 4, beta: 1.2, k: 0.5),
                           batch: 3, tolerance: 1e-2)
    }
    func testGradientSizeOneAfterDense() throws {
        try checkGradients(LocalResponseNorm(input: Shape(features: 5), size: 1, alpha: 1, beta: 0.75, k: 1),
                           batch: 3, tolerance: 1e-2)
    }

    /// x: (N, C, H, W) with N = 2, C = 6, H = 2, W = 3.
    let shape = Shape(c: 6, h: 2, w: 3), batch = 2
    var x: [Float] { randomArray(batch * shape.count, seed: 21, scale: 2) }

    func forward(_ layer: LocalResponseNorm, _ x: [Float]) throws -> [Float] {
        let h = LayerHarness(layer, batch: batch)
        return try h.forward(x, context: PassContext(training: false))
    }

    /// Also for the β that take square roots instead of powf (0.75, 0.5) and one that does not.
    func testForwardMatchesDirectFormula() throws {
        for size in [1, 2, 3, 4, 5, 8] {
          for beta in [0.75, 0.5, 0.6] {
            let (alpha, k) = (1.5, 2.0)
            let y = try forward(LocalResponseNorm(input: shape, size: size, alpha: Float(alpha), beta: Float(beta), k: Float(k)), x)
            let x = self.x, C = shape.c, S = shape.spatial
            for n in 0..<batch {
                for c in 0..<C {
                    for i in 0..<S {
                        // PyTorch's window: size/2 channels before c, (size−1)/2 after.
                        var sum = 0.0
                        for j in (c - size / 2)...(c + (size - 1) / 2) where j >= 0 && j < C {
                            sum += Double(x[(n * C + j) * S + i]) * Double(x[(n * C + j) * S + i])
                        }
                        let at = (n * C + c) * S + i
                        let want = Double(x[at]) / pow(k + alpha / Double(size) * sum, beta)
                        XCTAssertEqual(Double(y[at]), want, accuracy: 1e-6 * max(1, abs(want)), "size \(size) beta \(beta) at \(at)")
                    }
                }
            }
          }
        }
    }

    /// Forward values and the input gradient for a fixed dy against PyTorch (float64).
    func testMatchesPyTorch() throws {
        let script = """
        import sys, torch, torch.nn.functional as F
        n, c, h, w = map(int, sys.argv[1:5])
        for config in sys.argv[7].split(';'):
            size, alpha, beta, k = config.split(',')
            x = torch.tensor([float(v) for v in sys.argv[5].split(',')], dtype=torch.float64).reshape(n, c, h, w).requires_grad_()
            dy = torch.tensor([float(v) for v in sys.argv[6].split(',')], dtype=torch.float64).reshape(n, c, h, w)
            y = F.local_response_norm(x, int(size), alpha=float(alpha), beta=float(beta), k=float(k))
            y.backward(dy)
            print(*[repr(v) for v in y.flatten().tolist()], *[repr(v) for v in x.grad.flatten().tolist()])
        """
        let x = self.x, dy = randomArray(x.count, seed: 22)
        let configs: [(Int, Float, Float, Float)] = [(5, 1e-4, 0.75, 2), (5, 1.5, 0.75, 2), (4, 2, 0.5, 1), (3, 0.8, 1.3, 0.7)]
        let args = [batch, shape.c, shape.h, shape.w].map { "\($0)" } + [x, dy].map { $0.map { "\($0)" }.joined(separator: ",") }
            + [configs.map { "\($0.0),\($0.1),\($0.2),\($0.3)" }.joined(separator: ";")]
        var all = try python(script, args)[...]
        XCTAssertEqual(all.count, configs.count * 2 * x.count)
        for (size, alpha, beta, k) in configs {
            let torch = Array(all.prefix(2 * x.count)); all = all.dropFirst(2 * x.count)
            let layer = LocalResponseNorm(input: shape, size: size, alpha: alpha, beta: beta, k: k)
            let h = LayerHarness(layer, batch: batch)
            let (dx, _) = try h.gradients(x, dy, context: PassContext(training: true))
            let y = try h.forward(x, context: PassContext(training: true))
            var worstY = 0.0, worstDx = 0.0
            for i in 0..<x.count {
                worstY = max(worstY, abs(Double(y[i]) - torch[i]) / max(1, abs(torch[i])))
                worstDx = max(worstDx, abs(Double(dx[i]) - torch[x.count + i]) / max(1, abs(torch[x.count + i])))
            }
            XCTAssertLessThan(worstY, 1e-5, "forward, size \(size) alpha \(alpha)")
            XCTAssertLessThan(worstDx, 1e-5, "input gradient, size \(size) alpha \(alpha)")
        }
    }

    func testBuildsFromSpec() throws {
        let json = """
        {"name":"alex","input":[8,8,1],"layers":[
          {"type":"conv2d","filters":6,"kernel":3,"padding":"same"},
          {"type":"lrn","size":5,"alpha":1e-4,"beta":0.75,"k":2},
          {"type":"flatten"},{"type":"dense","units":3}]}
        """
        let model = try Model(spec: ModelSpec.decode(Data(json.utf8), source: "alex.json"))
        let lrn = try XCTUnwrap(model.layers[1] as? LocalResponseNorm)
        XCTAssertEqual(lrn.kind, .lrn)
        XCTAssertEqual(lrn.outputShape, Shape(c: 6, h: 8, w: 8))
        XCTAssertEqual(lrn.size, 5)
        XCTAssertEqual(lrn.alpha, 1e-4); XCTAssertEqual(lrn.beta, 0.75); XCTAssertEqual(lrn.k, 2)
        XCTAssertEqual(lrn.parameterCount, 0)
        // A training step runs through it.
        model.initialize(seed: 1); model.reserve(batch: 2)
        model.input.pointer.update(from: randomArray(128, seed: 3), count: 128)
        let logits = try model.forward(batch: 2, context: PassContext(training: true))
        let dlogits = [Float](repeating: 0.1, count: 6)
        try model.backward(batch: 2, dlogits: dlogits, context: PassContext(training: true))
        XCTAssertTrue(UnsafeBufferPointer(start: logits, count: 6).allSatisfy(\.isFinite))
        XCTAssertTrue(UnsafeBufferPointer(start: model.gradients, count: model.parameterCount).contains { $0 != 0 })

        // PyTorch's defaults for what is left out; a missing size and bad values are one-line errors.
        var spec = ModelSpec(name: "m", input: [4, 4, 3], layers: [LayerSpec(type: .lrn), .flatten, .dense(2)])
        XCTAssertThrowsError(try Model(spec: spec)) { XCTAssertEqual("\($0)", "layer 0 (lrn): missing 'size'") }
        spec.layers[0].size = 3
        let defaults = try XCTUnwrap(try Model(spec: spec).layers[0] as? LocalResponseNorm)
        XCTAssertEqual([defaults.alpha, defaults.beta, defaults.k], [1e-4, 0.75, 1])
        spec.layers[0].k = 0
        XCTAssertThrowsError(try Model(spec: spec)) { XCTAssertTrue("\($0)".hasPrefix("layer 0 (lrn): 'k' = 0.0 is outside"), "\($0)") }
        spec.layers[0].k = 2; spec.layers[0].size = 0
        XCTAssertThrowsError(try Model(spec: spec)) { XCTAssertTrue("\($0)".hasPrefix("layer 0 (lrn): 'size' = 0 is outside"), "\($0)") }
        let misspelt = spec.canonicalJSON().replacingOccurrences(of: "\"lrn\"", with: "\"localnorm\"")
        XCTAssertThrowsError(try ModelSpec.decode(Data(misspelt.utf8), source: "m.json")) {
            XCTAssertTrue("\($0)".contains("unknown type 'localnorm' (known: conv2d, dense, batchnorm, maxpool2d, flatten, dropout, relu, elu, lrn)"), "\($0)")
        }
    }
}
