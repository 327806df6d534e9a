#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A group of one: reductions, broadcasts and barriers return at once, abort exits.
///
/// The training code runs the same path with one process as with many; this is what
/// it talks to when the program was not started by `mpirun`.
public final class SingleProcessCommunicator: Communicator {
    public let rank = 0
    public let size = 1
    public let localRank = 0
    public let localSize = 1
    public let hostName: String
    private let state = Locked((phase: "startup", timeout: Double?.none))

    public init() {
        hostName = localHostName()
    }

    public var phase: String {
        get { state.current.phase }
        set { state.withLock { $0.phase = newValue } }
    }

    public var timeout: Double? {
        get { state.current.timeout }
        set { state.withLock { $0.timeout = newValue } }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
    public func startReduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, range: Range<Int>) throws {}
    public func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Int64>) throws {}
    public func progressReduceScatter() throws {}
    public func finishReduceScatter() throws {}
    public func allGatherShards(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}

    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        precondition(root == 0, "broadcast root \(root) is outside a group of 1")
    }

    public func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] { [bytes] }
    public func barrier() throws {}

    public func abort(code: Int32) -> Never {
        exit(code)
    }

    public func finalize() {}
}
