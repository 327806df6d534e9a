import Engine
import Foundation
import XCTest

/// Learning-rate policies: each formula at pinned steps, PyTorch's schedulers over whole runs,
/// the command-line forms and their errors.
final class ScheduleTests: XCTestCase {
    func rel(_ a: Double, _ b: Double, _ tol: Double = 1e-12, _ what: String = "", line: UInt = #line) {
        XCTAssertEqual(a, b, accuracy: tol * max(abs(b), 1e-300), what, line: line)
    }

    func testConstantAndWarmup() {
        let p = LearningRatePolicy(base: 0.1, warmupSteps: 4)
        for (s, want) in zip(0...6, [0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1]) { XCTAssertEqual(p.rate(at: s), want, accuracy: 1e-16) }
        XCTAssertEqual(LearningRatePolicy(base: 0.1).rate(at: 0), 0.1)
    }

    func testExponentialIsKerasExponentialDecay() {
        let smooth = LearningRatePolicy(base: 0.1, schedule: .exponential(decayRate: 0.96, decaySteps: 100, staircase: false))
        rel(smooth.rate(at: 0), 0.1)
        rel(smooth.rate(at: 50), 0.1 * pow(0.96, 0.5))
        rel(smooth.rate(at: 250), 0.1 * pow(0.96, 2.5))
        let stair = LearningRatePolicy(base: 0.1, schedule: .exponential(decayRate: 0.5, decaySteps: 100, staircase: true))
        XCTAssertEqual([0, 99, 100, 199, 200, 450].map { stair.rate(at: $0) }, [0.1, 0.1, 0.05, 0.05, 0.025, 0.1 / 16])
        // After a warm-up the decay counts from its end.
        let warm = LearningRatePolicy(base: 0.1, schedule: .exponential(decayRate: 0.5, decaySteps: 10, staircase: true), warmupSteps: 5)
        for (s, want) in zip([4, 5, 14, 15], [0.08, 0.1, 0.1, 0.05]) { XCTAssertEqual(warm.rate(at: s), want, accuracy: 1e-16) }
    }

    func testCosineIsKerasCosineDecay() {
        let p = LearningRatePolicy(base: 0.2, schedule: .cosine(totalSteps: 100, minFactor: 0.1))
        rel(p.rate(at: 0), 0.2)
        rel(p.rate(at: 50), 0.2 * (0.1 + 0.9 * 0.5))
        rel(p.rate(at: 25), 0.2 * (0.1 + 0.9 * 0.5 * (1 + cos(Double.pi / 4))))
        rel(p.rate(at: 100), 0.02)
        rel(p.rate(at: 1000), 0.02, 1e-12, "stays at the floor after the end")
        let toZero = LearningRatePolicy(base: 1, schedule: .cosine(totalSteps: 10, minFactor: 0), warmupSteps: 10)
        XCTAssertEqual(toZero.rate(at: 5), 0.5)
        XCTAssertEqual(toZero.rate(at: 10), 1)
        XCTAssertEqual(toZero.rate(at: 20), 0, accuracy: 1e-16)
    }

    /// The rates PyTorch's schedulers give over whole runs, one Python process for all
    /// (`scheduler.step()` after each update, so rate i is the i-th update's). Each run is a
    /// scheduler expression over `opt`, `base` and `steps`, and its number of steps.
    func torchRates(_ runs: [(scheduler: String, steps: Int)], base: Double) throws -> [[Double]] {
        let script = """
        import sys, torch
        base = float(sys.argv[1])
        for scheduler, steps in zip(sys.argv[2::2], map(int, sys.argv[3::2])):
            opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
            sched = eval(scheduler)
            for _ in range(steps):
                print(repr(opt.param_groups[0]['lr'])); opt.step(); sched.step()
        """
        var all = try python(script, ["\(base)"] + runs.flatMap { [$0.scheduler, "\($0.steps)"] })[...]
        XCTAssertEqual(all.count, runs.map(\.steps).reduce(0, +))
        return runs.map { run in defer { all = all.dropFirst(run.steps) }; return Array(all.prefix(run.steps)) }
    }

