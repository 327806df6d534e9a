import Engine
import Foundation
import XCTest

/// Adam with decoupled weight decay (AdamW), and the moving average of the weights.
final class OptimizerTests: XCTestCase {
    override func tearDown() { Parallel.workers = 1 }

    /// The update before weight decay existed, verbatim (with the square root it now takes from
    /// FastMath, as vectorisable arithmetic): what weightDecay = 0 must reproduce.
    static func plainAdam(_ w: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, m mp: UnsafeMutablePointer<Float>,
                          v vp: UnsafeMutablePointer<Float>, count: Int, step: Int, lr: Double, config: AdamConfig) {
        let t = Double(step)
        let alpha = Float(lr * (1 - pow(config.beta2, t)).squareRoot() / (1 - pow(config.beta1, t)))
        let b1 = Float(config.beta1), b2 = Float(config.beta2), eps = Float(config.epsilon)
        for i in 0..<count {
            let gi = g[i]
            let mi = b1 * mp[i] + (1 - b1) * gi
            let vi = b2 * vp[i] + (1 - b2) * gi * gi
            mp[i] = mi; vp[i] = vi
            w[i] -= alpha * mi / (FastMath.squareRoot(vi) + eps)
        }
    }

    func gradient(_ count: Int, step: Int) -> [Float] { randomArray(count, seed: 100 + UInt64(step), scale: 0.5) }

    func testZeroWeightDecayIsBitwisePlainAdam() {
        let n = 50_000   // large enough to split across workers
        for workers in [1, 2, 3] {
            Parallel.workers = workers
            let adam = Adam(parameterCount: n, config: AdamConfig(), decayRanges: [0..<1000, 20_000..<30_000])
            var w = randomArray(n, seed: 7), wRef = w
            var m = [Float](repeating: 0, count: n), v = m
            for step in 1...4 {
                let g = gradient(n, step: step), lr = 1e-3 * Double(step)
                adam.update(&w, g, learningRate: lr)
                OptimizerTests.plainAdam(&wRef, g, m: &m, v: &v, count: n, step: step, lr: lr, config: AdamConfig())
            }
            XCTAssertEqual(w.map(\.bitPattern), wRef.map(\.bitPattern), "\(workers) workers")
            XCTAssertEqual(adam.m.array.map(\.bitPattern), m.map(\.bitPattern))
            XCTAssertEqual(adam.v.array.map(\.bitPattern), v.map(\.bitPattern))
        }
    }

    /// Decay only inside the ranges, by the scheduled rate, before the Adam step; the same bits
    /// whatever the number of workers (ranges straddle the chunk boundaries).
    func testDecayFollowsMaskAndScheduledRate() {
        let n = 40_001, wd = 0.05
        let ranges = [39_000..<40_001, 5..<17, 10_000..<25_000, 16..<20]   // unsorted, overlapping
        var results: [[Float]] = []
        for workers in [1, 2, 3] {
            Parallel.workers = workers
            let adam = Adam(parameterCount: n, config: AdamConfig(weightDecay: wd), decayRanges: ranges)
            XCTAssertEqual(adam.decayRanges, [5..<20, 10_000..<25_000, 39_000..<40_001])
            var w = randomArray(n, seed: 8)
            let start = w
            var mD = [Double](repeating: 0, count: n), vD = mD, wD = start.map(Double.init)
            let lrs = [1e-2, 5e-3, 2e-2]
            for (s, lr) in lrs.enumerated() {
                let g = gradient(n, step: s)
                adam.update(&w, g, learningRate: lr)
                let t = Double(s + 1)
                let alpha = lr * (1 - pow(0.999, t)).squareRoot() / (1 - pow(0.9, t))
                for i in 0..<n {
                    let gi = Double(g[i])
                    mD[i] = 0.9 * mD[i] + 0.1 * gi; vD[i] = 0.999 * vD[i] + 0.001 * gi * gi
                    let decays = (5..<20).contains(i) || (10_000..<25_000).contains(i) || i >= 39_000
                    if decays { wD[i] *= 1 - lr * wd }
                    wD[i] -= alpha * mD[i] / (vD[i].squareRoot() + 1e-7)
                }
            }
            var worst = 0.0
            for i in 0..<n { worst = max(worst, abs(Double(w[i]) - wD[i])) }
            XCTAssertLessThan(worst, 1e-6, "\(workers) workers")
            results.append(w)
        }
        XCTAssertEqual(results[0].map(\.bitPattern), results[1].map(\.bitPattern))
        XCTAssertEqual(results[0].map(\.bitPattern), results[2].map(\.bitPattern))
    }

