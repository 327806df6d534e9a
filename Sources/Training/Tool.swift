import Collective
import Data
import Engine
import Foundation

/// What the command-line tool's commands compute. Each returns a value or throws; the `distcnn`
/// target prints. `train` and `bench` also own the process's MPI set-up and turn a run's end
/// into an exit code, since an error on one rank must end the whole job.
public enum Tool {
    /// `distcnn train`: returns the process exit code.
    public static func train(config: TrainConfig, options: RunOptions) -> Int32 {
        // The process's signal handlers belong to the program, not to the library's loop, which
        // only reads the flag they raise; they are in place before MPI starts.
        StopSignal.install()
        return onEveryRank { comm in
            if comm.isRoot { StopSignal.announce() }
            _ = try Trainer(config: config, options: options, comm: comm).run()
        }
    }

    /// Runs `body` on every rank of the job (one process without mpirun) and returns the exit
    /// code: 0, 128 + the signal when a signal stopped the run (130, 143, 138), 1 after an error.
    static func onEveryRank(_ body: (Communicator) throws -> Void) -> Int32 {
        let comm: Communicator
        do { comm = try makeCommunicator() } catch {
            Console.error("cannot start MPI: \(error)"); return 1
        }
        defer { comm.finalize() }
        do {
            try body(comm)
            return 0
        } catch let f as RunFinished {
            if comm.rank == 0 { print(f.description) }
            return 0
        } catch let p as Preempted {
            if comm.rank == 0 { Console.warning(p.description) }
            return p.exitCode
        } catch {
            return fail(error, comm: comm)
        }
    }

    /// Reports an error. Errors every rank reached together (bad flags, data, checkpoints
    /// refused, a NaN loss) are printed once by rank 0; an error on one rank alone is printed
    /// by that rank and ends the whole job, since the others would wait for it forever.
    static func fail(_ error: Error, comm: Communicator) -> Int32 {
        let collective = error is RunError
        if comm.size > 1 && !collective {
            Console.error("rank \(comm.rank): \(error)")
            // MPI_Abort needs mpirun's daemon; if this host is cut off it never returns, so a
            // watchdog ends the process regardless after a grace period.
            Thread.detachNewThread { sleep(3); _exit(1) }
            comm.abort(code: 1)
        }
        if comm.rank == 0 { Console.error("\(error)") }
        return 1
    }

    /// `distcnn evaluate --checkpoint FILE`: the checkpoint's model scored on a test set (by
    /// default the one it was trained on).
    public static func evaluate(checkpoint path: String, data: String?, batchSize: Int) throws -> CheckpointEvaluation {
        let ckpt = try Checkpoint.read(path: path)
        let model = try Model(spec: ckpt.spec)
        try requireClassifier(model)
        try model.checkInferenceMemory(batch: batchSize, hint: "use a smaller --batch-size")
        try ckpt.restore(into: model, source: path)
        let dataDirectory = data ?? ckpt.state.config.dataDirectory
        let (_, test) = try MNISTFiles.load(directory: dataDirectory)
        try requireFits(model, [test], directory: dataDirectory)
        let r = try Training.evaluate(model: model, dataset: test, normalizer: ckpt.state.normalizer,
                                      batchSize: batchSize, comm: SingleProcessCommunicator())
        return CheckpointEvaluation(model: ckpt.spec.name, checkpoint: path, loss: r.loss, accuracy: r.accuracy,
                                    count: r.count, confusion: r.confusion)
    }

    /// `distcnn summary`: the model's layer table, `input` (height, width, channels) replacing
    /// its own; memory for training batches of `batchSize`, by default the one `train` would
    /// use (the model's own batch size, else `TrainConfig`'s default).
    public static func summary(model name: String, input: [Int]?, batchSize: Int?) throws -> ModelSummary {
        var spec = try ModelSpec.load(name)
        if let input { spec.input = input }
        return ModelSummary(model: try Model(spec: spec), batchSize: batchSize ?? spec.batchSize ?? TrainConfig(model: spec).batchSize)
    }

