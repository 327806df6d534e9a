import Collective
import Data
import Dispatch
import Engine
import Foundation

/// How a run starts: fresh, from the newest valid checkpoint in the run dir, or from a file.
public enum ResumeMode: Equatable, Sendable {
    case none, latest
    case file(String)
}

/// Options that shape how a run is carried out but not what it trains.
public struct RunOptions: Sendable {
    public var runDirectory: String = "runs/latest"
    public var resume: ResumeMode = .none
    public var checkpointEvery: Int?
    public var keep: Int = 3
    public var threads: Int?
    public var stepTimeout: Double?
    /// MiB of finished gradients that start a reduce-scatter bucket during backward; 0 = one
    /// exchange after backward. The same on every rank; the sums do not depend on it.
    public var bucketMiB: Double = TrainingStep.defaultBucketMiB
    public var logEvery: Int = 100
    public var level: Console.Level = .normal
    public var progress: Console.Progress = .auto
    public init() {}
}

/// What a finished run reports (the keys of `summary.json`).
public struct RunSummary: Codable, Sendable {
    public var model: String
    public var worldSize: Int
    public var epochsRun: Int
    public var globalSteps: Int
    public var stoppedEarly: Bool
    public var bestEpoch: Int?
    public var valLoss: Double?
    public var valAccuracy: Double?
    public var testLoss: Double
    public var testAccuracy: Double
    public var trainSeconds: Double
    public var imagesPerSecond: Double
    public var allReduceShare: Double
    public var weightsSHA256: String
    public var threadsPerRank: Int
    public var endedBy: String
    /// Each rank's host, in rank order.
    public var hosts: [String]

    enum CodingKeys: String, CodingKey {
        case model, worldSize = "world_size", epochsRun = "epochs_run", globalSteps = "global_steps"
        case stoppedEarly = "stopped_early", bestEpoch = "best_epoch", valLoss = "val_loss"
        case valAccuracy = "val_accuracy", testLoss = "test_loss", testAccuracy = "test_accuracy"
        case trainSeconds = "train_seconds", imagesPerSecond = "images_per_second"
        case allReduceShare = "all_reduce_share", weightsSHA256 = "weights_sha256"
        case threadsPerRank = "threads_per_rank", endedBy = "ended_by", hosts
    }
}

/// A run ended because the job was asked to stop (SIGTERM/SIGINT); a checkpoint was written.
public struct Preempted: Error, CustomStringConvertible {
    public var signal: String, checkpoint: String?, step: Int
    public var description: String {
        "stopped by \(signal) at global step \(step); " +
            (checkpoint.map { "checkpoint \($0) written; rerun the same command with --resume to continue" } ?? "no checkpoint written")
    }
}

/// The data-parallel training loop. Every rank runs it; rank 0 alone prints and writes the
/// run dir, and every decision that changes control flow is agreed collectively.
public final class Trainer {
    public let config: TrainConfig
    public let options: RunOptions
    let comm: Communicator
    let console: Console
    let files: RunFiles?

    public init(config: TrainConfig, options: RunOptions, comm: Communicator) {
        self.config = config; self.options = options; self.comm = comm
        console = Console(enabled: comm.rank == 0, level: options.level, progress: options.progress)
        files = comm.rank == 0 ? RunFiles(directory: options.runDirectory) : nil
    }