    func testDecayWithZeroGradientShrinksOnlyMaskedWeights() {
        let adam = Adam(parameterCount: 4, config: AdamConfig(weightDecay: 0.1), decayRanges: [1..<3])
        var w: [Float] = [1, 1, -2, 1]
        let g = [Float](repeating: 0, count: 4)
        for lr in [0.5, 0.25] { adam.update(&w, g, learningRate: lr) }
        XCTAssertEqual(w, [1, Float(0.95) * Float(0.975), -2 * Float(0.95) * Float(0.975), 1])
        // No ranges: every parameter decays (PyTorch's default).
        let all = Adam(parameterCount: 2, config: AdamConfig(weightDecay: 0.1))
        var u: [Float] = [1, 2]
        all.update(&u, [0, 0], learningRate: 1)
        XCTAssertEqual(u, [0.9, 1.8])
    }

    /// torch.optim.AdamW with a decaying and a non-decaying parameter group and a per-step
    /// learning rate. PyTorch adds ε to √v̂ where Keras adds it to √v; a tiny ε makes that
    /// difference vanish, leaving the decay and the Adam step to compare.
    func testAdamWMatchesPyTorch() throws {
        let n = 12, steps = 5, wd = 0.1
        let lrs = (0..<steps).map { 0.02 / Double($0 + 1) }
        let w0 = randomArray(n, seed: 31)
        let gs = (0..<steps).map { gradient(n, step: $0) }
        let script = """
        import sys, torch
        n, wd = int(sys.argv[1]), float(sys.argv[2])
        lrs = [float(v) for v in sys.argv[3].split(',')]
        w = torch.tensor([float(v) for v in sys.argv[4].split(',')], dtype=torch.float64)
        gs = [torch.tensor([float(v) for v in s.split(',')], dtype=torch.float64) for s in sys.argv[5].split(';')]
        kern, bias = w[:8].clone().requires_grad_(), w[8:].clone().requires_grad_()
        opt = torch.optim.AdamW([{'params': [kern], 'weight_decay': wd}, {'params': [bias], 'weight_decay': 0.0}],
                                lr=lrs[0], betas=(0.9, 0.999), eps=1e-10)
        for lr, g in zip(lrs, gs):
            for group in opt.param_groups: group['lr'] = lr
            kern.grad, bias.grad = g[:8].clone(), g[8:].clone()
            opt.step()
        print(*[repr(v) for v in torch.cat([kern, bias]).tolist()])
        """
        let want = try python(script, ["\(n)", "\(wd)", lrs.map { "\($0)" }.joined(separator: ","),
                                       w0.map { "\($0)" }.joined(separator: ","),
                                       gs.map { $0.map { "\($0)" }.joined(separator: ",") }.joined(separator: ";")])
        XCTAssertEqual(want.count, n)
        let adam = Adam(parameterCount: n, config: AdamConfig(epsilon: 1e-10, weightDecay: wd), decayRanges: [0..<8])
        var w = w0
        for (lr, g) in zip(lrs, gs) { adam.update(&w, g, learningRate: lr) }
        for i in 0..<n { XCTAssertEqual(Double(w[i]), want[i], accuracy: 2e-6, "parameter \(i)") }
        // Without the decay the kernels would land elsewhere: the comparison can fail.
        let plain = Adam(parameterCount: n, config: AdamConfig(epsilon: 1e-10))
        var u = w0
        for (lr, g) in zip(lrs, gs) { plain.update(&u, g, learningRate: lr) }
        XCTAssertGreaterThan((0..<8).map { abs(Double(u[$0]) - want[$0]) }.max()!, 1e-4)
    }

