import Data
import Engine
import Foundation

/// What rank 0 makes of a run, as it happens: the console, TensorBoard, the run dir's files and
/// the report. Every rank calls it at the same points of the loop; on ranks other than 0 it is
/// `SilentRecorder`, whose calls do nothing, so the loop has no `if rank == 0`.
protocol RunRecorder: AnyObject {
    /// Rank 0's run files (to look for checkpoints); nil elsewhere.
    var files: RunFiles? { get }
    /// A line on rank 0's console at `level`.
    func line(_ text: String, level: Console.Level)
    /// A warning on rank 0's standard error, on a line of its own.
    func warning(_ text: String)
    /// The run is about to take its first step (global step `globalStep`): the configuration table.
    func start(configuration rows: [(String, String)], globalStep: Int, stepsPerEpoch: Int, threads: Int) throws
    func startEpoch()
    /// After each step: the progress display and, every `--log-every` steps, TensorBoard.
    func step(_ state: TrainingState, _ step: StepTotals, learningRate: Double, speed: Throughput, l2: () -> Double) throws
    /// After each epoch's evaluation and decisions: its line, metrics.csv, TensorBoard (with
    /// histograms of `weights`, called only on rank 0).
    func epoch(_ metrics: EpochMetrics, state: TrainingState, speed: Throughput, weights: () -> [NamedValues]) throws
    /// Writes `checkpoints/NAME` atomically; step checkpoints are pruned to `--keep`. Returns the path.
    func checkpoint(_ make: () -> Checkpoint, name: String) throws -> String?
    /// However the run ended: final.safetensors, summary.json, the report.
    /// `timing`: this attempt's seconds in training steps and in the final evaluation.
    func finish(_ summary: RunSummary, final: () -> Checkpoint, test: EvaluationResult, history: [EpochMetrics],
                testSet: Dataset, timing: (stepSeconds: Double, finalEvaluationSeconds: Double)) throws
    /// Pushes buffered TensorBoard events to disk (before a preemption exit).
    func flush()
    /// The run is leaving (however it ends): a live progress line stays as it was, and what
    /// is printed next (an error, a stop) starts on a line of its own.
    func endLiveLine()
    /// The run stopped for a signal with `stop.checkpoint` written: `RUN_DIR/preempted.json`
    /// tells a batch script to requeue, whatever exit code the launcher makes of it.
    func preempted(_ stop: Preempted) throws
}

extension RunRecorder {
    /// A line at the normal level.
    func line(_ text: String) { line(text, level: .normal) }

    // What ranks other than 0 do: nothing.
    var files: RunFiles? { nil }
    func line(_ text: String, level: Console.Level) {}
    func warning(_ text: String) {}
    func start(configuration rows: [(String, String)], globalStep: Int, stepsPerEpoch: Int, threads: Int) throws {}
    func startEpoch() {}
    func step(_ state: TrainingState, _ step: StepTotals, learningRate: Double, speed: Throughput, l2: () -> Double) throws {}
    func epoch(_ metrics: EpochMetrics, state: TrainingState, speed: Throughput, weights: () -> [NamedValues]) throws {}
    func checkpoint(_ make: () -> Checkpoint, name: String) throws -> String? { nil }
    func finish(_ summary: RunSummary, final: () -> Checkpoint, test: EvaluationResult, history: [EpochMetrics],
                testSet: Dataset, timing: (stepSeconds: Double, finalEvaluationSeconds: Double)) throws {}
    func flush() {}
    func endLiveLine() {}
    func preempted(_ stop: Preempted) throws {}
}

/// Ranks other than 0.
final class SilentRecorder: RunRecorder {}

/// A tensor's name and its values, valid during the call that receives it.
typealias NamedValues = (name: String, values: UnsafeBufferPointer<Float>)

/// Images per second and the share of the step time spent exchanging, over the steps so far.
struct Throughput {
    var images = 0, stepSeconds = 0.0, exchangeSeconds = 0.0

    mutating func add(_ step: StepTotals, seconds: Double) {
        images += step.count; stepSeconds += seconds; exchangeSeconds += step.exchangeSeconds
    }
    var imagesPerSecond: Double { stepSeconds > 0 ? Double(images) / stepSeconds : 0 }
    var allReduceShare: Double { stepSeconds > 0 ? exchangeSeconds / stepSeconds : 0 }
}

/// Rank 0: prints through `Console`, writes the run dir through `RunFiles`.
final class RankZeroRecorder: RunRecorder {
    let config: TrainConfig
    let options: RunOptions
    let console: Console
    let files: RunFiles?
    private var tensorBoard: TensorBoardLog?
    private var epochWatch = Stopwatch()
    private var stepsPerEpoch = 0
    /// Steps this attempt has taken in the current epoch, and their wall time.
    private var stepsThisEpoch = 0, trainingSecondsThisEpoch = 0.0
    /// What the last epoch end took (evaluation, checkpoints), for the run's ETA.
    private var lastEpochEndSeconds: Double?
    /// This attempt: when it started, its set-up, and its evaluations so far (for report.html).
    private let attemptWatch = Stopwatch(), startDate = Date()
    private var startUpSeconds: Double?, evaluationSeconds = 0.0