    public func run() throws -> RunSummary {
        comm.timeout = options.stepTimeout
        let threads = options.threads ?? defaultThreads(ranksOnNode: comm.localSize)
        Parallel.configure(threads: threads)
        try agreeOnConfiguration()
        comm.phase = "host names"
        let hosts = comm.size > 1 ? try comm.allGather(Array(comm.hostName.utf8)).map { String(decoding: $0, as: UTF8.self) }
                                  : [comm.hostName]

        // Data: every rank loads it (from its own disk or a shared one); any rank's failure
        // stops all of them with that rank's message.
        let (train, validation, test, model) = try collectively("loading data") {
            var (fullTrain, test) = try MNISTFiles.load(directory: config.dataDirectory)
            if let limit = config.testLimit, limit < test.count { test = test.subset(0..<limit) }
            var (train, validation) = try splitValidation(fullTrain, count: config.validationSplit)
            if let limit = config.trainLimit, limit < train.count { train = train.subset(0..<limit) }
            let model = try Model(spec: config.model)
            try requireClassifier(model)
            try requireFits(model, [train, test], directory: config.dataDirectory)
            return (train, validation, test, model)
        }
        let normalizer = config.standardize ? Normalizer.featurewise(from: train) : .unit
        let adam = Adam(parameterCount: model.parameterCount, config: config.adam, decayRanges: Adam.kernelRanges(of: model))
        let ema = config.emaDecay > 0 ? WeightAverage(count: model.parameterCount, decay: config.emaDecay) : nil
        var state = TrainingState(config: config)
        state.normalizer = normalizer
        state.threads = threads
        var best: FloatBuffer?

        // Start: rank 0's weights (fresh or from a checkpoint) reach every rank.
        if comm.rank == 0, let files { try files.prepare() }
        if let ckpt = try loadCheckpointForResume() {
            if config.restoreBestWeights && config.patience > 0 && ckpt.hasBest {
                best = FloatBuffer(count: model.parameterCount + model.stateCount)
            }
            try collectively("restoring the checkpoint") {
                try ckpt.restore(into: model, adam: adam, best: best, ema: ema, source: "checkpoint")
            }
            state = ckpt.state
            state.config = config   // schedule-relevant fields were checked equal; the rest may change
            if let saved = state.threads, saved != threads, comm.rank == 0 {
                Console.warning("the checkpoint was written with \(saved) threads per rank, this run has \(threads): the run continues, but not bit for bit (use --threads \(saved) for that)")
            }
            state.threads = threads
            console.line("resuming at epoch \(state.epoch + 1), step \(state.stepInEpoch) (global step \(state.globalStep))")
        } else {
            model.initialize(seed: config.seed)
            try broadcastWeights(model)
        }

        let tensorBoard = comm.rank == 0
            ? TensorBoardLog(directory: options.runDirectory + "/tensorboard", globalStep: state.globalStep) : nil
        let step = TrainingStep(model: model, adam: adam, comm: comm, bnSync: config.bnSync, seed: config.seed)
        step.smoothing = Float(config.labelSmoothing)
        step.bucketMiB = options.bucketMiB
        let perRank = (config.batchSize + comm.size - 1) / comm.size
        step.reserve(batch: perRank)
        let rng = CounterRNG(seed: config.seed)
        let augmenter = config.augmentation == .none ? nil : Augmenter(config: config.augmentation, seed: config.seed)
        let stepsPerEpoch = (train.count + config.batchSize - 1) / config.batchSize
        // The schedule spans the epochs; --max-steps only stops the run early (so a capped run
        // resumed without the cap follows the same trajectory as one never capped).
        let policy = try collectively("learning-rate schedule") {
            try LearningRatePolicy.parse(config.lrSchedule, base: config.learningRate,
                                         totalSteps: config.epochs * stepsPerEpoch, warmupSteps: config.warmupSteps)
        }
        printConfiguration(model: model, train: train, validation: validation, test: test, threads: threads,
                           stepsPerEpoch: stepsPerEpoch, hosts: hosts)
        StopSignal.install()

        var endedBy = "epochs"
        var stepSeconds = 0.0, allReduceSeconds = 0.0, imagesSeen = 0
        let runStart = DispatchTime.now().uptimeNanoseconds
        let startSeconds = state.trainSeconds
        func elapsed() -> Double { startSeconds + Double(DispatchTime.now().uptimeNanoseconds - runStart) * 1e-9 }
        func imagesPerSecond() -> Double { stepSeconds > 0 ? Double(imagesSeen) / stepSeconds : 0 }
        func allReduceShare() -> Double { stepSeconds > 0 ? allReduceSeconds / stepSeconds : 0 }
        /// Validation (when there is a split) and test metrics of the weights now in the model.
        /// At the end, the test pass also collects the mistakes report.html shows.
        func evaluateSplits(final: Bool = false) throws -> (validation: EvaluationResult?, test: EvaluationResult) {
            let val = validation.count > 0
                ? try evaluate(model: model, dataset: validation, normalizer: normalizer, batchSize: config.evalBatchSize, comm: comm)
                : nil
            return (val, try evaluate(model: model, dataset: test, normalizer: normalizer, batchSize: config.evalBatchSize,
                                      comm: comm, mistakes: final ? 64 : 0))
        }

        epochLoop: while state.epoch < config.epochs && !state.earlyStopping.stopped {
            let permutation = rng.permutation(count: train.count, epoch: state.epoch)
            let epochStart = DispatchTime.now().uptimeNanoseconds
            while state.stepInEpoch < stepsPerEpoch {
                if let maxSteps = config.maxSteps, state.globalStep >= maxSteps { endedBy = "max-steps"; break epochLoop }
                let lo = state.stepInEpoch * config.batchSize
                let globalBatch = min(config.batchSize, train.count - lo)
                let mine = shardRange(of: globalBatch, rank: comm.rank, size: comm.size)
                let t0 = DispatchTime.now().uptimeNanoseconds
                step.reducer.seconds = 0
                let r = try step.run(dataset: train, normalizer: normalizer, augmenter: augmenter, epoch: state.epoch,
                                     indices: permutation[(lo + mine.lowerBound)..<(lo + mine.upperBound)],
                                     offset: mine.lowerBound, globalBatch: globalBatch, globalStep: state.globalStep,
                                     learningRate: policy.rate(at: state.globalStep), stopRequested: StopSignal.requested)
                ema?.update(from: model.parameters.pointer)
                stepSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
                allReduceSeconds += step.reducer.seconds
                imagesSeen += globalBatch
                guard r.lossSum.isFinite else {
                    throw RunError.nonFinite("the training loss became \(r.lossSum) at global step \(state.globalStep) (epoch \(state.epoch + 1)); the last good checkpoint is kept; try a lower --lr")
                }
                state.globalStep += 1; state.stepInEpoch += 1
                state.epochLossSum += r.lossSum; state.epochCorrect += r.correct; state.epochSeen += Double(r.count)
                if let tensorBoard, state.globalStep % options.logEvery == 0 {
                    try tensorBoard.batch(step: state.globalStep, loss: r.lossSum / Double(r.count) + model.l2Loss(),
                                          accuracy: r.correct / Double(r.count),
                                          learningRate: policy.rate(at: state.globalStep - 1),
                                          imagesPerSecond: imagesPerSecond(), allReduceShare: allReduceShare())
                }
                showProgress(state: state, stepsPerEpoch: stepsPerEpoch, epochStart: epochStart,
                             images: imagesSeen, seconds: stepSeconds, l2: model.l2Loss())
                if r.stopRequested {
                    try? tensorBoard?.flush()
                    state.trainSeconds = elapsed()
                    let path = try saveCheckpoint(step, state: state, best: best, ema: ema)
                    throw Preempted(signal: StopSignal.requested ? StopSignal.name : "a signal to another rank",
                                    checkpoint: path, step: state.globalStep)
                }
                if let every = options.checkpointEvery, state.globalStep % every == 0, state.stepInEpoch < stepsPerEpoch {
                    state.trainSeconds = elapsed()
                    _ = try saveCheckpoint(step, state: state, best: best, ema: ema)
                    try waitForRootFiles()
                }
            }

            // Epoch end: evaluate (sharded), log, decide early stopping on rank 0.
            let trainLoss = state.epochLossSum / max(state.epochSeen, 1) + model.l2Loss()
            let trainAccuracy = state.epochCorrect / max(state.epochSeen, 1)
            // With a weight average, the averaged weights are the ones evaluated (and kept as best).
            ema?.swap(with: model.parameters.pointer)
            let (val, tst) = try evaluateSplits()
            let metrics = EpochMetrics(epoch: state.epoch + 1, globalStep: state.globalStep, trainLoss: trainLoss,
                                       trainAccuracy: trainAccuracy, valLoss: val?.loss, valAccuracy: val?.accuracy,
                                       testLoss: tst.loss, testAccuracy: tst.accuracy,
                                       learningRate: policy.rate(at: max(state.globalStep - 1, 0)),
                                       seconds: Double(DispatchTime.now().uptimeNanoseconds - epochStart) * 1e-9)
            state.history.append(metrics)
            let improved = try decideEarlyStopping(&state, metrics: metrics)
            if improved && config.patience > 0 && config.restoreBestWeights {
                if best == nil { best = FloatBuffer(count: model.parameterCount + model.stateCount) }
                best!.pointer.update(from: model.parameters.pointer, count: model.parameterCount)
                (best!.pointer + model.parameterCount).update(from: model.state.pointer, count: model.stateCount)
            }
            ema?.swap(with: model.parameters.pointer)
            state.epoch += 1; state.stepInEpoch = 0
            state.epochLossSum = 0; state.epochCorrect = 0; state.epochSeen = 0
            state.trainSeconds = elapsed()
            printEpoch(metrics, state: state)
            console.line(String(format: "  %.0f images/s, all-reduce %.1f%% of step time, learning rate %.3g, %d global steps",
                                imagesPerSecond(), 100 * allReduceShare(), metrics.learningRate, state.globalStep),
                         level: .verbose)
            try files?.writeMetrics(state.history)
            try tensorBoard?.epoch(metrics)
            try tensorBoard?.epochSpeed(step: state.globalStep, imagesPerSecond: imagesPerSecond(), allReduceShare: allReduceShare())
            _ = try saveCheckpoint(step, state: state, best: best, ema: ema)
            if improved, let files {
                ema?.swap(with: model.parameters.pointer)
                try files.writeCheckpoint(Checkpoint(model: model, adam: nil, state: state), name: "best.safetensors")
                ema?.swap(with: model.parameters.pointer)
            }
            try waitForRootFiles()
            if state.earlyStopping.stopped { endedBy = "early-stopping" }
        }

        // However the run ended: restore the best weights if asked, evaluate, write final files.
        if let best, config.patience > 0, config.restoreBestWeights {
            model.parameters.pointer.update(from: best.pointer, count: model.parameterCount)
            model.state.pointer.update(from: best.pointer + model.parameterCount, count: model.stateCount)
            console.line("restored the weights of epoch \(state.earlyStopping.bestEpoch) (best \(config.monitor.rawValue) \(fmt(state.earlyStopping.best ?? .nan)))")
        } else if let ema {
            ema.swap(with: model.parameters.pointer)   // the averaged weights are the run's result
        }
        let (val, tst) = try evaluateSplits(final: true)
        state.trainSeconds = elapsed()
        let summary = RunSummary(
            model: config.model.name, worldSize: comm.size, epochsRun: state.history.count, globalSteps: state.globalStep,
            stoppedEarly: state.earlyStopping.stopped, bestEpoch: config.patience > 0 ? state.earlyStopping.bestEpoch : nil,
            valLoss: val?.loss, valAccuracy: val?.accuracy, testLoss: tst.loss, testAccuracy: tst.accuracy,
            trainSeconds: state.trainSeconds, imagesPerSecond: imagesPerSecond(), allReduceShare: allReduceShare(),
            weightsSHA256: model.weightsSHA256(), threadsPerRank: threads, endedBy: endedBy, hosts: hosts)
        try verifyIdenticalWeights(summary.weightsSHA256)
        if let files {
            // The result: the weights evaluated (best or averaged), without optimizer state, so it
            // cannot be mistaken for a point to resume from (step checkpoints are).
            try files.writeCheckpoint(Checkpoint(model: model, adam: nil, state: state), name: "final.safetensors")
            try files.writeSummary(summary)
            try tensorBoard?.flush()
            do {
                try RunReport.save(RunReportData(confusion: tst.confusion, mistakes: tst.mistakes,
                                                 data: URL(fileURLWithPath: config.dataDirectory).standardized.path,
                                                 title: "\(config.model.name), \(comm.size) rank\(comm.size == 1 ? "" : "s")"),
                                   runDirectory: options.runDirectory, testSet: test)
            } catch {
                Console.warning("report.html not written: \(error)")
            }
        }
        console.line(String(format: "test accuracy %.2f%%, loss %.4f; weights %@; run dir %@",
                            tst.accuracy * 100, tst.loss, String(summary.weightsSHA256.prefix(16)), options.runDirectory),
                     level: .quiet)
        return summary
    }

