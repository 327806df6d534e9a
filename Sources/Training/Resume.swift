import Collective
import Engine
import Foundation

/// Where a resumed run starts: rank 0 finds, reads and checks the checkpoint, and every rank
/// receives its bytes.
extension Trainer {
    /// Rank 0 reads and validates the checkpoint to resume from and broadcasts its bytes, so only
    /// rank 0 needs the file. Returns nil for a fresh start.
    func loadCheckpointForResume() throws -> Checkpoint? {
        // Rank 0 answers with [status] + payload: 0 fresh, 1 checkpoint bytes, 2 error text.
        var message: [UInt8] = [0]
        var found: Checkpoint?   // rank 0's, parsed and checked once
        if comm.rank == 0 {
            do {
                if let (path, bytes, ckpt) = try findResumeCheckpoint() {
                    try checkCompatible(ckpt, source: path)
                    message = [1] + bytes
                    found = ckpt
                    recorder.line("resuming from \(path)")
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
        case 1: return try found ?? Checkpoint.parse(Array(message[1...]), source: "checkpoint from rank 0")
        case 2: throw RunError.resume(String(decoding: message[1...], as: UTF8.self))
        default: return nil
        }
    }

    /// The checkpoint to resume from (its path, bytes and parse), on rank 0; nil for a fresh start.
    func findResumeCheckpoint() throws -> (String, [UInt8], Checkpoint)? {
        switch options.resume {
        case .none: return nil
        case .file(let path):
            let bytes = try Checkpoint.readBytes(path: path)
            return (path, bytes, try Checkpoint.parse(bytes, source: path))
        case .latest:
            guard let files = recorder.files else { return nil }
            for path in files.stepCheckpoints().reversed() {
                do {
                    let bytes = try Checkpoint.readBytes(path: path)   // a truncated file is skipped too
                    return (path, bytes, try Checkpoint.parse(bytes, source: path))
                } catch {
                    recorder.warning("skipping \(path): \(error)")
                }
            }
            recorder.line("no checkpoint in \(files.checkpointDirectory): starting fresh")
            return nil
        }
    }

    func checkCompatible(_ ckpt: Checkpoint, source: String) throws {
        guard ckpt.spec.layers == config.model.layers, ckpt.spec.input == config.model.input else {
            throw CheckpointError.otherModel(source, modelDifference(ckpt.spec, config.model))
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
}

/// How the checkpoint's network differs from the run's, in words: by name when the names
/// differ, else by what differs under the one name.
func modelDifference(_ theirs: ModelSpec, _ mine: ModelSpec) -> String {
    if theirs.name != mine.name { return "it holds model '\(theirs.name)', the run uses '\(mine.name)'" }
    if theirs.input != mine.input {
        return "it holds another network named '\(mine.name)': input \(theirs.input) in the checkpoint, \(mine.input) in the run"
    }
    if theirs.layers.count != mine.layers.count {
        return "it holds another network named '\(mine.name)': \(theirs.layers.count) layers in the checkpoint, \(mine.layers.count) in the run"
    }
    let i = theirs.layers.indices.first { theirs.layers[$0] != mine.layers[$0] } ?? 0
    func fields(_ layer: LayerSpec) -> [String: String] {
        let data = (try? JSONEncoder.sorted.encode(layer)) ?? Data()
        let object = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
        return object.mapValues { "\($0)" }
    }
    let a = fields(theirs.layers[i]), b = fields(mine.layers[i])
    let keys = Set(a.keys).union(b.keys).sorted().filter { a[$0] != b[$0] }
    let what = keys.map { "\($0) \(a[$0] ?? "unset") in the checkpoint, \(b[$0] ?? "unset") in the run" }.joined(separator: "; ")
    return "it holds another network named '\(mine.name)': layer \(i) (\(mine.layers[i].type.rawValue)) differs: \(what)"
}
