import Collective
import Data
import Engine
import Foundation

/// Everything a run trains with, set up once before the first step: the data, the model and
/// its optimizer, the weight average and the best weights, the step, the sampler and the
/// learning-rate policy, and where it starts (`state`).
final class TrainingRun {
    let train: Dataset, validation: Dataset, test: Dataset
    let normalizer: Normalizer
    let augmenter: Augmenter?
    let model: Model
    let adam: Adam
    /// The average of the weights, evaluated and exported in their place (`--ema-decay`).
    let ema: WeightAverage?
    /// The best epoch's weights (early stopping with restore); nil until there is one.
    var best: WeightsSnapshot?
    let step: TrainingStep
    let sampler: EpochSampler
    let policy: LearningRatePolicy
    let state: TrainingState
    let threads: Int
    /// Each rank's host, in rank order.
    let hosts: [String]
    /// The global step of the newest step checkpoint written by this attempt.
    var checkpointStep: Int?
    /// The run's training time so far: what earlier attempts recorded, plus this one's.
    private let watch = Stopwatch(), earlierSeconds: Double
    var elapsed: Double { earlierSeconds + watch.seconds }

    init(train: Dataset, validation: Dataset, test: Dataset, normalizer: Normalizer, augmenter: Augmenter?,
         model: Model, adam: Adam, ema: WeightAverage?, best: WeightsSnapshot?, step: TrainingStep, sampler: EpochSampler,
         policy: LearningRatePolicy, state: TrainingState, threads: Int, hosts: [String]) {
        self.train = train; self.validation = validation; self.test = test; self.normalizer = normalizer
        self.augmenter = augmenter; self.model = model; self.adam = adam; self.ema = ema; self.best = best
        self.step = step; self.sampler = sampler; self.policy = policy; self.state = state
        self.threads = threads; self.hosts = hosts
        earlierSeconds = state.trainSeconds
    }

    /// The rate of the update that follows `step` earlier updates: the policy's, times the
    /// reduction `--lr-schedule plateau` has reached (1 for the other schedules, an exact no-op).
    func rate(at step: Int, _ state: TrainingState) -> Double {
        policy.rate(at: step) * (state.plateau?.factor ?? 1)
    }

    /// Runs `body` with the weights the run evaluates and keeps in the model: the average when
    /// there is one (restored to the live weights afterwards, however `body` ends).
    func withEvaluatedWeights<T>(_ body: () throws -> T) rethrows -> T {
        guard let ema else { return try body() }
        return try ema.withAveragedWeights(in: model.parameters.pointer, body)
    }
}

extension Trainer {
    /// Sets the run up on every rank: threads, the agreement on the configuration, the data, the
    /// model and its weights (rank 0's, fresh or from the checkpoint to resume from). Any rank's
    /// failure stops every rank with that rank's message.
    func setUp() throws -> TrainingRun {
        comm.timeout = options.stepTimeout
        let threads = options.threads ?? defaultThreads(ranksOnNode: comm.localSize)
        Parallel.configure(threads: threads)
        try agreeOnConfiguration()
        // A batch this node cannot hold is refused before any data is read: each rank holds its
        // share of the global batch, and the node holds its ranks.
        try collectively("memory check") {
            let micro = config.microBatch, passes = config.accumulate
            guard passes == 1 || (passes <= (config.batchSize + micro - 1) / micro && config.bnSync == .global) else {
                throw RunError.config("--accumulate \(passes) needs at least \(passes) micro-batches of \(micro) in the global batch of \(config.batchSize) and --bn-sync global; use a smaller --accumulate or a larger --batch-size")
            }
            // Activations for one pass; gradient slots for the micro-batches of all passes.
            let sampler = EpochSampler(count: config.batchSize, batchSize: config.batchSize, seed: 0, rank: 0,
                                       worldSize: comm.size, microBatch: micro, passes: passes)
            try config.model.checkMemory(batch: sampler.largestShare, copies: comm.localSize, microBatch: micro,
                                         gradientSlots: sampler.largestMicroBatchCount)
        }
        comm.phase = "host names"
        let hosts = comm.size > 1 ? try comm.allGather(Array(comm.hostName.utf8)).map { String(decoding: $0, as: UTF8.self) }
                                  : [comm.hostName]

        // Every rank loads the data (from its own disk or a shared one).
        let (train, validation, test, model) = try collectively("loading data") {
            let files = try MNISTFiles.load(directory: config.dataDirectory)
            var test = files.1
            if let limit = config.testLimit, limit < test.count { test = test.subset(0..<limit) }
            var (train, validation) = try splitValidation(files.0, count: config.validationSplit)
            if let limit = config.trainLimit, limit < train.count { train = train.subset(0..<limit) }
            let model = try Model(spec: config.model)
            model.microBatch = config.microBatch
            try requireClassifier(model)
            try requireFits(model, [train, test], directory: config.dataDirectory)
            return (train, validation, test, model)
        }
        let adam = Adam(parameterCount: model.parameterCount, config: config.adam, decayRanges: Adam.kernelRanges(of: model))
        let ema = config.emaDecay > 0 ? WeightAverage(count: model.parameterCount, decay: config.emaDecay) : nil
        var state = TrainingState(config: config)
        state.normalizer = config.standardize ? Normalizer.featurewise(from: train) : .unit
        state.threads = threads
        var best: WeightsSnapshot?

        // Rank 0's weights, fresh or from a checkpoint, reach every rank.
        try collectively("preparing the run dir") {
            try recorder.files?.prepare(fresh: options.resume == .none)
            if let json = options.configurationFile { try recorder.files?.writeConfiguration(json) }
        }
        if let ckpt = try loadCheckpointForResume() {
            if config.keepsBestWeights && ckpt.hasBest { best = WeightsSnapshot(of: model) }
            try collectively("restoring the checkpoint") {
                try ckpt.restore(into: model, adam: adam, best: best, ema: ema, source: "checkpoint")
            }
            let normalizer = state.normalizer
            state = ckpt.state
            state.config = config   // schedule-relevant fields were checked equal; the rest may change
            state.normalizer = normalizer
            state.threads = threads
            if let done = finishedAlready(state) { throw RunFinished(runDirectory: options.runDirectory, reason: done) }
            recorder.line("resuming at epoch \(state.epoch + 1), step \(state.stepInEpoch) (global step \(state.globalStep))")
        } else {
            model.initialize(seed: config.seed)
            try broadcastWeights(model)
        }

        let sampler = EpochSampler(count: train.count, batchSize: config.batchSize, seed: config.seed,
                                   rank: comm.rank, worldSize: comm.size, microBatch: config.microBatch,
                                   passes: config.accumulate)
        let step = TrainingStep(model: model, adam: adam, comm: comm, bnSync: config.bnSync, seed: config.seed)
        step.smoothing = Float(config.labelSmoothing)
        step.reserve(batch: sampler.largestShare)
        step.reserve(microBatches: sampler.largestMicroBatchCount)
        // The schedule spans the epochs; --max-steps only stops the run early (so a capped run
        // resumed without the cap follows the same trajectory as one never capped).
        let policy = try collectively("learning-rate schedule") {
            try LearningRatePolicy.parse(config.lrSchedule, base: config.learningRate,
                                         totalSteps: config.epochs * sampler.stepsPerEpoch, warmupSteps: config.warmupSteps)
        }
        let augmenter = config.augmentation == .none ? nil : Augmenter(config: config.augmentation, seed: config.seed)
        return TrainingRun(train: train, validation: validation, test: test, normalizer: state.normalizer, augmenter: augmenter,
                           model: model, adam: adam, ema: ema, best: best, step: step, sampler: sampler, policy: policy,
                           state: state, threads: threads, hosts: hosts)
    }