    // MARK: Agreement between ranks

    /// Runs `body` on every rank; if it fails on any, every rank throws the first failing
    /// rank's message, so the job ends together with one line.
    func collectively<T>(_ what: String, _ body: () throws -> T) throws -> T {
        let result: Result<T, Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        guard comm.size > 1 else { return try result.get() }
        var message: [UInt8] = []
        if case .failure(let e) = result { message = Array("\(e)".utf8) }
        comm.phase = what
        let all = try comm.allGather(message)
        if let r = all.firstIndex(where: { !$0.isEmpty }) {
            let text = String(decoding: all[r], as: UTF8.self)
            throw RunError.config(all.allSatisfy({ $0 == all[r] }) ? text : "rank \(r): \(text)")
        }
        return try result.get()
    }

    /// Compares the configuration of every rank with rank 0's; all stop on a mismatch.
    func agreeOnConfiguration() throws {
        guard comm.size > 1 else { return }
        comm.phase = "configuration check"
        let mine = config.scheduleFields.merging(["epochs": "\(config.epochs)", "patience": "\(config.patience)",
                                                  "data": config.dataDirectory, "bucket-mib": "\(options.bucketMiB)"]) { a, _ in a }
        let all = try comm.allGather(Array(try JSONEncoder().encode(mine)))
        for (r, bytes) in all.enumerated() {
            let other = (try? JSONDecoder().decode([String: String].self, from: Data(bytes))) ?? [:]
            let reference = (try? JSONDecoder().decode([String: String].self, from: Data(all[0]))) ?? [:]
            let differing = reference.keys.sorted().filter { reference[$0] != other[$0] }
            if let key = differing.first {
                throw RunError.config("rank \(r) was started with different settings than rank 0: \(differing.joined(separator: ", ")) (e.g. \(key): '\(other[key]?.prefix(60) ?? "")' vs '\(reference[key]?.prefix(60) ?? "")'); start every rank with the same command line")
            }
        }
    }