    /// `distcnn inspect FILE`: what a checkpoint holds; throws when it is not a valid one.
    public static func inspect(path: String) throws -> CheckpointInspection {
        let ckpt = try Checkpoint.read(path: path)
        let st = ckpt.state
        let layerNames = ModelSummary.layerNames(ckpt.spec)
        let tensors = ckpt.file.entries.map { e -> CheckpointInspection.Tensor in
            let v = ckpt.file.values(e)
            let mean = v.isEmpty ? 0 : v.reduce(0.0) { $0 + Double($1) } / Double(v.count)
            return .init(name: e.name, layer: CheckpointInspection.layerIndex(e.name).flatMap { layerNames.indices.contains($0) ? layerNames[$0] : nil },
                         shape: e.shape, first: v.first.map { Double($0) } ?? 0, mean: mean)
        }
        let meta = ckpt.file.metadata
        var hashes: [CheckpointInspection.Hash] = [
            .init(name: "data_sha256", value: meta["data_sha256"] ?? "", covers: "the data section (every tensor's values)"),
            .init(name: "metadata_sha256", value: meta["metadata_sha256"] ?? "", covers: "every metadata entry but itself"),
        ]
        if let header = meta["header_sha256"] {
            hashes.insert(.init(name: "header_sha256", value: header,
                                covers: "the tensor table (names, shapes, offsets) and the metadata, data_sha256 included: the whole file"), at: 0)
        } else {
            hashes.insert(.init(name: "header_sha256", value: "",
                                covers: "absent (written before it existed): the tensor table (names, shapes, offsets) is not covered by any hash"), at: 0)
        }
        return CheckpointInspection(
            file: path, version: ckpt.file.metadata["version"] ?? Checkpoint.version, model: ckpt.spec.name,
            dataSHA256: meta["data_sha256"] ?? "", hashes: hashes,
            epoch: st.epoch, stepInEpoch: st.stepInEpoch, globalStep: st.globalStep, adamStep: ckpt.hasAdam ? st.adamStep : nil,
            seed: st.config.seed, batchSize: st.config.batchSize, historyEpochs: st.history.count,
            best: st.earlyStopping.best.map { .init(monitor: st.config.monitor, value: $0, epoch: st.earlyStopping.bestEpoch) },
            tensors: tensors)
    }
}

/// A checkpoint scored on a test set.
public struct CheckpointEvaluation: Sendable {
    public var model: String
    public var checkpoint: String
    /// Mean cross-entropy plus the L2 term, as Keras reports it.
    public var loss: Double
    public var accuracy: Double
    /// Test images scored.
    public var count: Int
    /// confusion[true][predicted]
    public var confusion: [[Int]]

    /// Each class's recall: the share of its images predicted right.
    public var perClassAccuracy: [Double] {
        confusion.enumerated().map { t, row in Double(row[t]) / Double(max(row.reduce(0, +), 1)) }
    }

    /// An off-diagonal cell of the confusion matrix.
    public struct ConfusedPair: Sendable, Equatable {
        public var trueClass: Int, predicted: Int, count: Int
    }

    /// The `limit` largest off-diagonal cells, largest first (ties: lower true, then predicted
    /// class first).
    public func mostConfused(limit: Int) -> [ConfusedPair] {
        var cells: [ConfusedPair] = []
        for (t, row) in confusion.enumerated() {
            for (p, n) in row.enumerated() where p != t && n > 0 { cells.append(.init(trueClass: t, predicted: p, count: n)) }
        }
        return Array(cells.sorted {
            $0.count != $1.count ? $0.count > $1.count : ($0.trueClass, $0.predicted) < ($1.trueClass, $1.predicted)
        }.prefix(limit))
    }
}

/// What a valid checkpoint holds.
public struct CheckpointInspection: Sendable {
    public var file: String
    /// The checkpoint format's version.
    public var version: String
    public var model: String
    public var dataSHA256: String
    /// Each SHA-256 the file states (all were checked) and what it covers.
    public var hashes: [Hash]
    /// Where training continues: 0-based epoch and the step within it.
    public var epoch: Int, stepInEpoch: Int
    /// Where training continues, 1-based as the training log counts epochs.
    public var nextEpoch: Int { epoch + 1 }
    /// The optimizer's step count; nil when the file holds no optimizer state (a `final` or
    /// `best` checkpoint, which cannot be resumed from).
    public var globalStep: Int, adamStep: Int?
    public var seed: UInt64, batchSize: Int
    /// Epochs recorded in the history.
    public var historyEpochs: Int
    /// The best value of the monitored metric so far, when there is one.
    public var best: Best?
    public var tensors: [Tensor]

    public struct Best: Sendable {
        public var monitor: TrainConfig.Monitor, value: Double, epoch: Int
    }

    public struct Hash: Sendable {
        /// The metadata key; `value` is empty when the file has none.
        public var name: String, value: String, covers: String
    }

    /// The layer index in a tensor's name (`layers.3.weight`, `adam.m.layers.3.weight` → 3).
    static func layerIndex(_ tensor: String) -> Int? {
        let parts = tensor.split(separator: ".")
        guard let at = parts.firstIndex(of: "layers"), at + 1 < parts.count else { return nil }
        return Int(parts[at + 1])
    }

    public struct Tensor: Sendable {
        /// `name` as stored (`layers.3.weight`); `layer` the summary's name of its layer
        /// (`conv2d_1`), nil for a tensor of no layer.
        public var name: String, layer: String?, shape: [Int]
        /// The first value and the mean of all values.
        public var first: Double, mean: Double
    }
}
