import Foundation

/// How the learning rate moves after the warm-up, as a multiple of the base rate. Every case
/// is a pure function of the step, so a resumed run continues on exactly the same curve.
///
/// `t` below is the step counted from the end of the warm-up (`step − warmupSteps`), and
/// `base` the policy's base rate.
public enum LearningRateSchedule: Codable, Equatable, Sendable {
    /// `base`.
    case constant
    /// Keras `ExponentialDecay`: `base · decayRate^(t / decaySteps)`, with the exponent
    /// rounded down (`floor`) when `staircase` (a step decay every `decaySteps` steps).
    case exponential(decayRate: Double, decaySteps: Int, staircase: Bool)
    /// Keras `CosineDecay` with `alpha = minFactor` (also PyTorch `CosineAnnealingLR` with
    /// `eta_min = base · minFactor`, `T_max = totalSteps`):
    /// `base · (minFactor + (1 − minFactor) · ½(1 + cos(π · min(t, totalSteps) / totalSteps)))`,
    /// so `base` at t = 0 and `base · minFactor` from t = totalSteps on.
    case cosine(totalSteps: Int, minFactor: Double)
    /// PyTorch `OneCycleLR` (two phases, `anneal_strategy="cos"`) with `max_lr = base`,
    /// `div_factor = peakFactor`, `pct_start = pctStart`, `final_div_factor = finalFactor`:
    /// the rate starts at `base / peakFactor`, rises by a cosine to `base` at step
    /// `pctStart · totalSteps − 1`, and falls by a cosine to `base / peakFactor / finalFactor`
    /// at step `totalSteps − 1`, where it stays.
    case oneCycle(totalSteps: Int, peakFactor: Double, pctStart: Double, finalFactor: Double)
    /// Keras `ReduceLROnPlateau` on `val_loss` (`min_delta` 1e-4, `cooldown` 0, `min_lr` 0):
    /// `base` here; the trainer multiplies it by `PlateauState.factor`, which drops by `factor`
    /// after `patience` epochs without an improvement (the one schedule that is not a function
    /// of the step alone, so its state lives in the checkpoint).
    case plateau(factor: Double, patience: Int)

    /// The rate at `t` steps after the warm-up, for a base rate of `base`.
    public func rate(base: Double, at t: Int) -> Double {
        let t = max(t, 0)
        switch self {
        case .constant, .plateau:
            return base
        case .exponential(let decayRate, let decaySteps, let staircase):
            var p = Double(t) / Double(max(decaySteps, 1))
            if staircase { p = p.rounded(.down) }
            return base * pow(decayRate, p)
        case .cosine(let totalSteps, let minFactor):
            let total = max(totalSteps, 1)
            let cosine = 0.5 * (1 + cos(Double.pi * Double(min(t, total)) / Double(total)))
            return base * ((1 - minFactor) * cosine + minFactor)
        case .oneCycle(let totalSteps, let peakFactor, let pctStart, let finalFactor):
            let start = base / peakFactor, final = start / finalFactor
            // PyTorch's phase ends: float(pct_start · total_steps) − 1, then total_steps − 1.
            let peakStep = pctStart * Double(totalSteps) - 1, lastStep = Double(totalSteps - 1)
            let s = Double(t)
            func anneal(_ from: Double, _ to: Double, _ pct: Double) -> Double {
                to + (from - to) / 2 * (cos(Double.pi * min(max(pct, 0), 1)) + 1)
            }
            if s <= peakStep {
                return anneal(start, base, peakStep > 0 ? s / peakStep : 1)
            }
            let span = lastStep - peakStep
            return anneal(base, final, span > 0 ? (s - peakStep) / span : 1)
        }
    }
}

/// The learning rate of every step: a linear warm-up from 0 to `base` over `warmupSteps`
/// steps (Keras `CosineDecay(warmup_target=…)` / timm with `warmup_lr_init = 0`: the rate at
/// step s < warmupSteps is `base · s / warmupSteps`, so the very first update has rate 0),
/// then `schedule` on the steps counted from the end of the warm-up.
///
/// `step` is the number of updates already applied (the trainer's global step before the
/// update; 0 for the first), as Keras passes `optimizer.iterations` and PyTorch schedulers
/// count `scheduler.step()` calls.
public struct LearningRatePolicy: Codable, Equatable, Sendable, CustomStringConvertible {
    public var base: Double
    public var schedule: LearningRateSchedule
    public var warmupSteps: Int

    public init(base: Double, schedule: LearningRateSchedule = .constant, warmupSteps: Int = 0) {
        self.base = base; self.schedule = schedule; self.warmupSteps = warmupSteps
    }