    /// While rank 0 writes files the others would wait in the next collective with
    /// `--step-timeout` running; a slow file system must not look like a stalled rank.
    func waitForRootFiles() throws {
        guard comm.size > 1, let limit = comm.timeout else { return }
        comm.timeout = nil
        defer { comm.timeout = limit }
        comm.phase = "waiting for rank 0's files"
        try comm.barrier()
    }

    func broadcastWeights(_ model: Model) throws {
        guard comm.size > 1 else { return }
        comm.phase = "initial weight broadcast"
        var bytes = [UInt8](UnsafeRawBufferPointer(start: model.parameters.pointer, count: model.parameterCount * 4))
        bytes += [UInt8](UnsafeRawBufferPointer(start: model.state.pointer, count: model.stateCount * 4))
        try comm.broadcast(&bytes, root: 0)
        bytes.withUnsafeBytes { raw in
            memcpy(model.parameters.pointer, raw.baseAddress!, model.parameterCount * 4)
            memcpy(model.state.pointer, raw.baseAddress! + model.parameterCount * 4, model.stateCount * 4)
        }
    }

    /// Every rank must end with the same weights; a difference is a bug worth stopping for.
    func verifyIdenticalWeights(_ hash: String) throws {
        if let d = try comm.firstRankDiffering(from: Array(hash.utf8), phase: "final weight check") {
            throw RunError.diverged("rank \(d.rank) ended with weights \(d.all[d.rank].prefix(16)), rank 0 with \(d.all[0].prefix(16))")
        }
    }

