import Collective
import Data
import Engine
import Foundation
import Training
import XCTest

/// `seed` on 600 training images (6 global batches of 100), 300 validation, 300 test.
func seedConfig(_ edit: (inout TrainConfig) -> Void = { _ in }) throws -> TrainConfig {
    var c = TrainConfig(model: try ModelSpec.load("seed"))
    c.dataDirectory = Repo.mnist
    c.epochs = 2; c.batchSize = 100; c.trainLimit = 600; c.testLimit = 300; c.validationSplit = 300
    c.evalBatchSize = 100
    edit(&c)
    return c
}

/// Trains on `ranks` in-process ranks (threads meeting in a `ThreadedCommunicator`); returns
/// every rank's summary and the run dir (by default a new one, removed after `test`).
func trainInProcess(_ config: TrainConfig, ranks: Int, test: XCTestCase,
                    _ edit: (inout RunOptions) -> Void = { _ in }) throws -> ([RunSummary], String) {
    var o = RunOptions()
    o.runDirectory = temporaryDirectory(test) + "/run"
    o.threads = 1; o.level = .quiet; o.progress = .lines; o.stepTimeout = 60
    edit(&o)
    let comms = ranks == 1 ? [SingleProcessCommunicator()] : ThreadedCommunicator.makeGroup(size: ranks)
    let options = o
    let results = onRanks(comms, limit: 300) { comm in try Trainer(config: config, options: options, comm: comm).run() }
    return (try results.map { try $0.get() }, o.runDirectory)
}

/// The training loop, run in this process (as llm.c's test includes its trainer): over one
/// rank, and over three ranks that are threads meeting in a `ThreadedCommunicator`. Each test
/// checks what the loop must do with the steps, epochs, best weights, averages and files.
final class TrainerTests: XCTestCase {
    func config(_ edit: (inout TrainConfig) -> Void = { _ in }) throws -> TrainConfig { try seedConfig(edit) }

    func train(_ config: TrainConfig, ranks: Int, _ edit: (inout RunOptions) -> Void = { _ in }) throws -> ([RunSummary], String) {
        try trainInProcess(config, ranks: ranks, test: self, edit)
    }

    func tensors(_ path: String, prefix: String = "layers.") throws -> [String: [Float]] {
        let file = try Checkpoint.read(path: path).file
        var out: [String: [Float]] = [:]
        for e in file.entries where e.name.hasPrefix(prefix) { out[String(e.name.dropFirst(prefix.count))] = file.values(e) }
        return out
    }

    /// The names of the tensors in which `a` and `b` differ, with the largest difference (short
    /// enough for a failure message).
    func differences(_ a: [String: [Float]], _ b: [String: [Float]]) -> String {
        let names = Set(a.keys).union(b.keys).sorted().filter { a[$0] != b[$0] }
        return names.map { n in
            guard let x = a[n], let y = b[n], x.count == y.count else { return "\(n) (missing or other shape)" }
            return "\(n) (max |Δ| \(zip(x, y).map { abs($0 - $1) }.max() ?? 0))"
        }.joined(separator: ", ")
    }

