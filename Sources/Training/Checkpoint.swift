import Data
import Engine
import Foundation
import Hashing

/// A training checkpoint in safetensors: weights and running statistics under their layer
/// names (`layers.3.weight`), Adam moments as `adam.m.*` / `adam.v.*`, the best weights so far
/// as `best.*`, and in `__metadata__`: format, version, the model spec, the training state and
/// three SHA-256s:
/// - `data_sha256`: the data section (every tensor's bytes);
/// - `header_sha256`: the tensor table (each tensor's name, dtype, shape and byte offsets, in
///   name order) and every metadata entry but the two header hashes, `data_sha256` among them,
///   so this one hash covers everything the checkpoint says;
/// - `metadata_sha256`: every metadata entry but itself (kept so older builds still check).
///
/// `header_sha256` came without a version bump: version-1 files written before it still
/// resume with the checks they had (data and metadata only; `inspect` says the table is
/// unchecked), older builds read the new files, and a file that has the key is refused when
/// the table does not match it. Removing the key from a new file changes the metadata, which
/// `metadata_sha256` covers.
public struct Checkpoint {
    public static let format = "distcnn-checkpoint"
    public static let version = "1"

    public var file: SafeTensorsFile
    public var spec: ModelSpec
    public var state: TrainingState

    /// Captures the model (or, when given, `weights` of it), optimizer and run state.
    init(model: Model, weights: WeightsSnapshot? = nil, adam: Adam?, state: TrainingState, best: WeightsSnapshot? = nil,
         ema: WeightAverage? = nil) {
        var f = SafeTensorsFile()
        for t in model.tensors {
            f.append(t.name, shape: t.shape, values: UnsafeBufferPointer(start: weights?.pointer(to: t) ?? model.pointer(to: t), count: t.count))
        }
        for t in model.tensors where t.region == .parameters {
            if let adam {
                f.append("adam.m." + t.name, shape: t.shape, values: UnsafeBufferPointer(start: adam.m.pointer + t.offset, count: t.count))
                f.append("adam.v." + t.name, shape: t.shape, values: UnsafeBufferPointer(start: adam.v.pointer + t.offset, count: t.count))
            }
        }
        if let ema {
            for t in model.tensors where t.region == .parameters {
                f.append("ema." + t.name, shape: t.shape, values: UnsafeBufferPointer(start: ema.shadow.pointer + t.offset, count: t.count))
            }
        }
        if let best {
            for t in model.tensors {
                f.append("best." + t.name, shape: t.shape, values: UnsafeBufferPointer(start: best.pointer(to: t), count: t.count))
            }
        }
        var st = state
        st.adamStep = adam?.step ?? state.adamStep
        st.emaUpdates = ema?.updates ?? state.emaUpdates
        f.metadata = [
            "format": Checkpoint.format, "version": Checkpoint.version,
            "model": model.spec.canonicalJSON(),
            "state": Checkpoint.encode(st),
        ]
        Checkpoint.seal(&f)
        file = f; spec = model.spec; self.state = st
    }

    /// A step checkpoint of `model` and `adam` (tools and tests).
    public init(model: Model, adam: Adam?, state: TrainingState) {
        self.init(model: model, weights: nil, adam: adam, state: state)
    }

    /// Sets the three hashes of `f` (data, header, metadata) from its tensors and metadata.
    public static func seal(_ f: inout SafeTensorsFile) {
        f.metadata["data_sha256"] = SHA256.hex(f.data.withUnsafeBytes { SHA256.hash($0) })
        f.metadata["header_sha256"] = headerHash(f)
        f.metadata["metadata_sha256"] = metadataHash(f.metadata)
    }

    /// SHA-256 over the metadata that is not the data checksum itself (model spec, state, …),
    /// so a damaged header is caught as surely as damaged tensors.
    static func metadataHash(_ m: [String: String]) -> String {
        var h = SHA256()
        for key in m.keys.sorted() where key != "metadata_sha256" {
            h.update(Array(key.utf8) + [0] + Array(m[key]!.utf8) + [0])
        }
        return SHA256.hex(h.finalize())
    }

