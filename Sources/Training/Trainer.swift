import Collective
import Data
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
    public var logEvery: Int = 100
    /// Evaluate the test set after every epoch too (it is always evaluated once, at the end).
    public var testEveryEpoch = false
    /// Times `distcnn launch` relaunched this job after losing a node (recorded in summary.json).
    public var restarts: Int = 0
    public var level: Console.Level = .normal
    public var progress: Console.Progress = .auto
    /// The command that started the run and the program's version, for report.html.
    public var commandLine: [String] = []
    public var version = ""
    /// The run's settings as `train --config` reads them, written to `RUN_DIR/config.json`.
    public var configurationFile: String?
    public init() {}
}

/// What a finished run reports (the keys of `summary.json`).
public struct RunSummary: Codable, Sendable {
    public var model: String
    public var worldSize: Int
    public var epochsRun: Int
    public var globalSteps: Int
    public var stoppedEarly: Bool
    /// The epoch whose weights are the result when early stopping restored them; null otherwise
    /// (written as null, never left out).
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
    /// Times `distcnn launch` relaunched the job after a node loss; `world_size` is the last attempt's.
    public var restarts: Int

    enum CodingKeys: String, CodingKey {
        case model, worldSize = "world_size", epochsRun = "epochs_run", globalSteps = "global_steps"
        case stoppedEarly = "stopped_early", bestEpoch = "best_epoch", valLoss = "val_loss"
        case valAccuracy = "val_accuracy", testLoss = "test_loss", testAccuracy = "test_accuracy"
        case trainSeconds = "train_seconds", imagesPerSecond = "images_per_second"
        case allReduceShare = "all_reduce_share", weightsSHA256 = "weights_sha256"
        case threadsPerRank = "threads_per_rank", endedBy = "ended_by", hosts, restarts
    }

    /// Every key is written, the optional ones as null, so readers can rely on the contract's keys.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(model, forKey: .model); try c.encode(worldSize, forKey: .worldSize)
        try c.encode(epochsRun, forKey: .epochsRun); try c.encode(globalSteps, forKey: .globalSteps)
        try c.encode(stoppedEarly, forKey: .stoppedEarly); try c.encode(bestEpoch, forKey: .bestEpoch)
        try c.encode(valLoss, forKey: .valLoss); try c.encode(valAccuracy, forKey: .valAccuracy)
        try c.encode(testLoss, forKey: .testLoss); try c.encode(testAccuracy, forKey: .testAccuracy)
        try c.encode(trainSeconds, forKey: .trainSeconds); try c.encode(imagesPerSecond, forKey: .imagesPerSecond)
        try c.encode(allReduceShare, forKey: .allReduceShare); try c.encode(weightsSHA256, forKey: .weightsSHA256)
        try c.encode(threadsPerRank, forKey: .threadsPerRank); try c.encode(endedBy, forKey: .endedBy)
        try c.encode(hosts, forKey: .hosts); try c.encode(restarts, forKey: .restarts)
    }
}

/// What ended a run (`ended_by` in summary.json).
enum RunEnd: String {
    case epochs, maxSteps = "max-steps", earlyStopping = "early-stopping"
}

/// A resumed run had nothing left to do: it had finished (all epochs, early stopping or
/// `--max-steps`). Nothing was written.
public struct RunFinished: Error, CustomStringConvertible {
    public var runDirectory: String, reason: String
    public var description: String {
        "\(runDirectory): the run has already finished: \(reason); nothing was changed"
    }
}

/// A run ended because the job was asked to stop (SIGTERM, SIGINT or SIGUSR1 on some rank); a
/// checkpoint was written, and rank 0 left `RUN_DIR/preempted.json` saying so.
public struct Preempted: Error, CustomStringConvertible {
    /// The signal this rank received (0: another rank's signal stopped it).
    public var signal: Int32
    public var checkpoint: String?, step: Int
    public var description: String {
        "stopped by \(signal == 0 ? "a signal to another rank" : StopSignal.name(signal)) at global step \(step); " +
            (checkpoint.map { "checkpoint \($0) written; rerun the same command with --resume to continue" } ?? "no checkpoint written")
    }
    /// 128 + the signal's number, as if it had ended the process (143 when another rank's signal did).
    public var exitCode: Int32 { StopSignal.exitCode(signal == 0 ? SIGTERM : signal) }
}