    init(config: TrainConfig, options: RunOptions, console: Console) {
        self.config = config; self.options = options; self.console = console
        files = RunFiles(directory: options.runDirectory)
    }

    func line(_ text: String, level: Console.Level) { console.line(text, level: level) }

    func warning(_ text: String) {
        guard console.level > .quiet else { return }   // --quiet: errors and the final line only
        console.warning(text)
    }

    func start(configuration rows: [(String, String)], globalStep: Int, stepsPerEpoch: Int, threads: Int) throws {
        self.stepsPerEpoch = stepsPerEpoch
        startUpSeconds = attemptWatch.seconds
        tensorBoard = TensorBoardLog(directory: options.runDirectory + "/tensorboard", globalStep: globalStep)
        if globalStep == 0 {   // a resumed run is the same session
            try tensorBoard?.hparams(RankZeroRecorder.hparams(config, options: options, threads: threads),
                                     startTime: startDate.timeIntervalSince1970)
        }
        for (k, v) in rows { console.line(k.padding(toLength: 11, withPad: " ", startingAt: 0) + v) }
    }

    func startEpoch() { epochWatch = Stopwatch(); stepsThisEpoch = 0 }

    /// `epoch 2/3 31.0s loss … acc … val_loss … val_acc …` (and test, when evaluated); a
    /// partial epoch says how many of its steps ran.
    func epochLine(_ m: EpochMetrics) -> String {
        let steps = m.partial == true ? " (\(m.globalStep - (m.epoch - 1) * stepsPerEpoch) of \(stepsPerEpoch) steps)" : ""
        var text = String(format: "epoch %d/%d%@ %@ loss %.4f acc %.4f", m.epoch, config.epochs, steps, formatDuration(m.seconds),
                          m.trainLoss, m.trainAccuracy)
        if let vl = m.valLoss, let va = m.valAccuracy { text += String(format: " val_loss %.4f val_acc %.4f", vl, va) }
        if let tl = m.testLoss, let ta = m.testAccuracy { text += String(format: " test_loss %.4f test_acc %.4f", tl, ta) }
        return text
    }

    func step(_ state: TrainingState, _ step: StepTotals, learningRate: Double, speed: Throughput, l2: () -> Double) throws {
        stepsThisEpoch += 1
        trainingSecondsThisEpoch = epochWatch.seconds
        let logged = state.globalStep % options.logEvery == 0
        if let tensorBoard, logged {
            try tensorBoard.batch(step: state.globalStep, loss: step.lossSum / Double(step.count) + l2(),
                                  accuracy: step.correct / Double(step.count), learningRate: learningRate,
                                  imagesPerSecond: speed.imagesPerSecond, allReduceShare: speed.allReduceShare)
        }
        if console.isTerminal {
            console.progress { columns in progressFrame(state, speed: speed, l2: l2()).line(columns: columns) }
        } else if state.stepInEpoch % options.logEvery == 0 {
            let f = progressFrame(state, speed: speed, l2: l2())
            console.line(String(format: "epoch %d/%d %d/%d %@ eta %@ %.0f img/s loss %.4f acc %.4f",
                                f.epoch, f.epochs, f.step, f.steps, formatDuration(f.elapsed), formatDuration(f.epochETA ?? .nan),
                                f.imagesPerSecond, f.loss, f.accuracy))
        }
    }

    /// The progress display's figures after a step. The ETAs assume the steps to come take
    /// as long as this epoch's so far (in this attempt), and each epoch end as long as the
    /// last one's evaluation and checkpoint did.
    func progressFrame(_ state: TrainingState, speed: Throughput, l2: Double) -> ProgressFrame {
        let s = state.stepInEpoch, steps = stepsPerEpoch, elapsed = epochWatch.seconds
        let perStep = stepsThisEpoch > 0 ? elapsed / Double(stepsThisEpoch) : .nan
        var runETA: Double?
        if config.epochs > 1 || config.maxSteps != nil {
            var left = (config.epochs - state.epoch) * steps - s
            var epochEnds = config.epochs - state.epoch
            if let maxSteps = config.maxSteps, maxSteps - state.globalStep < left {
                left = max(maxSteps - state.globalStep, 0)
                epochEnds = (s + left) / max(steps, 1)
            }
            runETA = Double(left) * perStep + Double(epochEnds) * (lastEpochEndSeconds ?? 0)
        }
        return ProgressFrame(epoch: state.epoch + 1, epochs: config.epochs, step: s, steps: steps, elapsed: elapsed,
                             epochETA: perStep * Double(steps - s), runETA: runETA, imagesPerSecond: speed.imagesPerSecond,
                             loss: state.epochLossSum / max(state.epochSeen, 1) + l2,
                             accuracy: state.epochCorrect / max(state.epochSeen, 1))
    }