    /// SHA-256 over the canonical tensor table (sorted by name: name, dtype, shape, offsets)
    /// and the metadata but the header hashes. Every field is length-prefixed, so no two tables
    /// hash the same bytes.
    static func headerHash(_ f: SafeTensorsFile) -> String {
        var h = SHA256()
        func field(_ s: String) { h.update(Array("\(s.utf8.count):".utf8) + Array(s.utf8)) }
        field("tensors \(f.entries.count)")
        for e in f.entries.sorted(by: { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }) {
            field(e.name); field("F32")
            field(e.shape.map(String.init).joined(separator: ","))
            field("\(e.range.lowerBound),\(e.range.upperBound)")
        }
        let keys = f.metadata.keys.filter { $0 != "header_sha256" && $0 != "metadata_sha256" }
        field("metadata \(keys.count)")
        for key in keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) { field(key); field(f.metadata[key]!) }
        return SHA256.hex(h.finalize())
    }

    /// Whether every value of every tensor is finite: a checkpoint holding a nan or an inf
    /// (a diverged run) is not a point to resume from or to evaluate.
    public static func allFinite(_ f: SafeTensorsFile) -> Bool { firstNonFinite(f) == nil }

    /// The first tensor holding a non-finite value, if any.
    static func firstNonFinite(_ f: SafeTensorsFile) -> String? {
        f.data.withUnsafeBytes { raw -> String? in
            for e in f.entries {
                var finite = true
                // Byte-wise so the data section's alignment does not matter: exponent all ones.
                var i = e.range.lowerBound
                while i < e.range.upperBound {
                    if raw[i + 3] & 0x7F == 0x7F && raw[i + 2] & 0x80 == 0x80 { finite = false; break }
                    i += 4
                }
                if !finite { return e.name }
            }
            return nil
        }
    }

    /// The first field of a decoded training state outside its range, as "field is value,
    /// outside range", or nil. Counts are bounded so that the trainer's arithmetic on them
    /// (epoch + 1, steps × epochs) cannot overflow; the normalizer must fit the model's input.
    static func stateProblem(_ s: TrainingState, spec: ModelSpec) -> String? {
        let epochs = 0...Int(Int32.max), steps = 0...(1 << 48), batch = 1...(1 << 24)
        func int(_ name: String, _ v: Int, _ r: ClosedRange<Int>) -> String? {
            r.contains(v) ? nil : "\(name) is \(v), outside \(r.lowerBound)...\(r.upperBound)"
        }
        func real(_ name: String, _ v: Double, min: Double = 0) -> String? {
            v.isFinite && v >= min ? nil : "\(name) is \(v), not a finite number ≥ \(min)"
        }
        let c = s.config
        var checks: [String?] = [
            int("epoch", s.epoch, epochs), int("stepInEpoch", s.stepInEpoch, steps), int("globalStep", s.globalStep, steps),
            int("adamStep", s.adamStep, steps), int("emaUpdates", s.emaUpdates, steps),
            int("earlyStopping.bestEpoch", s.earlyStopping.bestEpoch, epochs), int("earlyStopping.wait", s.earlyStopping.wait, epochs),
            int("config.epochs", c.epochs, epochs), int("config.batchSize", c.batchSize, batch),
            int("config.evalBatchSize", c.evalBatchSize, batch), int("config.patience", c.patience, epochs),
            int("config.warmupSteps", c.warmupSteps, steps), int("config.validationSplit", c.validationSplit, 0...Int(Int32.max)),
            c.maxSteps.flatMap { int("config.maxSteps", $0, steps) }, c.trainLimit.flatMap { int("config.trainLimit", $0, 0...Int(Int32.max)) },
            c.testLimit.flatMap { int("config.testLimit", $0, 0...Int(Int32.max)) },
            s.threads.flatMap { int("threads", $0, 1...65536) },
            real("epochLossSum", s.epochLossSum), real("epochCorrect", s.epochCorrect), real("epochSeen", s.epochSeen),
            real("trainSeconds", s.trainSeconds), real("config.learningRate", c.learningRate),
            real("config.minDelta", c.minDelta, min: -.greatestFiniteMagnitude),
            s.earlyStopping.best.flatMap { real("earlyStopping.best", $0, min: -.greatestFiniteMagnitude) },
            s.plateau.flatMap { int("plateau.wait", $0.wait, epochs) },
            s.plateau.flatMap { $0.factor > 0 && $0.factor <= 1 ? nil : "plateau.factor is \($0.factor), outside (0, 1]" },
            s.plateau?.best.flatMap { real("plateau.best", $0, min: -.greatestFiniteMagnitude) },
            s.history.count <= 1 << 20 ? nil : "history has \(s.history.count) epochs, more than \(1 << 20)",
        ]
        for (i, m) in s.history.enumerated() {
            checks.append(int("history[\(i)].epoch", m.epoch, epochs))
            checks.append(int("history[\(i)].globalStep", m.globalStep, steps))
        }
        if let p = checks.lazy.compactMap({ $0 }).first { return p }
        let n = s.normalizer, channels = spec.input.count == 3 ? spec.input[2] : 1
        guard n.mean.count == n.std.count, n.mean.count == 1 || n.mean.count == channels else {
            let wanted = channels == 1 ? "one of each" : "one of each, or \(channels) of each"
            return "normalizer has \(n.mean.count) means and \(n.std.count) standard deviations for a model input of \(channels) channel\(channels == 1 ? "" : "s") (it needs \(wanted))"
        }
        guard n.mean.allSatisfy(\.isFinite), n.std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            return "normalizer has mean \(n.mean) and std \(n.std); each mean must be finite and each std finite and > 0"
        }
        return nil
    }

    static func encode(_ s: TrainingState) -> String {
        String(decoding: try! JSONEncoder.sorted.encode(s), as: UTF8.self)
    }

    /// Whether it holds optimizer state, i.e. can be resumed from (step checkpoints do; `final`
    /// and `best` hold only the weights they were evaluated with).
    public var hasAdam: Bool { file.entries.contains { $0.name.hasPrefix("adam.m.") } }
    public var hasBest: Bool { file.entries.contains { $0.name.hasPrefix("best.") } }

    /// Parses and validates a checkpoint's bytes: container, format, checksum, model spec.
    public static func parse(_ bytes: [UInt8], source: String) throws -> Checkpoint {
        let f: SafeTensorsFile
        do { f = try SafeTensorsFile.parse(bytes) } catch let e as SafeTensorsError { throw refusal(e, source: source) }
        guard f.metadata["format"] == format else {
            throw CheckpointError.notCheckpoint(source, "safetensors without format=\(format) in its metadata")
        }
        guard f.metadata["version"] == version else {
            throw CheckpointError.notCheckpoint(source, "checkpoint version \(f.metadata["version"] ?? "?") (this build reads \(version))")
        }
        let want = f.metadata["data_sha256"] ?? ""
        let have = SHA256.hex(f.data.withUnsafeBytes { SHA256.hash($0) })
        guard want == have else { throw CheckpointError.checksum(source, "data", want: want, have: have) }
        let wantMeta = f.metadata["metadata_sha256"] ?? "", haveMeta = metadataHash(f.metadata)
        guard wantMeta == haveMeta else { throw CheckpointError.checksum(source, "metadata", want: wantMeta, have: haveMeta) }
        if let wantHeader = f.metadata["header_sha256"] {
            let haveHeader = headerHash(f)
            guard wantHeader == haveHeader else {
                throw CheckpointError.checksum(source, "header (tensor table and metadata)", want: wantHeader, have: haveHeader)
            }
        }
        let spec: ModelSpec, state: TrainingState
        do {
            spec = try ModelSpec.decode(Data((f.metadata["model"] ?? "").utf8), source: "\(source) model")
            state = try JSONDecoder.distcnn.decode(TrainingState.self, from: Data((f.metadata["state"] ?? "").utf8))
        } catch {
            throw CheckpointError.notCheckpoint(source, "metadata does not decode: \(error)")
        }
        if let problem = stateProblem(state, spec: spec) { throw CheckpointError.badState(source, problem) }
        if let tensor = firstNonFinite(f) { throw CheckpointError.nonFinite(source, tensor) }
        return Checkpoint(file: f, spec: spec, state: state)
    }

    init(file: SafeTensorsFile, spec: ModelSpec, state: TrainingState) {
        self.file = file; self.spec = spec; self.state = state
    }

    /// The largest checkpoint file read.
    public static let maxFileSize = 4 << 30

    /// Reads a checkpoint file, the header first: a regular file only, its size within
    /// `maxFileSize`, the 8-byte length and the header it states checked before the body is
    /// read, and the body read only when it is exactly what the header's tensors promise.
    public static func read(path: String) throws -> Checkpoint {
        try parse(try readBytes(path: path), source: path)
    }

    /// The bytes of a checkpoint file, read as `read(path:)` does, for `parse`.
    public static func readBytes(path: String) throws -> [UInt8] {
        do {
            let file = try FileReader(path: path, limit: maxFileSize, what: "checkpoint")
            var bytes = try file.read(count: min(8, file.size))
            let headerLength: Int
            do { headerLength = try SafeTensorsFile.headerLength(bytes, fileSize: file.size) } catch let e as SafeTensorsError {
                throw Checkpoint.refusal(e, source: path)
            }
            bytes += try file.read(count: headerLength)
            do { _ = try SafeTensorsFile.parseHeader(bytes, dataCount: file.size - 8 - headerLength) } catch let e as SafeTensorsError {
                throw Checkpoint.refusal(e, source: path)
            }
            bytes += try file.read(count: file.size - 8 - headerLength)
            guard bytes.count == file.size else {
                throw CheckpointError.truncated(path, "the file shrank from \(file.size) to \(bytes.count) bytes while it was read")
            }
            return bytes
        } catch let e as DataError {
            throw CheckpointError.io(path, ioProblem(e, what: "checkpoint"))
        }
    }

    static func refusal(_ e: SafeTensorsError, source: String) -> CheckpointError {
        if case .truncated(let m) = e { return .truncated(source, m) }
        return .notCheckpoint(source, e.description)
    }

    /// Copies weights and running statistics (and, when given, Adam moments and best weights)
    /// into `model`, after checking that the checkpoint is of the same model.
    public func restore(into model: Model, adam: Adam? = nil, ema: WeightAverage? = nil, source: String) throws {
        try restore(into: model, adam: adam, best: nil, ema: ema, source: source)
    }

    /// The same, also filling `best` from the checkpoint's `best.*` when it holds them.
    func restore(into model: Model, adam: Adam?, best: WeightsSnapshot?, ema: WeightAverage?, source: String) throws {
        guard spec.layers == model.spec.layers, spec.input == model.spec.input else {
            throw CheckpointError.otherModel(source, modelDifference(spec, model.spec))
        }
        func take(_ name: String, _ t: NamedTensor, _ dest: UnsafeMutablePointer<Float>) throws {
            guard let e = file.entry(name) else { throw CheckpointError.otherModel(source, "tensor \(name) is missing") }
            guard e.shape == t.shape else {
                throw CheckpointError.otherModel(source, "tensor \(name) has shape \(e.shape), the model needs \(t.shape)")
            }
            file.copy(e, to: dest)
        }
        for t in model.tensors { try take(t.name, t, model.pointer(to: t)) }
        if let adam {
            for t in model.tensors where t.region == .parameters {
                try take("adam.m." + t.name, t, adam.m.pointer + t.offset)
                try take("adam.v." + t.name, t, adam.v.pointer + t.offset)
            }
            adam.step = state.adamStep
        }
        if let ema {
            for t in model.tensors where t.region == .parameters {
                try take("ema." + t.name, t, ema.shadow.pointer + t.offset)
            }
            ema.updates = state.emaUpdates
        }
        if let best, hasBest {
            for t in model.tensors { try take("best." + t.name, t, best.pointer(to: t)) }
        }
    }
}

