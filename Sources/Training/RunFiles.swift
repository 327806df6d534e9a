import Foundation

/// Rank 0's run directory: `summary.json`, `metrics.csv`, `tensorboard/`, `checkpoints/`.
/// Every file is written atomically, so a run killed at any moment leaves only whole files.
final class RunFiles {
    let directory: String
    var checkpointDirectory: String { directory + "/checkpoints" }

    init(directory: String) { self.directory = directory }

    /// Creates the folders and removes temporary files a killed run left behind.
    func prepare() throws {
        try AtomicFile.makeDirectory(checkpointDirectory)
        AtomicFile.cleanStale(in: checkpointDirectory)
        AtomicFile.cleanStale(in: directory)
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
    func writeMetrics(_ history: [EpochMetrics]) throws {
        var csv = "epoch,global_step,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,learning_rate,seconds\n"
        for h in history {
            let v = [h.valLoss, h.valAccuracy].map { $0.map { String($0) } ?? "" }
            csv += "\(h.epoch),\(h.globalStep),\(h.trainLoss),\(h.trainAccuracy),\(v[0]),\(v[1]),\(h.testLoss),\(h.testAccuracy),\(h.learningRate),\(h.seconds)\n"
        }
        try AtomicFile.write(csv, to: directory + "/metrics.csv")
    }

    func writeSummary(_ s: RunSummary) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try enc.encode(s)) + [0x0A], to: directory + "/summary.json")
    }
}
