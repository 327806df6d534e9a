import Collective
import Engine
import Foundation

extension Communicator {
    /// Gathers every rank's `bytes` under `phase` and returns them as text with the first rank
    /// whose bytes differ from rank 0's, or nil when all agree (or this is the only rank).
    func firstRankDiffering(from bytes: [UInt8], phase: String) throws -> (rank: Int, all: [String])? {
        guard size > 1 else { return nil }
        self.phase = phase
        let all = try allGather(bytes)
        guard let r = all.firstIndex(where: { $0 != all[0] }) else { return nil }
        return (r, all.map { String(decoding: $0, as: UTF8.self) })
    }
}

/// The points where ranks agree before going on: the configuration at start, a failure on any
/// rank, rank 0's files, the early-stopping decision and the final weights.
extension Trainer {
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

    /// Compares the configuration of every rank with rank 0's, every option that changes what
    /// is trained or the sequence of collectives (everything but --threads, which may differ
    /// between nodes, and the output level); all ranks stop on a mismatch, naming the options.
    func agreeOnConfiguration() throws {
        guard comm.size > 1 else { return }
        let mine = configurationFields()
        guard let d = try comm.firstRankDiffering(from: Array(try JSONEncoder.sorted.encode(mine)), phase: "configuration check") else { return }
        let decode = { (text: String) in (try? JSONDecoder.distcnn.decode([String: String].self, from: Data(text.utf8))) ?? [:] }
        let reference = decode(d.all[0]), other = decode(d.all[d.rank])
        let differing = Set(reference.keys).union(other.keys).sorted().filter { reference[$0] != other[$0] }
        let key = differing.first ?? "?"
        throw RunError.config("rank \(d.rank) was started with different settings than rank 0: \(differing.joined(separator: ", ")) (e.g. \(key): '\(other[key]?.prefix(60) ?? "")' vs '\(reference[key]?.prefix(60) ?? "")'); start every rank with the same command line")
    }

    /// Every setting ranks must share, as name → value: the training configuration's fields
    /// and the run options that shape the collectives.
    func configurationFields() -> [String: String] {
        var fields: [String: String] = [:]
        if let object = try? JSONSerialization.jsonObject(with: Data(config.canonicalJSON().utf8)) as? [String: Any] {
            for (key, value) in object {
                let data = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])) ?? Data()
                fields[Self.flagName(key)] = String(decoding: data, as: UTF8.self)
            }
        }
        let resume: String
        switch options.resume {
        case .none: resume = "none"
        case .latest: resume = "latest"
        case .file(let path): resume = "file " + path
        }
        fields["checkpoint-every"] = options.checkpointEvery.map(String.init) ?? "off"
        fields["step-timeout"] = options.stepTimeout.map { "\($0)" } ?? "off"
        fields["resume"] = resume
        fields["keep"] = "\(options.keep)"
        fields["run-dir"] = options.runDirectory
        return fields
    }

    /// The command-line name of a `TrainConfig` field: `maxSteps` → `max-steps`, `learningRate` → `lr`.
    static func flagName(_ field: String) -> String {
        let named = ["dataDirectory": "data", "learningRate": "lr", "adam": "weight-decay/adam",
                     "augmentation": "augmentation (--rotation, --shift, --zoom, --shear, --fill, --elastic)",
                     "restoreBestWeights": "restore-best-weights"]
        if let name = named[field] { return name }
        return field.reduce(into: "") { out, c in out += c.isUppercase ? "-" + c.lowercased() : String(c) }
    }

    /// The other ranks wait here while rank 0 writes files, under `--step-timeout` like every
    /// wait: a rank 0 that stalls mid-write (a hung file system, SIGSTOP) ends the job with
    /// this phase named, so the timeout must leave room for a checkpoint write.
    func waitForRootFiles() throws {
        guard comm.size > 1 else { return }
        comm.phase = "waiting for rank 0's files"
        try comm.barrier()
    }

    /// Every rank must end with the same weights; a difference is a bug worth stopping for.
    func verifyIdenticalWeights(_ hash: String) throws {
        if let d = try comm.firstRankDiffering(from: Array(hash.utf8), phase: "final weight check") {
            throw RunError.diverged("rank \(d.rank) ended with weights \(d.all[d.rank].prefix(16)), rank 0 with \(d.all[0].prefix(16))")
        }
    }

    /// Keras's EarlyStopping and ReduceLROnPlateau, decided on rank 0 and broadcast (one
    /// message) so every rank leaves together and trains on at the same rate.
    /// Returns whether the monitored metric improved.
    func decideEarlyStopping(_ state: inout TrainingState, metrics: EpochMetrics, schedule: LearningRateSchedule) throws -> Bool {
        var es = state.earlyStopping
        var plateau = state.plateau
        var improved = false
        if comm.rank == 0, case .plateau(let factor, let patience) = schedule, let loss = metrics.valLoss {
            var p = plateau ?? PlateauState()
            _ = p.update(loss: loss, factor: factor, patience: patience)
            plateau = p
        }
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
        var bytes = [UInt8](try JSONEncoder.distcnn.encode(EarlyStoppingDecision(state: es, improved: improved, plateau: plateau)))
        comm.phase = "early-stopping decision"
        try comm.broadcast(&bytes, root: 0)
        let decision = try JSONDecoder.distcnn.decode(EarlyStoppingDecision.self, from: Data(bytes))
        state.earlyStopping = decision.state
        state.plateau = decision.plateau
        return decision.improved
    }

    struct EarlyStoppingDecision: Codable { var state: EarlyStoppingState; var improved: Bool; var plateau: PlateauState? }
}