/// Why a checkpoint was refused; one line each, with the file.
public enum CheckpointError: Error, CustomStringConvertible {
    case truncated(String, String)
    /// The file, what the hash covers, the hash the header states, the one computed.
    case checksum(String, String, want: String, have: String)
    case badState(String, String)
    case nonFinite(String, String)
    case otherModel(String, String)
    case notCheckpoint(String, String)
    case io(String, String)
    case mismatch(String, String)

    public var description: String {
        switch self {
        case let .truncated(f, m): return "\(f): checkpoint is truncated: \(m) (the write was cut short; use an older checkpoint)"
        case let .checksum(f, what, want, have):
            return "\(f): checkpoint fails its checksum: \(what) SHA-256 is \(have.prefix(16))…, the file says \(want.isEmpty ? "nothing" : want.prefix(16) + "…") (the file is corrupted; use an older checkpoint)"
        case let .badState(f, m): return "\(f): checkpoint holds an impossible training state: \(m) (the file was altered; use another checkpoint)"
        case let .nonFinite(f, t):
            return "\(f): checkpoint holds non-finite values (nan or inf) in \(t): the run had diverged, so it is not a valid point to resume from or evaluate (use an older checkpoint)"
        case let .otherModel(f, m): return "\(f): checkpoint belongs to another model: \(m)"
        case let .notCheckpoint(f, m): return "\(f): not a distcnn checkpoint: \(m)"
        case let .io(f, m): return "\(f): \(m)"
        case let .mismatch(f, m): return "\(f): checkpoint does not fit this run: \(m)"
        }
    }
}

/// Reads a whole regular file after checking its size (with `fstat`) against `limit`:
/// FIFOs, devices and folders are refused before anything is read.
func readFile(_ path: String, limit: Int, what: String) throws -> [UInt8] {
    do { return try FileReader.contents(of: path, limit: limit, what: what) } catch let e as DataError {
        throw CheckpointError.io(path, ioProblem(e, what: what))
    }
}

/// A data-layer error about a file, in the words of `CheckpointError.io` (no path repeated).
func ioProblem(_ e: DataError, what: String) -> String {
    switch e {
    case .notFound: return "no such \(what) file"
    case let .unreadable(_, reason): return "cannot read the \(what): \(reason)"
    default: return "\(e)"
    }
}