    func testOneCycleMatchesPyTorch() throws {
        let cycles = [(50, 25.0, 0.3, 1e4), (37, 10.0, 0.25, 100.0), (8, 4.0, 0.5, 10.0)]
        let torch = try torchRates(cycles.map { total, peak, pct, fin in
            ("torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=base, total_steps=steps, div_factor=\(peak), "
             + "pct_start=\(pct), final_div_factor=\(fin), anneal_strategy='cos', cycle_momentum=False)", total)
        }, base: 0.01)
        for ((total, peak, pct, fin), rates) in zip(cycles, torch) {
            let p = LearningRatePolicy(base: 0.01, schedule: .oneCycle(totalSteps: total, peakFactor: peak, pctStart: pct, finalFactor: fin))
            for (i, want) in rates.enumerated() { rel(p.rate(at: i), want, 1e-9, "one-cycle \(total) at step \(i)") }
            rel(p.rate(at: 0), 0.01 / peak)
            rel(p.rate(at: total - 1), 0.01 / peak / fin)
            rel(p.rate(at: total + 5), 0.01 / peak / fin, 1e-12, "stays at the end")
            // The peak falls between steps unless pctStart·totalSteps is whole.
            let top = (0..<total).map { p.rate(at: $0) }.max()!
            XCTAssertLessThanOrEqual(top, 0.01); XCTAssertGreaterThan(top, 0.0099)
        }
    }

    func testCosineAndStepMatchPyTorch() throws {
        let torch = try torchRates([
            ("torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40, eta_min=base * 0.05)", 41),
            ("torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)", 30),
        ], base: 0.3)
        let cosine = LearningRatePolicy(base: 0.3, schedule: .cosine(totalSteps: 40, minFactor: 0.05))
        for (i, want) in torch[0].enumerated() { rel(cosine.rate(at: i), want, 1e-9, "cosine at step \(i)") }
        let step = LearningRatePolicy(base: 0.3, schedule: .exponential(decayRate: 0.5, decaySteps: 7, staircase: true))
        for (i, want) in torch[1].enumerated() { rel(step.rate(at: i), want, 1e-12, "step at \(i)") }
    }

    func testParseForms() throws {
        func parse(_ s: String, warmup: Int = 0) throws -> LearningRatePolicy {
            try LearningRatePolicy.parse(s, base: 0.01, totalSteps: 1000, warmupSteps: warmup)
        }
        XCTAssertEqual(try parse("constant").schedule, .constant)
        XCTAssertEqual(try parse("exponential:0.96:1000").schedule, .exponential(decayRate: 0.96, decaySteps: 1000, staircase: false))
        XCTAssertEqual(try parse("step:0.5:2000").schedule, .exponential(decayRate: 0.5, decaySteps: 2000, staircase: true))
        XCTAssertEqual(try parse("cosine").schedule, .cosine(totalSteps: 1000, minFactor: 0))
        XCTAssertEqual(try parse("cosine:0.01").schedule, .cosine(totalSteps: 1000, minFactor: 0.01))
        XCTAssertEqual(try parse("onecycle").schedule, .oneCycle(totalSteps: 1000, peakFactor: 25, pctStart: 0.3, finalFactor: 1e4))
        XCTAssertEqual(try parse("onecycle:10:0.3").schedule, .oneCycle(totalSteps: 1000, peakFactor: 10, pctStart: 0.3, finalFactor: 1e4))
        XCTAssertEqual(try parse("OneCycle:10:0.2:100").schedule, .oneCycle(totalSteps: 1000, peakFactor: 10, pctStart: 0.2, finalFactor: 100))
        // Cosine spans what is left after the warm-up, so it ends with the run.
        let warm = try parse("cosine", warmup: 100)
        XCTAssertEqual(warm, LearningRatePolicy(base: 0.01, schedule: .cosine(totalSteps: 900, minFactor: 0), warmupSteps: 100))
        XCTAssertEqual(warm.rate(at: 50), 0.005, accuracy: 1e-16)
        XCTAssertEqual(warm.rate(at: 999), 0.01 * 0.5 * (1 + cos(Double.pi * 899 / 900)), accuracy: 1e-15)
    }

