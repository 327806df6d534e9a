import Foundation

/// One rank of an in-process group (one thread per rank), for unit tests.
///
/// Collectives behave as with MPI: sums are taken in rank order, so every rank gets
/// the same bits and runs are deterministic; `timeout` works the same way (a rank that
/// never arrives makes the others throw `CollectiveError.timeout`).
public final class ThreadedCommunicator: Communicator {
    public let rank: Int
    public var size: Int { group.size }
    public var localRank: Int { rank }
    public var localSize: Int { group.size }
    public let hostName: String
    private let group: ThreadedGroup
    private let state = Locked((phase: "startup", timeout: Double?.none))

    private init(rank: Int, group: ThreadedGroup) {
        self.rank = rank
        self.group = group
        hostName = localHostName()
    }

    /// Makes a group of `size` ranks; element `i` is rank `i`, to be driven by its own thread.
    ///
    /// `abortHandler` runs when a rank calls `abort(code:)`, after the group is broken so
    /// that the other ranks' collectives throw instead of waiting; by default it exits
    /// the process with `code`, as an MPI job would end.
    public static func makeGroup(
        size: Int,
        abortHandler: @escaping @Sendable (_ rank: Int, _ code: Int32) -> Never = { _, code in exit(code) }
    ) -> [Communicator] {
        let group = ThreadedGroup(size: size, abortHandler: abortHandler)
        return (0 ..< size).map { ThreadedCommunicator(rank: $0, group: group) }
    }

    public var phase: String {
        get { state.current.phase }
        set { state.withLock { $0.phase = newValue } }
    }

    public var timeout: Double? {
        get { state.current.timeout }
        set {
            precondition(newValue.map { $0 > 0 } ?? true, "timeout must be positive, got \(newValue!)")
            state.withLock { $0.timeout = newValue }
        }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try reduce(buffer, +)
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try reduce(buffer, +)
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try reduce(buffer) { Swift.max($0, $1) }
    }

    /// Sums the bucket at once (the other ranks' threads meet here), in rank order as
    /// `allReduceSum` sums: nothing is left in flight.
    public func startReduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, range: Range<Int>) throws {
        try reduce(UnsafeMutableBufferPointer(rebasing: buffer[range]), +)
    }

    public func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Int64>) throws {
        try reduce(buffer, &+)
    }

    public func progressReduceScatter() throws {}
    public func finishReduceScatter() throws {}

    public func allGatherShards(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        let all = try exchange(Array(buffer[shard(of: buffer.count)])).map { $0 as! [Float] }
        for (r, values) in all.enumerated() {
            let range = shardRange(of: buffer.count, rank: r, size: size)
            precondition(values.count == range.count, "rank \(r) gathered a different element count than rank \(rank)")
            for (i, v) in zip(range, values) { buffer[i] = v }
        }
    }

    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        precondition((0 ..< size).contains(root), "broadcast root \(root) is outside 0..<\(size)")
        let all = try exchange(bytes)
        if rank != root { bytes = all[root] as! [UInt8] }
    }

    public func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        try exchange(bytes).map { $0 as! [UInt8] }
    }

    public func barrier() throws {
        _ = try exchange(())
    }

    public func abort(code: Int32) -> Never {
        group.breakGroup(reason: "rank \(rank) aborted with code \(code)")
        group.abortHandler(rank, code)
    }

    public func finalize() {
        group.breakGroup(reason: "rank \(rank) has finalized")
    }

    // MARK: Helpers

    /// Every rank's value in rank order, under this rank's phase and timeout.
    private func exchange(_ value: Any) throws -> [Any] {
        let (phase, timeout) = state.current
        return try group.exchange(rank: rank, value: value, phase: phase, timeout: timeout)
    }

    /// Combines all ranks' buffers element-wise, folding in rank order.
    private func reduce<T>(_ buffer: UnsafeMutableBufferPointer<T>, _ combine: (T, T) -> T) throws {
        let all = try exchange(Array(buffer)).map { $0 as! [T] }
        for (r, values) in all.enumerated() {
            precondition(values.count == buffer.count,
                         "rank \(r) reduced \(values.count) elements, rank \(rank) \(buffer.count)")
        }
        for i in 0 ..< buffer.count {
            var total = all[0][i]
            for r in 1 ..< all.count { total = combine(total, all[r][i]) }
            buffer[i] = total
        }
    }
}
