import Engine
import XCTest

/// The exact sum of micro-batch gradients (`MicroBatchGradients`): the same bits for any order
/// and any grouping of the micro-batches, and within the documented error of the exact sum.
final class MicroBatchGradientsTests: XCTestCase {
    /// A model with two parameter tensors (a 32×48 kernel and 48 biases) and `slots` gradient slots.
    func makeModel(slots: Int) throws -> Model {
        let model = try Model(spec: ModelSpec(name: "sums", input: [1, 1, 32], layers: [.flatten, .dense(48)],
                                              batchSize: 1, learningRate: 1e-3))
        model.microBatch = 1
        model.reserve(batch: slots)
        XCTAssertGreaterThanOrEqual(model.gradientSlots, slots)
        return model
    }

    /// Writes `values[k]` into slot k.
    func fill(_ model: Model, _ values: [[Float]]) {
        for (k, v) in values.enumerated() {
            (model.gradientBuffer.pointer + k * model.parameterCount).update(from: v, count: v.count)
        }
    }

    /// The sum as ranks form it: each group of slots (a rank's micro-batches, in slot order)
    /// converted at the scales agreed for all `values`, the groups' integers added in `order`.
    func sumInGroups(_ values: [[Float]], groups: [Range<Int>], order: [Int]) throws -> [Float] {
        let model = try makeModel(slots: values.count)
        let exact = MicroBatchGradients(model)
        fill(model, values)
        let scales = MicroBatchGradients.scales(maxima: exact.maxima(slots: values.count), addends: values.count)
        let P = model.parameterCount
        var total = [Int64](repeating: 0, count: P)
        var parts: [[Int64]] = []
        for g in groups {
            let m = try makeModel(slots: max(g.count, 1))
            fill(m, Array(values[g]))
            var acc = [Int64](repeating: 0, count: P)
            MicroBatchGradients(m).toFixedPoint(slots: g.count, scales: scales, into: &acc)
            parts.append(acc)
        }
        for i in order { for j in 0..<P { total[j] &+= parts[i][j] } }
        exact.fromFixedPoint(total, scales: scales, range: 0..<P)
        return Array(UnsafeBufferPointer(start: model.gradients, count: P))
    }

    func testAnyOrderAndGroupingGivesTheSameBits() throws {
        var rng = SystemRandomNumberGenerator()
        let n = 13
        let P = try makeModel(slots: 1).parameterCount
        // Magnitudes over six decades with mixed signs, as gradients are.
        let values = (0..<n).map { _ in (0..<P).map { _ in Float.random(in: -1...1) * powf(10, Float.random(in: -6...0)) } }
        let model = try makeModel(slots: n)
        fill(model, values)
        MicroBatchGradients(model).sumLocally(slots: n)
        let reference = Array(UnsafeBufferPointer(start: model.gradients, count: P))
        for trial in 0..<20 {
            // Random cuts into 1…6 contiguous groups, summed in a random order; and a permuted slot order.
            let cuts = Array(Set((0..<Int.random(in: 0...5, using: &rng)).map { _ in Int.random(in: 1..<n, using: &rng) })).sorted()
            let bounds = [0] + cuts + [n]
            let groups = (0..<(bounds.count - 1)).map { bounds[$0] ..< bounds[$0 + 1] }
            let sums = try sumInGroups(values, groups: groups, order: Array(groups.indices).shuffled(using: &rng))
            XCTAssertEqual(sums.map(\.bitPattern), reference.map(\.bitPattern), "trial \(trial): groups \(groups)")
            let permuted = try sumInGroups(values.shuffled(using: &rng), groups: [0..<n], order: [0])
            XCTAssertEqual(permuted.map(\.bitPattern), reference.map(\.bitPattern), "trial \(trial): permuted slots")
        }
        // A float sum in another order would differ somewhere (so the test can tell).
        var forward = [Float](repeating: 0, count: P), backward = [Float](repeating: 0, count: P)
        for k in 0..<n { for j in 0..<P { forward[j] += values[k][j] } }
        for k in (0..<n).reversed() { for j in 0..<P { backward[j] += values[k][j] } }
        XCTAssertNotEqual(forward, backward, "float sums did not depend on the order: the test proves nothing")
    }