    /// Keras's EarlyStopping, decided on rank 0 and broadcast so every rank leaves together.
    /// Returns whether the monitored metric improved.
    func decideEarlyStopping(_ state: inout TrainingState, metrics: EpochMetrics) throws -> Bool {
        var es = state.earlyStopping
        var improved = false
        if comm.rank == 0, let current = config.monitor == .valLoss ? metrics.valLoss : metrics.valAccuracy {
            let delta = abs(config.minDelta)
            es.wait += 1
            if let b = es.best {
                improved = config.monitor == .valLoss ? current < b - delta : current > b + delta
            } else {
                improved = true
            }
            if improved { es.best = current; es.bestEpoch = metrics.epoch; es.wait = 0 }
            if config.patience > 0 && es.wait >= config.patience && metrics.epoch > 1 { es.stopped = true }
        }
        var bytes = [UInt8](try JSONEncoder().encode(EarlyStoppingDecision(state: es, improved: improved)))
        comm.phase = "early-stopping decision"
        try comm.broadcast(&bytes, root: 0)
        let decision = try JSONDecoder().decode(EarlyStoppingDecision.self, from: Data(bytes))
        state.earlyStopping = decision.state
        return decision.improved
    }

    struct EarlyStoppingDecision: Codable { var state: EarlyStoppingState; var improved: Bool }