    /// The rate of the update that follows `step` earlier updates.
    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return base * Double(max(step, 0)) / Double(warmupSteps) }
        return schedule.rate(base: base, at: step - warmupSteps)
    }

    public var description: String {
        let warm = warmupSteps > 0 ? ", \(warmupSteps) warm-up steps" : ""
        switch schedule {
        case .constant:
            return "constant \(base)\(warm)"
        case .exponential(let r, let n, let stair):
            return "\(base) × \(r)^(t/\(n))\(stair ? " (staircase)" : "")\(warm)"
        case .cosine(let n, let m):
            return "cosine \(base) → \(base * m) over \(n) steps\(warm)"
        case .oneCycle(let n, let peak, let pct, let fin):
            return "one-cycle \(base / peak) → \(base) → \(base / peak / fin) over \(n) steps, peak at \(pct)\(warm)"
        case .plateau(let f, let p):
            return "\(base) × \(f) after \(p) epoch\(p == 1 ? "" : "s") without a val_loss improvement\(warm)"
        }
    }

    /// The command-line forms, for help texts and errors.
    public static let forms = "constant, exponential:RATE:STEPS, step:RATE:STEPS, cosine[:MIN_FACTOR], onecycle[:PEAK_FACTOR[:PCT_START[:FINAL_FACTOR]]], plateau:FACTOR:PATIENCE"

    /// Reads a command-line schedule. `totalSteps` is the run's length in updates (cosine and
    /// one-cycle span it, minus the warm-up):
    ///
    /// - `constant`
    /// - `exponential:RATE:STEPS` — smooth, `base · RATE^(t/STEPS)`
    /// - `step:RATE:STEPS` — staircase, multiplied by RATE every STEPS steps
    /// - `cosine`, `cosine:MIN_FACTOR` — to `base · MIN_FACTOR` (default 0) at the end
    /// - `onecycle`, `onecycle:PEAK_FACTOR[:PCT_START[:FINAL_FACTOR]]` — PyTorch's defaults
    ///   25, 0.3, 1e4; `base` is the peak rate
    /// - `plateau:FACTOR:PATIENCE` — Keras `ReduceLROnPlateau(factor, patience)` on val_loss
    public static func parse(_ text: String, base: Double, totalSteps: Int, warmupSteps: Int = 0) throws -> LearningRatePolicy {
        func fail(_ why: String) -> ScheduleError {
            ScheduleError(message: "learning-rate schedule '\(text)': \(why) (forms: \(forms))")
        }
        guard base.isFinite, base > 0 else { throw fail("the base rate \(base) must be positive") }
        guard warmupSteps >= 0 else { throw fail("warm-up steps \(warmupSteps) must not be negative") }
        let parts = text.lowercased().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        let name = parts[0], args = Array(parts.dropFirst())
        func number(_ i: Int, _ what: String, default d: Double? = nil, _ ok: (Double) -> Bool, _ range: String) throws -> Double {
            guard i < args.count else {
                if let d { return d }
                throw fail("\(name) needs \(what)")
            }
            guard let v = Double(args[i]), v.isFinite else { throw fail("\(what) '\(args[i])' is not a number") }
            guard ok(v) else { throw fail("\(what) \(args[i]) must be \(range)") }
            return v
        }
        func steps(_ i: Int, _ what: String) throws -> Int {
            guard i < args.count else { throw fail("\(name) needs \(what)") }
            guard let v = Int(args[i]), v >= 1 else { throw fail("\(what) '\(args[i])' must be a whole number ≥ 1") }
            return v
        }
        func arity(_ most: Int) throws {
            guard args.count <= most else { throw fail("\(name) takes at most \(most) value\(most == 1 ? "" : "s"), got \(args.count)") }
        }
        let span = max(totalSteps - warmupSteps, 1)
        let schedule: LearningRateSchedule
        switch name {
        case "constant":
            try arity(0)
            schedule = .constant
        case "exponential", "step":
            try arity(2)
            let rate = try number(0, "the decay rate", { $0 > 0 && $0 <= 1 }, "in (0, 1]")
            schedule = .exponential(decayRate: rate, decaySteps: try steps(1, "the decay steps"), staircase: name == "step")
        case "cosine":
            try arity(1)
            let m = try number(0, "the minimum factor", default: 0, { $0 >= 0 && $0 <= 1 }, "in [0, 1]")
            guard totalSteps >= 1 else { throw fail("cosine needs the run's length in steps") }
            schedule = .cosine(totalSteps: span, minFactor: m)
        case "onecycle":
            try arity(3)
            let peak = try number(0, "the peak factor", default: 25, { $0 >= 1 }, "≥ 1")
            let pct = try number(1, "the warm-up fraction", default: 0.3, { $0 > 0 && $0 < 1 }, "in (0, 1)")
            let fin = try number(2, "the final factor", default: 1e4, { $0 >= 1 }, "≥ 1")
            guard span >= 2 else { throw fail("onecycle needs a run of at least 2 steps after the warm-up") }
            schedule = .oneCycle(totalSteps: span, peakFactor: peak, pctStart: pct, finalFactor: fin)
        case "plateau":
            try arity(2)
            let factor = try number(0, "the factor", { $0 > 0 && $0 < 1 }, "in (0, 1)")
            schedule = .plateau(factor: factor, patience: try steps(1, "the patience in epochs"))
        default:
            throw fail("unknown schedule '\(name)'")
        }
        return LearningRatePolicy(base: base, schedule: schedule, warmupSteps: warmupSteps)
    }
}

/// `ReduceLROnPlateau`'s state between epochs: the best validation loss, the epochs since it
/// improved and the multiplier of the base rate so far. Saved in checkpoints, so a resumed run
/// reduces the rate at the same epochs as an uninterrupted one.
public struct PlateauState: Codable, Equatable, Sendable {
    /// Keras's default `min_delta`: a loss must fall below `best − minDelta` to count.
    public static let minDelta = 1e-4
    public var best: Double?
    public var wait: Int = 0
    public var factor: Double = 1

    public init() {}

    /// Keras's `on_epoch_end` (mode min, cooldown 0, min_lr 0) for an epoch that ended with
    /// validation loss `loss`; returns whether the rate was reduced. A NaN loss is no improvement.
    public mutating func update(loss: Double, factor reduction: Double, patience: Int) -> Bool {
        if loss < (best ?? .infinity) - Self.minDelta {   // Keras starts from best = inf
            best = loss; wait = 0
            return false
        }
        wait += 1
        guard wait >= patience else { return false }
        factor *= reduction; wait = 0
        return true
    }
}

/// A schedule string the command line could not read, in one line.
public struct ScheduleError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}