    func testConfigDecodesOldCheckpointsAndRoundTrips() throws {
        let old = #"{"learningRate":0.001,"beta1":0.9,"beta2":0.999,"epsilon":1e-07}"#
        let c = try JSONDecoder().decode(AdamConfig.self, from: Data(old.utf8))
        XCTAssertEqual(c, AdamConfig())
        XCTAssertEqual(c.weightDecay, 0)
        let w = AdamConfig(learningRate: 3e-4, weightDecay: 0.01)
        XCTAssertEqual(try JSONDecoder().decode(AdamConfig.self, from: JSONEncoder().encode(w)), w)
        XCTAssertThrowsError(try JSONDecoder().decode(AdamConfig.self, from: Data(#"{"beta1":0.9}"#.utf8)))
    }

    /// The sharded step: each of three "ranks" adds L2 and updates only its own range (its other
    /// moments go stale), then the weights and moments are gathered from the owners. That is bit
    /// for bit the whole update, with weight decay ranges straddling the shard boundaries.
    func testShardedUpdateIsBitwiseTheWholeUpdate() throws {
        Parallel.workers = 2
        // L2 on a kernel that straddles the shard boundaries.
        let model = try Model(spec: ModelSpec(name: "l2", input: [6, 6, 1], layers: [
            .conv(4, kernel: 3, l2: 0.01), .flatten, .dense(30, l2: 0.02), .dense(10)], batchSize: 4, learningRate: 1e-3))
        model.initialize(seed: 3)
        let n = model.parameterCount, ranks = 3
        let config = AdamConfig(weightDecay: 0.05)
        let decay = Adam.kernelRanges(of: model)
        let shards = (0..<ranks).map { r in r * n / ranks ..< (r + 1) * n / ranks }
        XCTAssertTrue(decay.contains { r in shards.contains { r.contains($0.lowerBound) && $0.lowerBound > r.lowerBound } },
                      "a decayed (and L2) kernel should straddle a shard boundary")
        let start = model.parameters.array
        let whole = Adam(parameterCount: n, config: config, decayRanges: decay)
        let perRank = (0..<ranks).map { _ in Adam(parameterCount: n, config: config, decayRanges: decay) }
        var w = start, wRanks = Array(repeating: start, count: ranks)
        for step in 1...3 {
            let g = gradient(n, step: step), lr = 1e-3 * Double(step)
            // The whole update, as a single process takes it.
            model.parameters.pointer.update(from: w, count: n)
            model.gradients.update(from: g, count: n)
            model.addL2Gradients()
            whole.update(model.parameters.pointer, model.gradients, learningRate: lr)
            w = model.parameters.array
            // Each rank: its shard only, from the same summed gradient; then the all-gather.
            for r in 0..<ranks {
                model.parameters.pointer.update(from: wRanks[r], count: n)
                model.gradients.update(from: g, count: n)
                model.addL2Gradients(in: shards[r])
                perRank[r].update(model.parameters.pointer, model.gradients, learningRate: lr, range: shards[r])
                wRanks[r] = model.parameters.array
            }
            let gathered = shards.indices.flatMap { r in wRanks[r][shards[r]] }
            wRanks = Array(repeating: gathered, count: ranks)
        }
        XCTAssertEqual(wRanks[0].map(\.bitPattern), w.map(\.bitPattern))
        let m = shards.indices.flatMap { r in perRank[r].m.array[shards[r]] }
        let v = shards.indices.flatMap { r in perRank[r].v.array[shards[r]] }
        XCTAssertEqual(m.map(\.bitPattern), whole.m.array.map(\.bitPattern))
        XCTAssertEqual(v.map(\.bitPattern), whole.v.array.map(\.bitPattern))
        XCTAssertNotEqual(perRank[0].m.array, whole.m.array, "a rank's moments outside its shard are stale")
    }

    func testKernelRangesAreTheModelsKernels() throws {
        let model = try Model(spec: .seed)
        let ranges = Adam.kernelRanges(of: model)
        let kernels = model.tensors.filter { $0.isKernel }
        XCTAssertEqual(ranges.count, 4)   // two convs, two denses
        XCTAssertEqual(ranges.map(\.count).reduce(0, +), kernels.map(\.count).reduce(0, +))
        for t in model.tensors where t.region == .parameters && !t.isKernel {
            XCTAssertFalse(ranges.contains { $0.contains(t.offset) }, "\(t.name) must not decay")
        }
        XCTAssertTrue(ranges.contains(0..<45))   // layers.0.weight: 5 × 1 × 3 × 3
    }

    // MARK: - Moving average of the weights

    func testEffectiveDecayWarmsUp() {
        XCTAssertEqual(WeightAverage.effectiveDecay(0.999, updates: 0), 0.1)
        XCTAssertEqual(WeightAverage.effectiveDecay(0.999, updates: 1), 2.0 / 11)
        XCTAssertEqual(WeightAverage.effectiveDecay(0.999, updates: 90), 0.91)
        XCTAssertEqual(WeightAverage.effectiveDecay(0.999, updates: 8990), 0.999)   // (1+n)/(10+n) = 0.999 here
        XCTAssertEqual(WeightAverage.effectiveDecay(0.999, updates: 100_000), 0.999)
        XCTAssertEqual(WeightAverage.effectiveDecay(0.5, updates: 3), 4.0 / 13)
        XCTAssertEqual(WeightAverage.effectiveDecay(0.5, updates: 20), 0.5)
    }

    func testAverageFollowsTheFormula() {
        let n = 30_000
        for workers in [1, 2] {
            Parallel.workers = workers
            let avg = WeightAverage(count: n, decay: 0.9)
            var shadow = [Double](repeating: 0, count: n)
            for u in 0..<25 {
                let w = randomArray(n, seed: 50 + UInt64(u))
                w.withUnsafeBufferPointer { avg.update(from: $0.baseAddress!) }
                if u == 0 {
                    shadow = w.map(Double.init)
                } else {
                    let d = min(0.9, Double(1 + u) / Double(10 + u))
                    for i in 0..<n { shadow[i] = d * shadow[i] + (1 - d) * Double(w[i]) }
                }
                if u == 0 { XCTAssertEqual(avg.shadow.array, w, "starts as a copy") }
            }
            XCTAssertEqual(avg.updates, 25)
            var worst = 0.0
            for i in 0..<n { worst = max(worst, abs(Double(avg.shadow.pointer[i]) - shadow[i])) }
            XCTAssertLessThan(worst, 1e-6, "\(workers) workers")
        }
    }

    func testAverageOfConstantWeightsIsThemAndScopeRestores() {
        let avg = WeightAverage(count: 3, decay: 0.99)
        let w: [Float] = [1.5, -2, 0.25]
        for _ in 0..<10 { w.withUnsafeBufferPointer { avg.update(from: $0.baseAddress!) } }
        XCTAssertEqual(avg.shadow.array, [1.5, -2, 0.25])
        let live = FloatBuffer(count: 3)
        live.pointer.update(from: [7, 8, 9], count: 3)
        let seen = avg.withAveragedWeights(in: live.pointer) { live.array }
        XCTAssertEqual(seen, [1.5, -2, 0.25], "the averaged weights inside the scope")
        XCTAssertEqual(live.array, [7, 8, 9]); XCTAssertEqual(avg.shadow.array, [1.5, -2, 0.25])
        struct Failure: Error {}
        XCTAssertThrowsError(try avg.withAveragedWeights(in: live.pointer) { throw Failure() })
        XCTAssertEqual(live.array, [7, 8, 9], "an error inside the scope still restores the live weights")
        XCTAssertEqual(avg.shadow.array, [1.5, -2, 0.25])
    }
}