    func testStepsEpochsAndFilesOnOneAndThreeRanks() throws {
        let c = try config()
        let (one, dir1) = try train(c, ranks: 1)
        let (three, dir3) = try train(c, ranks: 3)
        for s in three { XCTAssertEqual(s.weightsSHA256, three[0].weightsSHA256, "every rank ends with the same weights") }
        for (s, ranks) in [(one[0], 1), (three[0], 3)] {
            XCTAssertEqual(s.worldSize, ranks)
            XCTAssertEqual(s.globalSteps, 12, "2 epochs of 600 / 100")
            XCTAssertEqual(s.epochsRun, 2)
            XCTAssertEqual(s.endedBy, "epochs")
            XCTAssertFalse(s.stoppedEarly)
            XCTAssertNil(s.bestEpoch)
        }
        // Three ranks sum the same examples in another order: the same function up to rounding.
        XCTAssertEqual(three[0].testLoss, one[0].testLoss, accuracy: 0.02 * one[0].testLoss)
        for dir in [dir1, dir3] {
            let history = try RunReport.readMetrics(path: dir + "/metrics.csv")
            XCTAssertEqual(history.map(\.epoch), [1, 2])
            XCTAssertEqual(history.map(\.globalStep), [6, 12])
            let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted()
            XCTAssertEqual(names, ["best.safetensors", "final.safetensors", "step-00000006.safetensors", "step-00000012.safetensors"])
            XCTAssertFalse(try Checkpoint.read(path: dir + "/checkpoints/final.safetensors").hasAdam, "the result is not a resume point")
            // summary.json has every key of the contract, the optional ones as null.
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as? [String: Any])
            for key in ["model", "world_size", "epochs_run", "global_steps", "stopped_early", "best_epoch", "val_loss",
                        "val_accuracy", "test_loss", "test_accuracy", "train_seconds", "images_per_second", "weights_sha256"] {
                XCTAssertNotNil(json[key], "summary.json lacks \(key)")
            }
            XCTAssertTrue(json["best_epoch"] is NSNull, "best_epoch is null without early stopping")
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/report.html"))
        }
    }

    func testMaxStepsStopsMidEpoch() throws {
        let (s, dir) = try train(try config { $0.maxSteps = 4 }, ranks: 3)
        XCTAssertEqual(s[0].globalSteps, 4)
        XCTAssertEqual(s[0].endedBy, "max-steps")
        XCTAssertEqual(s[0].epochsRun, 0, "no epoch finished")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/final.safetensors"))
        // What there is still reaches the files: the unfinished epoch as a partial row with its
        // validation and test figures, and a report that `distcnn report` can rebuild.
        let history = try RunReport.readMetrics(path: dir + "/metrics.csv")
        XCTAssertEqual(history.count, 1)
        let row = try XCTUnwrap(history.first)
        XCTAssertEqual(row.epoch, 1); XCTAssertEqual(row.globalStep, 4); XCTAssertEqual(row.partial, true)
        XCTAssertEqual(try XCTUnwrap(row.valLoss), try XCTUnwrap(s[0].valLoss), accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(row.testAccuracy), s[0].testAccuracy, accuracy: 1e-12)
        XCTAssertTrue(try String(contentsOfFile: dir + "/report.html", encoding: .utf8).contains("<svg"), "the report has curves")
        try FileManager.default.removeItem(atPath: dir + "/report.html")
        let r = try runProcess(Repo.builtBinary, ["report", dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/report.html"))
    }

    /// The test set is evaluated once, at the end, unless asked for after every epoch.
    func testTestSetOnceAtTheEndUnlessEveryEpoch() throws {
        let (once, dirOnce) = try train(try config(), ranks: 1)
        let (every, dirEvery) = try train(try config(), ranks: 1) { $0.testEveryEpoch = true }
        let h1 = try RunReport.readMetrics(path: dirOnce + "/metrics.csv")
        let h2 = try RunReport.readMetrics(path: dirEvery + "/metrics.csv")
        XCTAssertEqual(h1.map(\.testLoss), [nil, nil])
        XCTAssertNotNil(h1.last?.valLoss, "validation stays per epoch")
        XCTAssertEqual(h2.compactMap(\.testLoss).count, 2)
        for h in [h1, h2] {
            XCTAssertTrue(h.allSatisfy { ($0.imagesPerSecond ?? 0) > 0 && ($0.evaluationSeconds ?? -1) >= 0 && $0.partial == false })
        }
        // Evaluating the test set changes nothing that is trained.
        XCTAssertEqual(once[0].weightsSHA256, every[0].weightsSHA256)
        XCTAssertEqual(once[0].testLoss, try XCTUnwrap(h2.last?.testLoss), accuracy: 1e-12)
    }

    /// With no improvement after the first epoch (min delta far above any change), patience 1
    /// stops after the second, and the result is the first epoch's weights: those of the step
    /// checkpoint written at its end, not the last step's.
    func testEarlyStoppingEndsWithTheBestEpochsWeights() throws {
        let c = try config { $0.epochs = 5; $0.patience = 1; $0.minDelta = 1e6 }
        let (s, dir) = try train(c, ranks: 3)
        XCTAssertTrue(s[0].stoppedEarly)
        XCTAssertEqual(s[0].bestEpoch, 1)
        XCTAssertEqual(s[0].epochsRun, 2)
        XCTAssertEqual(s[0].endedBy, "early-stopping")
        let final = try tensors(dir + "/checkpoints/final.safetensors")
        XCTAssertEqual(differences(final, try tensors(dir + "/checkpoints/step-00000006.safetensors")), "",
                       "the result is the best epoch's weights")
        XCTAssertEqual(differences(final, try tensors(dir + "/checkpoints/best.safetensors")), "")
        XCTAssertNotEqual(differences(final, try tensors(dir + "/checkpoints/step-00000012.safetensors")), "",
                          "not the last weights")
        XCTAssertEqual(differences(final, try tensors(dir + "/checkpoints/step-00000012.safetensors", prefix: "best.layers.")), "",
                       "the step checkpoint carries the best weights for a resume")
    }

    /// A learning rate that overflows the weights stops the run with one line, and no checkpoint
    /// holding non-finite weights is left as a point to resume from.
    func testNonFiniteWeightsAreNeverCheckpointed() throws {
        let dir = temporaryDirectory(self) + "/run"
        XCTAssertThrowsError(try train(try config { $0.learningRate = 1e300 }, ranks: 2) { $0.runDirectory = dir; $0.checkpointEvery = 1 }) {
            XCTAssertTrue("\($0)".contains("non-finite") || "\($0)".contains("the training loss became"), "\($0)")
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? [] where name.hasPrefix("step-") {
            let values = try tensors(dir + "/checkpoints/" + name).values.flatMap { $0 }
            XCTAssertTrue(values.allSatisfy(\.isFinite), "\(name) holds non-finite weights")
        }
    }

    /// With a weight average the result is the average of the parameters (and the live
    /// batch-norm statistics), and training itself went on with the live weights.
    func testWeightAverageIsTheResult() throws {
        let (_, dir) = try train(try config { $0.epochs = 1; $0.emaDecay = 0.9 }, ranks: 1)
        let final = try tensors(dir + "/checkpoints/final.safetensors")
        let live = try tensors(dir + "/checkpoints/step-00000006.safetensors")
        let averaged = try tensors(dir + "/checkpoints/step-00000006.safetensors", prefix: "ema.layers.")
        XCTAssertFalse(averaged.isEmpty)
        // Parameters from the average, running statistics (not averaged) from the live model.
        XCTAssertEqual(differences(final, live.merging(averaged) { _, average in average }), "")
        XCTAssertNotEqual(differences(averaged, live.filter { averaged[$0.key] != nil }), "", "the average is not the live weights")
    }
}

/// What the trainer does with a run dir: one job at a time, no fresh run over another run's
/// checkpoints, `--max-steps` as a stopping point, a finished run left alone.
final class RunDirectoryTests: XCTestCase {
    func config(_ edit: (inout TrainConfig) -> Void = { _ in }) throws -> TrainConfig { try seedConfig(edit) }

    func train(_ config: TrainConfig, ranks: Int, _ edit: (inout RunOptions) -> Void = { _ in }) throws -> ([RunSummary], String) {
        try trainInProcess(config, ranks: ranks, test: self, edit)
    }

    func options(_ dir: String, _ resume: ResumeMode = .none) -> (inout RunOptions) -> Void {
        { $0.runDirectory = dir; $0.resume = resume }
    }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// 4 steps, then `--resume` to 9 (across the epoch end at 6), ends on the same bits as 9 straight.
    func testMaxStepsThenResumeEqualsTheRunStraight() throws {
        let base = temporaryDirectory(self)
        let (straight, _) = try train(try config { $0.maxSteps = 9 }, ranks: 3, options(base + "/straight"))
        let (first, _) = try train(try config { $0.maxSteps = 4 }, ranks: 3, options(base + "/parts"))
        XCTAssertEqual(first[0].globalSteps, 4)
        XCTAssertTrue(FileManager.default.fileExists(atPath: base + "/parts/checkpoints/step-00000004.safetensors"),
                      "a checkpoint where --max-steps stopped")
        let (second, _) = try train(try config { $0.maxSteps = 9 }, ranks: 3, options(base + "/parts", .latest))
        XCTAssertEqual(second[0].globalSteps, 9)
        XCTAssertEqual(second[0].weightsSHA256, straight[0].weightsSHA256, "resumed at --max-steps: other weights")
    }

    /// Resuming a finished run changes nothing; with more epochs it trains on.
    func testResumingAFinishedRunChangesNothingUnlessThereIsMoreToDo() throws {
        let dir = temporaryDirectory(self) + "/run"
        _ = try train(try config { $0.epochs = 1 }, ranks: 1, options(dir))
        let files = ["summary.json", "metrics.csv", "checkpoints/final.safetensors", "checkpoints/step-00000006.safetensors"]
        let before = try files.map { try bytes(dir + "/" + $0) }
        XCTAssertThrowsError(try train(try config { $0.epochs = 1 }, ranks: 1, options(dir, .latest))) {
            XCTAssertTrue("\($0)".contains("the run has already finished: it trained its 1 epoch"), "\($0)")
        }
        XCTAssertEqual(try files.map { try bytes(dir + "/" + $0) }, before, "nothing rewritten")
        let (more, _) = try train(try config { $0.epochs = 2 }, ranks: 1, options(dir, .latest))
        XCTAssertEqual(more[0].globalSteps, 12)
        XCTAssertEqual(more[0].epochsRun, 2)
    }

    /// A fresh run in a run dir that holds another run's checkpoints is refused and touches
    /// none of them.
    func testFreshRunRefusesAnEarlierRunsCheckpoints() throws {
        let dir = temporaryDirectory(self) + "/run"
        _ = try train(try config { $0.maxSteps = 2 }, ranks: 1, options(dir))
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted()
        let before = try names.map { try bytes(dir + "/checkpoints/" + $0) }
        XCTAssertThrowsError(try train(try config(), ranks: 3, options(dir))) {
            XCTAssertTrue("\($0)".contains("holds the checkpoints of an earlier run (final.safetensors, step-00000002.safetensors)"), "\($0)")
            XCTAssertTrue("\($0)".contains("--resume"), "\($0)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted(), names)
        XCTAssertEqual(try names.map { try bytes(dir + "/checkpoints/" + $0) }, before)
    }

    /// A second job on a run dir gets one line naming the job that holds it.
    func testSecondJobOnARunDirIsRefused() throws {
        let dir = temporaryDirectory(self) + "/run"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let holder = open(dir + "/.lock", O_RDWR | O_CREAT, 0o644)
        XCTAssertGreaterThanOrEqual(holder, 0)
        defer { close(holder) }
        XCTAssertEqual(flock(holder, LOCK_EX | LOCK_NB), 0)
        _ = "pid 4242 on elsewhere\n".withCString { write(holder, $0, strlen($0)) }
        XCTAssertThrowsError(try train(try config(), ranks: 2, options(dir))) {
            XCTAssertTrue("\($0)".contains("is in use by another distcnn job (pid 4242 on elsewhere)"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/metrics.csv"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints"), [])
    }

    /// A checkpoint of another network under the same name is refused, saying what differs.
    func testCheckpointOfAnotherNetworkWithTheSameNameIsRefused() throws {
        let (_, dir) = try train(try config { $0.maxSteps = 2 }, ranks: 1)
        let other = try config { $0.model.layers[0].filters = ($0.model.layers[0].filters ?? 1) + 1 }
        XCTAssertThrowsError(try train(other, ranks: 1) { $0.resume = .file(dir + "/checkpoints/step-00000002.safetensors") }) {
            XCTAssertTrue("\($0)".contains("it holds another network named 'seed': layer 0 (conv2d) differs: filters"), "\($0)")
        }
    }

    func testEmptyRunDirIsRefusedBeforeAnythingIsWritten() throws {
        XCTAssertThrowsError(try train(try config(), ranks: 1, options(""))) {
            XCTAssertTrue("\($0)".contains("--run-dir is empty"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/checkpoints"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/summary.json"))
    }
}

/// SyncBatchNorm: a global batch cut over three ranks, each normalising its share with the
/// statistics summed through `CommunicatorReducer`, gives what one batch norm gives the whole
/// batch: outputs, input gradients, the summed γ/β gradients and the running statistics.
final class SyncBatchNormTests: XCTestCase {
    func testThreeRanksNormaliseAsOneBatch() throws {
        let shape = Shape(c: 4, h: 3, w: 3), n = 7, per = shape.count
        let rng = CounterRNG(seed: 5)
        let x = (0..<(n * per)).map { Float(rng.uniform(.dropout, 1, UInt64($0))) * 4 - 1 + Float($0 % 4) }
        let dy = (0..<(n * per)).map { Float(rng.uniform(.dropout, 2, UInt64($0))) - 0.5 }

        /// Forward and backward of a fresh batch norm on `range` of the batch.
        func pass(_ range: Range<Int>, reducer: StatisticsReducer?) throws -> (y: [Float], dx: [Float], grads: [Float], state: [Float]) {
            let bn = BatchNorm(input: shape, momentum: 0.9, epsilon: 1e-3)
            let params = FloatBuffer(count: 8), grads = FloatBuffer(count: 8), state = FloatBuffer(count: 8)
            bn.bind(parameters: params.pointer, gradients: grads.pointer, state: state.pointer)
            bn.initialize(rng: rng, layerIndex: 0)
            for i in 0..<8 { params.pointer[i] = 0.5 + Float(i) * 0.25 }
            bn.reserve(batch: max(range.count, 1))
            let m = range.count
            var xs = Array(x[(range.lowerBound * per)..<(range.upperBound * per)])
            var dys = Array(dy[(range.lowerBound * per)..<(range.upperBound * per)])
            var y = [Float](repeating: 0, count: m * per), dx = [Float](repeating: 0, count: m * per)
            let context = PassContext(training: true, reducer: reducer)
            try xs.withUnsafeMutableBufferPointer { xp in
                try y.withUnsafeMutableBufferPointer { yp in
                    try bn.forward(xp.baseAddress!, yp.baseAddress!, batch: m, context: context)
                    try dys.withUnsafeMutableBufferPointer { dyp in
                        try dx.withUnsafeMutableBufferPointer { dxp in
                            try bn.backward(xp.baseAddress!, yp.baseAddress!, dyp.baseAddress!, dxp.baseAddress!, batch: m, context: context)
                        }
                    }
                }
            }
            return (y, dx, grads.array, state.array)
        }

        let whole = try pass(0..<n, reducer: nil)
        let comms = ThreadedCommunicator.makeGroup(size: 3)
        let shares = (0..<3).map { contiguousShare(of: n, part: $0, parts: 3) }
        let ranks = try onRanks(comms, limit: 60) { comm in try pass(shares[comm.rank], reducer: CommunicatorReducer(comm)) }
            .map { try $0.get() }
        XCTAssertEqual(shares.map(\.count), [3, 2, 2])
        func close(_ a: [Float], _ b: [Float], _ what: String) {
            XCTAssertEqual(a.count, b.count, what)
            for (u, v) in zip(a, b) { XCTAssertEqual(u, v, accuracy: 1e-5 * max(1, abs(v)), what) }
        }
        close(ranks.flatMap(\.y), whole.y, "outputs")
        close(ranks.flatMap(\.dx), whole.dx, "input gradients")
        close((0..<8).map { i in ranks.reduce(0) { $0 + $1.grads[i] } }, whole.grads, "γ and β gradients, summed over ranks")
        for r in ranks { close(r.state, whole.state, "running statistics of the global batch") }
        // Without the reducer a share normalises with its own statistics: visibly different.
        let alone = try pass(shares[1], reducer: nil)
        XCTAssertGreaterThan(zip(alone.y, ranks[1].y).map { abs($0 - $1) }.max() ?? 0, 1e-2)
    }
}