    func epoch(_ m: EpochMetrics, state: TrainingState, speed: Throughput, weights: () -> [NamedValues]) throws {
        if stepsThisEpoch > 0 { lastEpochEndSeconds = epochWatch.seconds - trainingSecondsThisEpoch }
        evaluationSeconds += m.evaluationSeconds ?? 0
        var text = epochLine(m)
        if config.patience > 0 {
            if state.earlyStopping.stopped {
                text += " (early stop: no improvement of \(config.monitor.rawValue) for \(config.patience) epoch\(config.patience == 1 ? "" : "s"))"
            } else if state.earlyStopping.bestEpoch == m.epoch {
                text += " (best)"
            }
        }
        console.line(text)
        console.line(String(format: "  %.0f images/s, all-reduce %.1f%% of step time, learning rate %.3g, %d global steps",
                            speed.imagesPerSecond, 100 * speed.allReduceShare, m.learningRate, state.globalStep),
                     level: .verbose)
        try files?.writeMetrics(state.history)
        try tensorBoard?.epoch(m)
        try tensorBoard?.weights(step: m.globalStep, weights())
        try tensorBoard?.epochSpeed(step: state.globalStep, imagesPerSecond: speed.imagesPerSecond,
                                    allReduceShare: speed.allReduceShare)
    }

    func checkpoint(_ make: () -> Checkpoint, name: String) throws -> String? {
        guard let files else { return nil }
        let path = try files.writeCheckpoint(make(), name: name)
        if name.hasPrefix("step-") { files.prune(keep: options.keep) }
        return path
    }

    func finish(_ summary: RunSummary, final: () -> Checkpoint, test: EvaluationResult, history: [EpochMetrics],
                testSet: Dataset, timing: (stepSeconds: Double, finalEvaluationSeconds: Double)) throws {
        guard let files else { return }
        let wall = attemptWatch.seconds
        if let last = history.last, last.partial == true { console.line(epochLine(last)) }
        // The result: the weights evaluated (best or averaged), without optimizer state, so it
        // cannot be mistaken for a point to resume from (step checkpoints are).
        try files.writeCheckpoint(final(), name: "final.safetensors")
        try files.writeSummary(summary)
        try files.writeMetrics(history)
        if let last = history.last, last.partial == true {
            try tensorBoard?.epoch(last)
        } else if history.last?.testLoss == nil {
            try tensorBoard?.test(step: summary.globalSteps, loss: test.loss, accuracy: test.accuracy)
        }
        try tensorBoard?.hparamsEnd(success: true, step: summary.globalSteps)
        try tensorBoard?.flush()
        do {
            var data = RunReportData(confusion: test.confusion, mistakes: test.mistakes,
                                     data: URL(fileURLWithPath: config.dataDirectory).standardized.path,
                                     title: "\(config.model.name), \(summary.worldSize) rank\(summary.worldSize == 1 ? "" : "s")")
            data.run = RunFacts(
                commandLine: options.commandLine, version: options.version, started: startDate, ended: Date(),
                resumed: options.resume != .none, hosts: RunFacts.ranksPerHost(summary.hosts),
                configuration: RunFacts.rows(config, options: options, threads: summary.threadsPerRank),
                wallSeconds: wall, startUpSeconds: startUpSeconds ?? 0, trainingSeconds: timing.stepSeconds,
                evaluationSeconds: evaluationSeconds + timing.finalEvaluationSeconds)
            try RunReport.save(data, runDirectory: options.runDirectory, history: history, testSet: testSet)
        } catch {
            warning("report.html not written: \(error)")
        }
        console.line(String(format: "test accuracy %.2f%%, loss %.4f; weights %@; run dir %@",
                            test.accuracy * 100, test.loss, String(summary.weightsSHA256.prefix(16)), options.runDirectory),
                     level: .quiet)
    }

    /// The settings as TensorBoard hyperparameters: numbers as numbers (so the HParams tab
    /// can sort and plot them), true/false as booleans, the rest as text.
    static func hparams(_ config: TrainConfig, options: RunOptions, threads: Int) -> [(String, TensorBoardWriter.HParam)] {
        RunFacts.rows(config, options: options, threads: threads).compactMap { row in
            let (name, value) = (row[0], row[1])
            guard name != "run-dir" else { return nil }
            if let x = Double(value), x.isFinite { return (name, .number(x)) }
            if value == "true" || value == "false" { return (name, .bool(value == "true")) }
            return (name, .string(value))
        }
    }

    func flush() { try? tensorBoard?.flush() }

    func endLiveLine() { console.endProgress() }

    func preempted(_ stop: Preempted) throws {
        try files?.writePreempted(stop)
    }
}