    // MARK: Checkpoints

    /// Rank 0 reads and validates the checkpoint to resume from and broadcasts its bytes, so only
    /// rank 0 needs the file. Returns nil for a fresh start.
    func loadCheckpointForResume() throws -> Checkpoint? {
        // Rank 0 answers with [status] + payload: 0 fresh, 1 checkpoint bytes, 2 error text.
        var message: [UInt8] = [0]
        if comm.rank == 0 {
            do {
                if let (path, bytes) = try findResumeCheckpoint() {
                    let ckpt = try Checkpoint.parse(bytes, source: path)
                    try checkCompatible(ckpt, source: path)
                    message = [1] + bytes
                    console.line("resuming from \(path)")
                }
            } catch {
                message = [2] + Array("\(error)".utf8)
            }
        }
        if comm.size > 1 {
            comm.phase = "checkpoint broadcast"
            try comm.broadcast(&message, root: 0)
        }
        switch message[0] {
        case 1: return try Checkpoint.parse(Array(message[1...]), source: "checkpoint from rank 0")
        case 2: throw RunError.resume(String(decoding: message[1...], as: UTF8.self))
        default: return nil
        }
    }

    func findResumeCheckpoint() throws -> (String, [UInt8])? {
        switch options.resume {
        case .none: return nil
        case .file(let path): return (path, try readFile(path, limit: 4 << 30, what: "checkpoint"))
        case .latest:
            guard let files else { return nil }
            for path in files.stepCheckpoints().reversed() {
                let bytes = try readFile(path, limit: 4 << 30, what: "checkpoint")
                do {
                    _ = try Checkpoint.parse(bytes, source: path)
                    return (path, bytes)
                } catch {
                    Console.warning("skipping \(path): \(error)")
                }
            }
            console.line("no checkpoint in \(files.checkpointDirectory): starting fresh")
            return nil
        }
    }

    func checkCompatible(_ ckpt: Checkpoint, source: String) throws {
        guard ckpt.spec.layers == config.model.layers, ckpt.spec.input == config.model.input else {
            throw CheckpointError.otherModel(source, "it holds model '\(ckpt.spec.name)', the run uses '\(config.model.name)'")
        }
        guard ckpt.hasAdam else {
            throw CheckpointError.mismatch(source, "it holds no optimizer state (a final or best checkpoint); resume from one of the run's step-*.safetensors")
        }
        let theirs = ckpt.state.config.scheduleFields, mine = config.scheduleFields
        let differing = mine.keys.sorted().filter { $0 != "model" && mine[$0] != theirs[$0] }
        if !differing.isEmpty {
            throw CheckpointError.mismatch(source, differing.map { "--\($0) is \(mine[$0]!) here, \(theirs[$0] ?? "?") in the checkpoint" }.joined(separator: "; "))
        }
    }