    func testParseErrorsAreOneLine() {
        let bad: [(String, String)] = [
            ("", "unknown schedule ''"),
            ("linear", "unknown schedule 'linear'"),
            ("exponential", "exponential needs the decay rate"),
            ("exponential:0.96", "exponential needs the decay steps"),
            ("step:1.5:100", "the decay rate 1.5 must be in (0, 1]"),
            ("step:0.5:0", "the decay steps '0' must be a whole number ≥ 1"),
            ("step:x:10", "the decay rate 'x' is not a number"),
            ("cosine:2", "the minimum factor 2 must be in [0, 1]"),
            ("cosine:0.1:5", "cosine takes at most 1 value, got 2"),
            ("constant:1", "constant takes at most 0 values, got 1"),
            ("onecycle:0.5", "the peak factor 0.5 must be ≥ 1"),
            ("onecycle:10:1", "the warm-up fraction 1 must be in (0, 1)"),
            ("onecycle:10:nan", "the warm-up fraction 'nan' is not a number"),
            ("plateau", "plateau needs the factor"),
            ("plateau:0.5", "plateau needs the patience in epochs"),
            ("plateau:1:2", "the factor 1 must be in (0, 1)"),
            ("plateau:0.5:0", "the patience in epochs '0' must be a whole number ≥ 1"),
            ("plateau:0.5:2:1", "plateau takes at most 2 values, got 3"),
        ]
        for (text, why) in bad {
            XCTAssertThrowsError(try LearningRatePolicy.parse(text, base: 0.01, totalSteps: 1000)) {
                let s = "\($0)"
                XCTAssertTrue(s.hasPrefix("learning-rate schedule '\(text)': \(why) (forms: constant,"), s)
                XCTAssertFalse(s.contains("\n"), s)
            }
        }
        XCTAssertThrowsError(try LearningRatePolicy.parse("constant", base: 0, totalSteps: 10)) {
            XCTAssertTrue("\($0)".contains("the base rate 0.0 must be positive"), "\($0)")
        }
    }

    /// A pure function of the step that survives a checkpoint's JSON: a resumed run sees the
    /// same rates.
    func testCodableRoundTripKeepsRates() throws {
        let policies = [
            LearningRatePolicy(base: 0.01),
            LearningRatePolicy(base: 0.01, schedule: .exponential(decayRate: 0.9, decaySteps: 7, staircase: true), warmupSteps: 3),
            LearningRatePolicy(base: 0.02, schedule: .cosine(totalSteps: 90, minFactor: 0.01), warmupSteps: 10),
            LearningRatePolicy(base: 0.03, schedule: .oneCycle(totalSteps: 100, peakFactor: 25, pctStart: 0.3, finalFactor: 1e4)),
        ]
        for p in policies {
            let back = try JSONDecoder().decode(LearningRatePolicy.self, from: JSONEncoder().encode(p))
            XCTAssertEqual(back, p)
            for s in [0, 1, 5, 50, 99, 150] { XCTAssertEqual(back.rate(at: s).bitPattern, p.rate(at: s).bitPattern) }
        }
    }

    /// `ReduceLROnPlateau` as Keras's `on_epoch_end` (mode min, min_delta 1e-4, cooldown 0):
    /// a hand trace with an improvement smaller than min_delta and a NaN loss.
    func testPlateauIsKerasReduceLROnPlateau() throws {
        XCTAssertEqual(try LearningRatePolicy.parse("plateau:0.5:2", base: 0.01, totalSteps: 1000).schedule, .plateau(factor: 0.5, patience: 2))
        let p = try LearningRatePolicy.parse("Plateau:0.2:1", base: 0.01, totalSteps: 1000, warmupSteps: 10)
        XCTAssertEqual(p.rate(at: 500), 0.01, "the policy's part is constant; the trainer applies the factor")
        XCTAssertEqual(p.rate(at: 5), 0.005)
        var state = PlateauState()
        let losses = [1.0, 0.9, 0.95, 0.92, 0.85, 0.84995, 0.86, 0.87, .nan]
        //             best  best  wait1 cut   best  <1e-4 wait1 cut  wait1 cut
        let reduced = losses.map { state.update(loss: $0, factor: 0.5, patience: 2) }
        XCTAssertEqual(reduced, [false, false, false, true, false, false, true, false, true])
        XCTAssertEqual(state.factor, 0.125)
        XCTAssertEqual(state.best, 0.85)
        XCTAssertEqual(state.wait, 0)
        // A first NaN is no improvement either (Keras starts from best = inf).
        var first = PlateauState()
        XCTAssertFalse(first.update(loss: .nan, factor: 0.5, patience: 2))
        XCTAssertNil(first.best)
        XCTAssertEqual(first.wait, 1)
        // The state survives a JSON round trip bit for bit (it lives in checkpoints).
        let back = try JSONDecoder().decode(PlateauState.self, from: JSONEncoder().encode(state))
        XCTAssertEqual(back, state)
    }
}
