import Foundation

/// A 64-byte-aligned, zero-filled Float allocation that lives as long as its owner.
/// Engine buffers (parameters, gradients, activations, workspaces) are allocated once
/// per batch size and reused, so the training step never allocates.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0)
        self.count = count
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        memset(raw, 0, bytes)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { free(pointer) }

    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }

    public func zero() { memset(pointer, 0, count * MemoryLayout<Float>.stride) }

    public func copy(from other: UnsafePointer<Float>, count n: Int) {
        precondition(n <= count)
        pointer.update(from: other, count: n)
    }

    public var array: [Float] { Array(buffer) }
}

/// Activation shape of one example: channels × height × width (NCHW without the N).
/// Dense features are `c` channels of 1×1.
public struct Shape: Equatable, CustomStringConvertible, Sendable {
    public var c: Int, h: Int, w: Int
    public init(c: Int, h: Int, w: Int) { self.c = c; self.h = h; self.w = w }
    public init(features: Int) { self.init(c: features, h: 1, w: 1) }
    public var count: Int { c * h * w }
    public var spatial: Int { h * w }
    public var isFlat: Bool { h == 1 && w == 1 }
    /// Keras order, as `(None, H, W, C)` or `(None, F)` shows it.
    public var description: String { isFlat ? "(\(c))" : "(\(h), \(w), \(c))" }
}