    /// Why a run resumed from `state` has nothing left to do, or nil when it has.
    func finishedAlready(_ state: TrainingState) -> String? {
        if state.earlyStopping.stopped { return "it stopped early after epoch \(state.history.count)" }
        if state.epoch >= config.epochs {
            // A decaying schedule spans the epochs, so a resume with more of them is refused (`scheduleFields`).
            let more = config.lrSchedule == "constant" ? "raise --epochs to train on" : "its --lr-schedule \(config.lrSchedule) spans them: train longer in a new run"
            return "it trained its \(config.epochs) epoch\(config.epochs == 1 ? "" : "s") (\(more))"
        }
        if let maxSteps = config.maxSteps, state.globalStep >= maxSteps {
            return "it reached --max-steps \(maxSteps) (raise --max-steps to train on)"
        }
        return nil
    }

    /// Rank 0's weights replace every other rank's, so a difference in initialisation is impossible.
    func broadcastWeights(_ model: Model) throws {
        guard comm.size > 1 else { return }
        comm.phase = "initial weight broadcast"
        let snapshot = WeightsSnapshot(of: model)
        var bytes = snapshot.bytes
        try comm.broadcast(&bytes, root: 0)
        snapshot.load(bytes)
        snapshot.restore(into: model)
    }

    /// The table printed before the first step.
    func configurationRows(_ run: TrainingRun) -> [(String, String)] {
        var perHost: [(String, Int)] = []
        for h in run.hosts {
            if let i = perHost.firstIndex(where: { $0.0 == h }) { perHost[i].1 += 1 } else { perHost.append((h, 1)) }
        }
        let threads = run.threads
        return [
            ("model", "\(config.model.name) (\(run.model.parameterCount) parameters)"),
            ("world", "\(comm.size) rank\(comm.size == 1 ? "" : "s"), \(threads) thread\(threads == 1 ? "" : "s") per rank"),
            ("hosts", perHost.map { "\($0.0) (\($0.1))" }.joined(separator: ", ")),
            ("data", "\(config.dataDirectory): \(run.train.count) train, \(run.validation.count) validation, \(run.test.count) test"),
            ("batch", "\(config.batchSize) global (≤ \(run.sampler.largestShare) per rank), \(run.sampler.stepsPerEpoch) steps per epoch"),
            ("schedule", "\(config.epochs) epoch\(config.epochs == 1 ? "" : "s"), Adam\(config.adam.weightDecay > 0 ? "W (decay \(config.adam.weightDecay))" : ""), seed \(config.seed)"
                + (config.labelSmoothing > 0 ? ", label smoothing \(config.labelSmoothing)" : "")
                + (config.emaDecay > 0 ? ", weight average \(config.emaDecay)" : "")
                + (config.maxSteps.map { ", at most \($0) steps" } ?? "")),
            // The rate as the run resolved it (the schedule spans the epochs), and the flag that chose it.
            ("lr", "\(run.policy) (--lr-schedule \(config.lrSchedule))"
                + (config.lrSchedule.lowercased().hasPrefix("plateau") ? ", cut on val_loss (min delta \(PlateauState.minDelta))" : "")),
            ("batch norm", "\(config.bnSync.rawValue) statistics"),
            ("inputs", (config.standardize ? "featurewise standardised" : "scaled to [0, 1]")
                + (config.augmentation == .none ? ", no augmentation" : ", augmentation \(config.augment): \(describe(config.augmentation))")),
            ("early stop", config.patience > 0 ? "\(config.monitor.rawValue), patience \(config.patience), min delta \(config.minDelta)" : "off"),
            ("run dir", options.runDirectory),
        ]
    }
}