/// The data-parallel training loop. Every rank runs it; rank 0 alone prints and writes the
/// run dir (through its `RunRecorder`), and every decision that changes control flow is agreed
/// collectively. `run()` only sequences the phases; each phase is a call below it.
public final class Trainer {
    public let config: TrainConfig
    public let options: RunOptions
    let comm: Communicator
    let recorder: RunRecorder

    public init(config: TrainConfig, options: RunOptions, comm: Communicator) {
        self.config = config; self.options = options; self.comm = comm
        let console = Console(enabled: comm.isRoot, level: options.level, progress: options.progress)
        recorder = comm.isRoot ? RankZeroRecorder(config: config, options: options, console: console) : SilentRecorder()
    }

    public func run() throws -> RunSummary {
        defer { recorder.endLiveLine() }           // an error or a stop is printed on a line of its own
        let run = try setUp()                      // data, model, optimizer; fresh or resumed; every rank agrees
        var state = run.state
        try recorder.start(configuration: configurationRows(run), globalStep: state.globalStep,
                           stepsPerEpoch: run.sampler.stepsPerEpoch, threads: run.threads)
        var speed = Throughput()
        var epochWatch = Stopwatch(), epochSpeed = Throughput()   // the epoch under way
        var ended = RunEnd.epochs
        training: while state.epoch < config.epochs && !state.earlyStopping.stopped {
            let epoch = run.sampler.epoch(state.epoch)
            recorder.startEpoch()
            epochWatch = Stopwatch(); epochSpeed = Throughput()
            while state.stepInEpoch < run.sampler.stepsPerEpoch {
                if let maxSteps = config.maxSteps, state.globalStep >= maxSteps {
                    // A stopping point, not the run's end: a checkpoint here lets --resume go on.
                    if run.checkpointStep != state.globalStep { try saveCheckpoint(run, &state) }
                    ended = .maxSteps
                    break training
                }
                let watch = Stopwatch()
                let learningRate = run.rate(at: state.globalStep, state)
                let totals = try run.step.run(epoch.batch(state.stepInEpoch), dataset: run.train, normalizer: run.normalizer,
                                              augmenter: run.augmenter, globalStep: state.globalStep,
                                              learningRate: learningRate, stopRequested: StopSignal.requested)
                run.ema?.update(from: run.model.parameters.pointer)
                speed.add(totals, seconds: watch.seconds); epochSpeed.add(totals, seconds: watch.seconds)
                try state.count(totals)
                try recorder.step(state, totals, learningRate: learningRate, speed: speed, l2: run.model.l2Loss)
                if totals.stopRequested { throw try preempted(run, &state) }
                if let every = options.checkpointEvery, state.globalStep % every == 0,
                   state.stepInEpoch < run.sampler.stepsPerEpoch {
                    try saveCheckpoint(run, &state)
                }
            }
            try endEpoch(run, &state, watch: epochWatch, speed: speed, epochSpeed: epochSpeed)
            if state.earlyStopping.stopped { ended = .earlyStopping }
        }
        return try finish(run, &state, endedBy: ended, speed: speed, partial: (epochWatch, epochSpeed))
    }

    // MARK: Phases of the loop

