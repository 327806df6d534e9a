import Collective
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Rank 0's run directory: `summary.json`, `metrics.csv`, `tensorboard/`, `checkpoints/`.
/// Every file is written atomically, so a run killed at any moment leaves only whole files.
/// One job at a time holds a run dir (an advisory lock on `RUN_DIR/.lock`, released when the
/// process ends, however it ends).
final class RunFiles {
    let directory: String
    var checkpointDirectory: String { directory + "/checkpoints" }
    var lockPath: String { directory + "/.lock" }
    var preemptedPath: String { directory + "/preempted.json" }
    private var lock: Int32 = -1

    init(directory: String) { self.directory = directory }

    deinit { if lock >= 0 { close(lock) } }

    /// Takes the run dir for this job: creates the folders, locks the run dir against a second
    /// job, removes temporary files a killed run left behind, and refuses to start a fresh run
    /// over the checkpoints of an earlier one (they are not this run's to prune or replace).
    func prepare(fresh: Bool) throws {
        guard !directory.isEmpty else {
            throw RunError.config("--run-dir is empty; name the folder the run writes to")
        }
        try AtomicFile.makeDirectory(checkpointDirectory)
        try takeLock()
        AtomicFile.cleanStale(in: checkpointDirectory)
        AtomicFile.cleanStale(in: directory)
        // This job takes over from the one that was preempted.
        if unlink(preemptedPath) != 0 && errno != ENOENT { throw IOFailure(path: preemptedPath, action: "remove") }
        if fresh {
            let earlier = checkpointNames()
            if !earlier.isEmpty {
                let shown = earlier.prefix(3).joined(separator: ", ") + (earlier.count > 3 ? ", …" : "")
                throw RunError.config("\(checkpointDirectory) holds the checkpoints of an earlier run (\(shown)); continue that run with --resume, or start this one in a new --run-dir")
            }
        }
    }

    /// Every checkpoint file in the run dir, sorted.
    func checkpointNames() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpointDirectory)) ?? []
        return names.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(AtomicFile.temporaryPrefix) }.sorted()
    }

    /// An exclusive `flock` on `RUN_DIR/.lock`, which names its holder (host, pid, start time).
    private func takeLock() throws {
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw IOFailure(path: lockPath, action: "open the run dir's lock") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: lockPath, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(fd)
            throw RunError.config("\(directory) is in use by another distcnn job (\(holder.isEmpty ? "holder unknown" : holder)); wait for it to end or choose another --run-dir")
        }
        let me = "pid \(getpid()) on \(localHostName()), since \(ISO8601DateFormatter().string(from: Date()))\n"
        lock = fd
        let written = me.withCString { ftruncate(fd, 0) == 0 ? pwrite(fd, $0, strlen($0), 0) : -1 }
        guard written == me.utf8.count else { throw IOFailure(path: lockPath, action: "write the holder into") }
    }

    static func stepName(_ step: Int) -> String { String(format: "step-%08d.safetensors", step) }

    /// Step checkpoints, oldest first.
    func stepCheckpoints() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: checkpointDirectory)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".safetensors") }.sorted()
            .map { checkpointDirectory + "/" + $0 }
    }

    @discardableResult
    func writeCheckpoint(_ ckpt: Checkpoint, name: String) throws -> String {
        let path = checkpointDirectory + "/" + name
        try AtomicFile.write(ckpt.file.serialized(), to: path)
        return path
    }

    /// Keeps the `keep` newest step checkpoints.
    func prune(keep: Int) {
        let all = stepCheckpoints()
        guard keep > 0, all.count > keep else { return }
        for path in all.prefix(all.count - keep) { unlink(path) }
    }

    /// Rewritten whole from the run's history, so a resumed run never duplicates or loses a row.
    /// Figures not measured (test metrics of an epoch without `--test-every-epoch`, validation
    /// without a split) are empty cells; `partial` is 1 on the row of an epoch the run ended in.
    func writeMetrics(_ history: [EpochMetrics]) throws {
        var csv = RunFiles.metricsHeader + "\n"
        func cell(_ v: Double?) -> String { v.map { String($0) } ?? "" }
        for h in history {
            let cells = ["\(h.epoch)", "\(h.globalStep)", cell(h.trainLoss), cell(h.trainAccuracy), cell(h.valLoss), cell(h.valAccuracy),
                         cell(h.testLoss), cell(h.testAccuracy), cell(h.learningRate), cell(h.seconds), cell(h.imagesPerSecond),
                         cell(h.evaluationSeconds), h.partial == true ? "1" : "0"]
            csv += cells.joined(separator: ",") + "\n"
        }
        try AtomicFile.write(csv, to: directory + "/metrics.csv")
    }

    static let metricsHeader = "epoch,global_step,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,learning_rate,seconds,images_per_second,evaluation_seconds,partial"

    /// `preempted.json`: `{"signal": "SIGUSR1", "global_step": 287, "checkpoint": "…"}`.
    func writePreempted(_ stop: Preempted) throws {
        let fields: [String: Any] = ["signal": stop.signal == 0 ? "another rank's" : StopSignal.name(stop.signal),
                                     "global_step": stop.step, "checkpoint": stop.checkpoint ?? NSNull()]
        let json = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        try AtomicFile.write(Array(json) + [0x0A], to: preemptedPath)
    }

    /// `RUN_DIR/config.json`: the settings that repeat the run (`distcnn train --config`).
    func writeConfiguration(_ json: String) throws {
        try AtomicFile.write(Array(json.utf8) + [0x0A], to: directory + "/config.json")
    }

    func writeSummary(_ s: RunSummary) throws {
        let enc = JSONEncoder.distcnn
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try enc.encode(s)) + [0x0A], to: directory + "/summary.json")
    }
}
