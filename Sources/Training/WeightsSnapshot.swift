import Engine
import Foundation

/// A copy of everything a model computes with: its parameters, then its state (batch-norm
/// running statistics), in one buffer of P + S floats. It is the best weights kept for early
/// stopping, the message that gives every rank rank 0's start, and a checkpoint's `best.*`.
final class WeightsSnapshot {
    let parameterCount: Int, stateCount: Int
    /// (P + S) parameters, then state.
    let buffer: FloatBuffer

    /// A copy of `model`'s weights now.
    init(of model: Model) {
        parameterCount = model.parameterCount; stateCount = model.stateCount
        buffer = FloatBuffer(count: parameterCount + stateCount)
        capture(model)
    }

    func capture(_ model: Model) {
        precondition(model.parameterCount == parameterCount && model.stateCount == stateCount, "WeightsSnapshot: another model")
        buffer.pointer.update(from: model.parameters.pointer, count: parameterCount)
        (buffer.pointer + parameterCount).update(from: model.state.pointer, count: stateCount)
    }

    func restore(into model: Model) {
        precondition(model.parameterCount == parameterCount && model.stateCount == stateCount, "WeightsSnapshot: another model")
        model.parameters.pointer.update(from: buffer.pointer, count: parameterCount)
        model.state.pointer.update(from: buffer.pointer + parameterCount, count: stateCount)
    }

    /// Where tensor `t` of the model sits in the snapshot.
    func pointer(to t: NamedTensor) -> UnsafeMutablePointer<Float> {
        (t.region == .parameters ? buffer.pointer : buffer.pointer + parameterCount) + t.offset
    }

    /// The snapshot's bytes (little-endian floats), e.g. to broadcast.
    var bytes: [UInt8] { [UInt8](UnsafeRawBufferPointer(start: buffer.pointer, count: buffer.count * 4)) }

    /// Replaces the snapshot with `bytes` as `bytes` gives them.
    func load(_ bytes: [UInt8]) {
        precondition(bytes.count == buffer.count * 4, "WeightsSnapshot: \(bytes.count) bytes for \(buffer.count) floats")
        bytes.withUnsafeBytes { _ = memcpy(buffer.pointer, $0.baseAddress!, bytes.count) }
    }
}