    /// Evaluates the weights the run would keep (the average, when there is one), decides early
    /// stopping, keeps the best weights, logs the epoch and writes its checkpoints.
    func endEpoch(_ run: TrainingRun, _ state: inout TrainingState, watch: Stopwatch, speed: Throughput,
                  epochSpeed: Throughput) throws {
        let model = run.model
        let learningRate = run.rate(at: max(state.globalStep - 1, 0), state)
        let best = try run.withEvaluatedWeights { () throws -> WeightsSnapshot? in
            let evaluation = Stopwatch()
            let val = try evaluateValidation(run)
            let test = options.testEveryEpoch ? try evaluateTest(run) : nil
            let metrics = epochMetrics(state, model: model, validation: val, test: test, learningRate: learningRate,
                                       seconds: watch.seconds, speed: epochSpeed, evaluationSeconds: evaluation.seconds)
            state.history.append(metrics)
            return try decideEarlyStopping(&state, metrics: metrics, schedule: run.policy.schedule) ? WeightsSnapshot(of: model) : nil
        }
        if let best, config.keepsBestWeights { run.best = best }
        state.nextEpoch()
        state.trainSeconds = run.elapsed
        try recorder.epoch(state.history.last!, state: state, speed: speed) {
            model.tensors.filter { $0.region == .parameters }.map {
                (name: $0.name, values: UnsafeBufferPointer(start: UnsafePointer(model.parameters.pointer + $0.offset), count: $0.count))
            }
        }
        if let best {
            let snapshot = state
            _ = try recorder.checkpoint({ Checkpoint(model: model, weights: best, adam: nil, state: snapshot) },
                                        name: "best.safetensors")
        }
        try saveCheckpoint(run, &state)
    }

    /// The row of metrics.csv for the epoch under way in `state` (its running training sums).
    func epochMetrics(_ state: TrainingState, model: Model, validation val: EvaluationResult?, test: EvaluationResult?,
                      learningRate: Double, seconds: Double, speed: Throughput, evaluationSeconds: Double,
                      partial: Bool = false) -> EpochMetrics {
        EpochMetrics(epoch: state.epoch + 1, globalStep: state.globalStep,
                     trainLoss: reportedLoss(state.epochLossSum / max(state.epochSeen, 1), of: model),
                     trainAccuracy: state.epochCorrect / max(state.epochSeen, 1),
                     valLoss: val?.loss, valAccuracy: val?.accuracy, testLoss: test?.loss, testAccuracy: test?.accuracy,
                     learningRate: learningRate, seconds: seconds,
                     imagesPerSecond: speed.stepSeconds > 0 ? speed.imagesPerSecond : nil,
                     evaluationSeconds: evaluationSeconds, partial: partial ? true : nil)
    }

    /// Ends the run however it ended: the result's weights (the best epoch's, the average, or the
    /// last), evaluated; final.safetensors, summary.json and the report. A run that stopped
    /// within an epoch (`--max-steps`) reports that epoch's steps as a partial row.
    func finish(_ run: TrainingRun, _ state: inout TrainingState, endedBy: RunEnd, speed: Throughput,
                partial: (watch: Stopwatch, speed: Throughput)) throws -> RunSummary {
        let model = run.model
        if let best = run.best, config.keepsBestWeights {
            best.restore(into: model)
            recorder.line("restored the weights of epoch \(state.earlyStopping.bestEpoch) (best \(config.monitor.rawValue) \(String(format: "%.4f", state.earlyStopping.best ?? .nan)))")
        } else if let ema = run.ema {
            model.parameters.pointer.update(from: ema.shadow.pointer, count: model.parameterCount)   // the average is the result
        }
        let evaluation = Stopwatch()
        let val = try evaluateValidation(run)
        let test = try evaluateTest(run, mistakes: 64)
        let unfinished = state.stepInEpoch > 0
            ? epochMetrics(state, model: model, validation: val, test: test,
                           learningRate: run.rate(at: max(state.globalStep - 1, 0), state), seconds: partial.watch.seconds,
                           speed: partial.speed, evaluationSeconds: evaluation.seconds, partial: true)
            : nil
        state.trainSeconds = run.elapsed
        let summary = RunSummary(
            model: config.model.name, worldSize: comm.size, epochsRun: state.history.count, globalSteps: state.globalStep,
            stoppedEarly: state.earlyStopping.stopped, bestEpoch: config.patience > 0 ? state.earlyStopping.bestEpoch : nil,
            valLoss: val?.loss, valAccuracy: val?.accuracy, testLoss: test.loss, testAccuracy: test.accuracy,
            trainSeconds: state.trainSeconds, imagesPerSecond: speed.imagesPerSecond, allReduceShare: speed.allReduceShare,
            weightsSHA256: model.weightsSHA256(), threadsPerRank: run.threads, endedBy: endedBy.rawValue, hosts: run.hosts,
            restarts: options.restarts)
        try verifyIdenticalWeights(summary.weightsSHA256)
        let final = state
        try recorder.finish(summary, final: { Checkpoint(model: model, adam: nil, state: final) }, test: test,
                            history: state.history + (unfinished.map { [$0] } ?? []), testSet: run.test,
                            timing: (stepSeconds: speed.stepSeconds, finalEvaluationSeconds: evaluation.seconds))
        return summary
    }