    /// Rank 0 writes a step checkpoint (atomically) and prunes old ones; returns its path.
    /// Every rank calls it: Adam's moments are first gathered from the ranks that own them.
    func saveCheckpoint(_ step: TrainingStep, state: TrainingState, best: FloatBuffer?, ema: WeightAverage?) throws -> String? {
        try step.gatherOptimizerState()
        guard let files else { return nil }
        let ckpt = Checkpoint(model: step.model, adam: step.adam, state: state, best: best, ema: ema)
        let path = try files.writeCheckpoint(ckpt, name: RunFiles.stepName(state.globalStep))
        files.prune(keep: options.keep)
        return path
    }

    // MARK: Output

    func printConfiguration(model: Model, train: Dataset, validation: Dataset, test: Dataset, threads: Int, stepsPerEpoch: Int,
                            hosts: [String]) {
        guard console.enabled else { return }
        var perHost: [(String, Int)] = []
        for h in hosts {
            if let i = perHost.firstIndex(where: { $0.0 == h }) { perHost[i].1 += 1 } else { perHost.append((h, 1)) }
        }
        let rows: [(String, String)] = [
            ("model", "\(config.model.name) (\(model.parameterCount) parameters)"),
            ("world", "\(comm.size) rank\(comm.size == 1 ? "" : "s"), \(threads) thread\(threads == 1 ? "" : "s") per rank"),
            ("hosts", perHost.map { "\($0.0) (\($0.1))" }.joined(separator: ", ")),
            ("data", "\(config.dataDirectory): \(train.count) train, \(validation.count) validation, \(test.count) test"),
            ("batch", "\(config.batchSize) global (≤ \((config.batchSize + comm.size - 1) / comm.size) per rank), \(stepsPerEpoch) steps per epoch"),
            ("schedule", "\(config.epochs) epochs, Adam\(config.adam.weightDecay > 0 ? "W (decay \(config.adam.weightDecay))" : "") lr \(config.learningRate) \(config.lrSchedule)"
                + (config.warmupSteps > 0 ? " after \(config.warmupSteps) warm-up steps" : "") + ", seed \(config.seed)"
                + (config.labelSmoothing > 0 ? ", label smoothing \(config.labelSmoothing)" : "")
                + (config.emaDecay > 0 ? ", weight average \(config.emaDecay)" : "")
                + (config.maxSteps.map { ", at most \($0) steps" } ?? "")),
            ("batch norm", "\(config.bnSync.rawValue) statistics"),
            ("inputs", (config.standardize ? "featurewise standardised" : "scaled to [0, 1]")
                + (config.augmentation == .none ? ", no augmentation" : ", augmentation \(config.augment): \(describe(config.augmentation))")),
            ("early stop", config.patience > 0 ? "\(config.monitor.rawValue), patience \(config.patience), min delta \(config.minDelta)" : "off"),
            ("run dir", options.runDirectory),
        ]
        for (k, v) in rows { console.line(k.padding(toLength: 11, withPad: " ", startingAt: 0) + v) }
    }

