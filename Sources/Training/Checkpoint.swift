import Engine
import Foundation
import Hashing

/// A training checkpoint in safetensors: weights and running statistics under their layer
/// names (`layers.3.weight`), Adam moments as `adam.m.*` / `adam.v.*`, the best weights so far
/// as `best.*`, and in `__metadata__`: format, version, the model spec, the training state and
/// the SHA-256 of the data section.
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
            "data_sha256": SHA256.hex(f.data.withUnsafeBytes { SHA256.hash($0) }),
        ]
        f.metadata["metadata_sha256"] = Checkpoint.metadataHash(f.metadata)
        file = f; spec = model.spec; self.state = st
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
        do { f = try SafeTensorsFile.parse(bytes) } catch let e as SafeTensorsError {
            switch e {
            case .truncated(let m): throw CheckpointError.truncated(source, m)
            default: throw CheckpointError.notCheckpoint(source, e.description)
            }
        }
        guard f.metadata["format"] == format else {
            throw CheckpointError.notCheckpoint(source, "safetensors without format=\(format) in its metadata")
        }
        guard f.metadata["version"] == version else {
            throw CheckpointError.notCheckpoint(source, "checkpoint version \(f.metadata["version"] ?? "?") (this build reads \(version))")
        }
        let want = f.metadata["data_sha256"] ?? ""
        let have = SHA256.hex(f.data.withUnsafeBytes { SHA256.hash($0) })
        guard want == have else { throw CheckpointError.checksum(source, want: want, have: have) }
        let wantMeta = f.metadata["metadata_sha256"] ?? "", haveMeta = metadataHash(f.metadata)
        guard wantMeta == haveMeta else { throw CheckpointError.checksum(source, want: wantMeta, have: haveMeta) }
        let spec: ModelSpec, state: TrainingState
        do {
            spec = try ModelSpec.decode(Data((f.metadata["model"] ?? "").utf8), source: "\(source) model")
            state = try JSONDecoder.distcnn.decode(TrainingState.self, from: Data((f.metadata["state"] ?? "").utf8))
        } catch {
            throw CheckpointError.notCheckpoint(source, "metadata does not decode: \(error)")
        }
        return Checkpoint(file: f, spec: spec, state: state)
    }

    init(file: SafeTensorsFile, spec: ModelSpec, state: TrainingState) {
        self.file = file; self.spec = spec; self.state = state
    }

    /// Reads a checkpoint file (size checked before reading).
    public static func read(path: String) throws -> Checkpoint {
        try parse(try readFile(path, limit: 4 << 30, what: "checkpoint"), source: path)
    }

    /// Copies weights and running statistics (and, when given, Adam moments and best weights)
    /// into `model`, after checking that the checkpoint is of the same model.
    public func restore(into model: Model, adam: Adam? = nil, ema: WeightAverage? = nil, source: String) throws {
        try restore(into: model, adam: adam, best: nil, ema: ema, source: source)
    }

    /// The same, also filling `best` from the checkpoint's `best.*` when it holds them.
    func restore(into model: Model, adam: Adam?, best: WeightsSnapshot?, ema: WeightAverage?, source: String) throws {
        guard spec.layers == model.spec.layers, spec.input == model.spec.input else {
            throw CheckpointError.otherModel(source, "it holds model '\(spec.name)' with \(spec.layers.count) layers, the run uses '\(model.spec.name)' with \(model.spec.layers.count)")
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
    case checksum(String, want: String, have: String)
    case otherModel(String, String)
    case notCheckpoint(String, String)
    case io(String, String)
    case mismatch(String, String)

    public var description: String {
        switch self {
        case let .truncated(f, m): return "\(f): checkpoint is truncated: \(m) (the write was cut short; use an older checkpoint)"
        case let .checksum(f, want, have):
            return "\(f): checkpoint fails its checksum: data SHA-256 is \(have.prefix(16))…, header says \(want.prefix(16))… (the file is corrupted; use an older checkpoint)"
        case let .otherModel(f, m): return "\(f): checkpoint belongs to another model: \(m)"
        case let .notCheckpoint(f, m): return "\(f): not a distcnn checkpoint: \(m)"
        case let .io(f, m): return "\(f): \(m)"
        case let .mismatch(f, m): return "\(f): checkpoint does not fit this run: \(m)"
        }
    }
}

/// Reads a whole file after checking its size against `limit`.
func readFile(_ path: String, limit: Int, what: String) throws -> [UInt8] {
    guard let fh = FileHandle(forReadingAtPath: path) else {
        throw CheckpointError.io(path, "cannot open \(what) (\(String(cString: strerror(errno))))")
    }
    defer { try? fh.close() }
    let size = (try? fh.seekToEnd()) ?? 0
    guard size <= UInt64(limit) else { throw CheckpointError.io(path, "\(what) is \(size) bytes, more than the \(limit) allowed") }
    try? fh.seek(toOffset: 0)
    guard let data = try? fh.readToEnd() ?? Data() else { throw CheckpointError.io(path, "cannot read \(what)") }
    return [UInt8](data)
}