    /// Validation metrics of the weights now in the model; nil without a validation split.
    func evaluateValidation(_ run: TrainingRun) throws -> EvaluationResult? {
        guard run.validation.count > 0 else { return nil }
        return try evaluate(model: run.model, dataset: run.validation, normalizer: run.normalizer,
                            batchSize: config.evalBatchSize, comm: comm)
    }

    /// Test metrics of the weights now in the model; the final pass also keeps the most
    /// confident `mistakes` for report.html.
    func evaluateTest(_ run: TrainingRun, mistakes: Int = 0) throws -> EvaluationResult {
        try evaluate(model: run.model, dataset: run.test, normalizer: run.normalizer, batchSize: config.evalBatchSize,
                     comm: comm, mistakes: mistakes)
    }

    /// A step checkpoint of where the run is. Every rank calls it: Adam's moments are first
    /// gathered from the ranks that own them; rank 0 writes, and the others wait for it under
    /// no step deadline (a slow file system is not a stalled rank).
    @discardableResult
    func saveCheckpoint(_ run: TrainingRun, _ state: inout TrainingState) throws -> String? {
        // The same weights on every rank, so every rank decides alike: a checkpoint is a point
        // to resume from, and weights that overflowed are none.
        guard allFinite(run.model.parameters.pointer, count: run.model.parameterCount) else {
            throw RunError.nonFinite("the weights became non-finite by global step \(state.globalStep) (epoch \(state.epoch + 1)); no checkpoint is written with them, the last good one is kept; try a lower --lr")
        }
        state.trainSeconds = run.elapsed
        try run.step.gatherOptimizerState()
        let snapshot = state
        let path = try recorder.checkpoint({
            Checkpoint(model: run.model, adam: run.adam, state: snapshot, best: run.best, ema: run.ema)
        }, name: RunFiles.stepName(state.globalStep))
        run.checkpointStep = state.globalStep
        try waitForRootFiles()
        return path
    }

    /// SIGTERM or SIGINT reached a rank: every rank has stopped at this step; checkpoint and say so.
    func preempted(_ run: TrainingRun, _ state: inout TrainingState) throws -> Preempted {
        recorder.flush()
        let path = try saveCheckpoint(run, &state)
        let stop = Preempted(signal: StopSignal.received, checkpoint: path, step: state.globalStep)
        try recorder.preempted(stop)
        return stop
    }
}

extension TrainingState {
    /// Adds a step's totals to the epoch's running sums; a non-finite loss stops the run (on
    /// every rank alike: the totals are the same everywhere).
    mutating func count(_ totals: StepTotals) throws {
        guard totals.lossSum.isFinite else {
            throw RunError.nonFinite("the training loss became \(totals.lossSum) at global step \(globalStep) (epoch \(epoch + 1)); the last good checkpoint is kept; try a lower --lr")
        }
        globalStep += 1; stepInEpoch += 1
        epochLossSum += totals.lossSum; epochCorrect += totals.correct; epochSeen += Double(totals.count)
    }

    /// Moves to the first step of the next epoch.
    mutating func nextEpoch() {
        epoch += 1; stepInEpoch = 0
        epochLossSum = 0; epochCorrect = 0; epochSeen = 0
    }
}

extension TrainConfig {
    /// Whether the run keeps the best epoch's weights to end with them.
    var keepsBestWeights: Bool { patience > 0 && restoreBestWeights }
}

/// Whether `count` floats at `p` are all finite: x·0 is 0 for finite x and NaN for ±inf and NaN,
/// so the sum is 0 exactly when all are (one pass the compiler vectorises).
func allFinite(_ p: UnsafePointer<Float>, count: Int) -> Bool {
    var sum: Float = 0
    for i in 0..<count { sum += p[i] * 0 }
    return sum == 0
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