    func showProgress(state: TrainingState, stepsPerEpoch: Int, epochStart: UInt64, images: Int, seconds: Double, l2: Double) {
        guard console.enabled else { return }
        let s = state.stepInEpoch
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - epochStart) * 1e-9
        let loss = state.epochLossSum / max(state.epochSeen, 1) + l2
        let acc = state.epochCorrect / max(state.epochSeen, 1)
        let eta = s > 0 ? elapsed / Double(s) * Double(stepsPerEpoch - s) : .nan
        let rate = seconds > 0 ? Double(images) / seconds : 0
        let text = String(format: "epoch %d/%d %d/%d %@ eta %@ %.0f img/s loss %.4f acc %.4f",
                          state.epoch + 1, config.epochs, s, stepsPerEpoch, formatDuration(elapsed), formatDuration(eta),
                          rate, loss, acc)
        if console.isTerminal {
            console.progress(text)
        } else if s % options.logEvery == 0 {
            console.line(text, level: .normal)
        }
    }

    func printEpoch(_ m: EpochMetrics, state: TrainingState) {
        var text = String(format: "epoch %d/%d %@ loss %.4f acc %.4f", m.epoch, config.epochs, formatDuration(m.seconds),
                          m.trainLoss, m.trainAccuracy)
        if let vl = m.valLoss, let va = m.valAccuracy { text += String(format: " val_loss %.4f val_acc %.4f", vl, va) }
        text += String(format: " test_loss %.4f test_acc %.4f", m.testLoss, m.testAccuracy)
        if config.patience > 0 {
            if state.earlyStopping.stopped {
                text += " (early stop: no improvement of \(config.monitor.rawValue) for \(config.patience) epoch\(config.patience == 1 ? "" : "s"))"
            } else if state.earlyStopping.bestEpoch == m.epoch {
                text += " (best)"
            }
        }
        console.line(text)
    }
}

/// Why a run could not go on; one line each.
public enum RunError: Error, CustomStringConvertible {
    case config(String), resume(String), nonFinite(String), diverged(String)
    public var description: String {
        switch self {
        case .config(let m): return m
        case .resume(let m): return m
        case .nonFinite(let m): return m
        case .diverged(let m): return "ranks diverged: \(m)"
        }
    }
}

func fmt(_ v: Double) -> String { String(format: "%.4f", v) }

/// Threads per rank when `--threads` is not given: the node's cores shared among its ranks,
/// or, when the launcher bound this rank to fewer cores than that (`--bind-to core` with
/// `PE=n`), the cores it was given.
func defaultThreads(ranksOnNode: Int) -> Int {
    let online = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    let share = max(1, online / max(ranksOnNode, 1))
    // Cpus_allowed in /proc/self/status is the affinity mask in hex words.
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) else { return share }
    let allowed = line.dropFirst("Cpus_allowed:".count).reduce(0) { n, ch in n + (ch.hexDigitValue?.nonzeroBitCount ?? 0) }
    return allowed > 0 && allowed < online ? allowed : share
}

/// `rotation ±20°, shear ±3°, fill nearest`.
func describe(_ a: AugmentationConfig) -> String {
    var parts: [String] = []
    if a.rotationDegrees > 0 { parts.append("rotation ±\(a.rotationDegrees)°") }
    if a.shearDegrees > 0 { parts.append("shear ±\(a.shearDegrees)°") }
    if a.translate > 0 { parts.append("shift ±\(a.translate)") }
    if a.zoom > 0 { parts.append("zoom ±\(a.zoom)") }
    if let e = a.elastic { parts.append("elastic α \(e.alpha) σ \(e.sigma)") }
    switch a.fill {
    case .nearest: parts.append("fill nearest")
    case .constant(let v): parts.append("fill \(v)")
    }
    return parts.joined(separator: ", ")
}

/// The data's images have the model's input shape and its labels fit the model's outputs.
func requireFits(_ model: Model, _ datasets: [Dataset], directory: String) throws {
    for d in datasets where model.inputShape != Shape(c: d.channels, h: d.height, w: d.width) {
        throw RunError.config("model '\(model.spec.name)' takes \(model.spec.input) inputs, the data in \(directory) has [\(d.height), \(d.width), \(d.channels)]; check --data")
    }
    let classes = datasets.map(\.classes).max() ?? 0
    guard model.classes >= classes else {
        throw RunError.config("model '\(model.spec.name)' has \(model.classes) outputs, the data in \(directory) has \(classes) classes; check --data")
    }
}

/// Training, evaluation and prediction need a network that ends in class scores.
func requireClassifier(_ model: Model) throws {
    guard model.endsInClassScores else {
        throw RunError.config("model '\(model.spec.name)': the last layer must give class scores (a dense layer), gives \(model.layers.last!.outputShape)")
    }
}