    /// The exact sum of Floats, from an error-free expansion in Double (Shewchuk's grow-expansion):
    /// its components add up to the sum exactly; adding them smallest first rounds once, about.
    func exactSum(_ xs: [Float]) -> Double {
        var expansion: [Double] = []
        for x in xs {
            var q = Double(x)
            var next: [Double] = []
            for e in expansion {
                let s = q + e, bv = s - q, err = (q - (s - bv)) + (e - bv)
                if err != 0 { next.append(err) }
                q = s
            }
            next.append(q)
            expansion = next
        }
        return expansion.sorted { abs($0) < abs($1) }.reduce(0, +)
    }

    /// Extreme magnitudes (1e-30 to 1e30 in one tensor), heavy cancellation and Float's largest
    /// values: no overflow, and every element within M·2^(L−51) (n ≤ 2^11) plus half an ulp of the exact sum
    /// (M the tensor's largest |g|, L = ⌈log₂ n⌉), as documented.
    func testExtremeMagnitudesStayWithinTheDocumentedBound() throws {
        let P = try makeModel(slots: 1).parameterCount, kernel = 32 * 48
        let cases: [(String, Int, (Int, Int) -> Float)] = [
            ("1e-30…1e30", 9, { k, j in (j % 2 == 0 ? 1 : -1) * powf(10, Float((j * 7 + k * 13) % 61 - 30)) }),
            ("cancellation", 16, { k, j in
                let big: Float = 1e20 * Float(j % 5 + 1)
                return (k % 2 == 0 ? big : -big) + Float(k) * 1e-3   // ±big cancel, small parts remain
            }),
            // Partial sums near 500·max: Int64 must not overflow; the sums are 0 or past Float's range.
            ("largest floats", 1000, { k, j in
                k % 2 == 0 ? Float.greatestFiniteMagnitude : (j % 3 == 0 ? -Float.greatestFiniteMagnitude : -Float.greatestFiniteMagnitude / 2)
            }),
            ("tiny", 5, { k, j in Float.leastNonzeroMagnitude * Float(k * j % 7 + 1) }),
        ]
        for (name, n, value) in cases {
            let values = (0..<n).map { k in (0..<P).map { j in value(k, j) } }
            let sums = try sumInGroups(values, groups: [0..<(n / 2), (n / 2)..<n], order: [1, 0])
            var L = 0
            while (1 << L) < n { L += 1 }
            for tensor in [0..<kernel, kernel..<P] {
                let M = tensor.map { j in (0..<n).map { abs(values[$0][j]) }.max()! }.max()!
                for j in tensor {
                    let exact = exactSum((0..<n).map { values[$0][j] })
                    let got = sums[j]
                    if abs(exact) > Double(Float.greatestFiniteMagnitude) {
                        XCTAssertEqual(got, exact > 0 ? .infinity : -.infinity, "\(name)[\(j)]: \(got) for \(exact)")
                        continue
                    }
                    let bound = Double(M) * pow(2, Double(L <= 11 ? L - 51 : 2 * L - 62)) + Double(Float(exact).ulp) / 2
                    XCTAssertLessThanOrEqual(abs(Double(got) - exact), bound, "\(name)[\(j)]: \(got) for \(exact)")
                }
            }
        }
    }

    func testZeroAndNonFiniteTensors() throws {
        let model = try makeModel(slots: 3)
        let P = model.parameterCount, kernel = 32 * 48
        var values = [[Float]](repeating: [Float](repeating: 0, count: P), count: 3)
        values[1][5] = .nan          // in the kernel: the whole kernel sums to NaN
        values[2][kernel + 1] = 0    // biases all zero
        fill(model, values)
        MicroBatchGradients(model).sumLocally(slots: 3)
        let g = UnsafeBufferPointer(start: model.gradients, count: P)
        XCTAssertTrue(g[0..<kernel].allSatisfy(\.isNaN))
        XCTAssertTrue(g[kernel..<P].allSatisfy { $0 == 0 })
        values[1][5] = .infinity
        fill(model, values)
        MicroBatchGradients(model).sumLocally(slots: 3)
        XCTAssertTrue(UnsafeBufferPointer(start: model.gradients, count: kernel).allSatisfy(\.isNaN))
    }
}
