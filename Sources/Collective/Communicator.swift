/// A group of ranks that run the same program and meet in collective operations.
///
/// Every rank must call the same collectives in the same order with matching sizes;
/// only flat buffers travel, never layer or tensor types. One thread per rank drives
/// the collectives (the properties may be read and set from any thread).
public protocol Communicator: AnyObject {
    /// This process's index in the group, `0 ..< size`.
    var rank: Int { get }
    /// Number of ranks in the group.
    var size: Int { get }
    /// Index among the ranks on this node (MPI_Comm_split_type SHARED).
    var localRank: Int { get }
    /// Number of ranks on this node, to share its cores among them.
    var localSize: Int { get }
    /// Name of the node this rank runs on.
    var hostName: String { get }
    /// Name of what the caller is doing now ("batch-norm forward", "gradient reduce-scatter", ...), named in timeout errors.
    var phase: String { get set }
    /// Seconds a collective may make no progress before it throws `CollectiveError.timeout`; nil = wait forever.
    var timeout: Double? { get set }

    /// Replaces `buffer` on every rank with the element-wise sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Replaces `buffer` on every rank with the element-wise sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Replaces `buffer` on every rank with the element-wise maximum over all ranks.
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Starts a reduce-scatter of elements `range` of `buffer` (a bucket): once finished, this
    /// rank's shard of the whole buffer (`shard(of: buffer.count)`) within `range` holds the
    /// element-wise sum over all ranks, and the rest of `range` is scratch. It may run while
    /// the caller computes other parts of `buffer`, but `range` must not be touched until
    /// `finishReduceScatter()`. All buckets until then belong to one buffer, and every rank
    /// starts the same buckets in the same order; the sums do not depend on the cutting.
    func startReduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, range: Range<Int>) throws
    /// Leaves in this rank's shard (`shard(of: buffer.count)`) the element-wise sum over all ranks
    /// (integer addition, so the bits do not depend on the order MPI adds in); the rest of
    /// `buffer` is scratch. The caller keeps the sums within Int64.
    func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Int64>) throws
    /// Lets started buckets advance without waiting (cheap; call it between pieces of work).
    func progressReduceScatter() throws
    /// Waits for every started bucket, under the current phase and timeout.
    func finishReduceScatter() throws
    /// Copies every rank's shard of `buffer` (`shard(of:)` on that rank) into the same place
    /// on every rank, so all ranks end with the same bits.
    func allGatherShards(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Root's bytes replace everyone else's (length travels too).
    func broadcast(_ bytes: inout [UInt8], root: Int) throws
    /// Every rank's bytes, in rank order, on every rank.
    func allGather(_ bytes: [UInt8]) throws -> [[UInt8]]
    /// Returns once every rank has entered the barrier.
    func barrier() throws
    /// Ends the whole job (MPI_Abort with MPI; exit for one process).
    func abort(code: Int32) -> Never
    /// Releases the communicator (MPI_Finalize with MPI); call once, at the end.
    func finalize()
}

// MARK: Conveniences built on the requirements

extension Communicator {
    /// True on rank 0, the rank that prints, logs and writes files.
    public var isRoot: Bool { rank == 0 }

    /// Runs `body` with `phase` set to `name`, restoring the previous phase afterwards.
    public func withPhase<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let previous = phase
        phase = name
        defer { phase = previous }
        return try body()
    }

    /// The part of a `count`-element buffer this rank owns in the reduce-scatter and
    /// `allGatherShards`: contiguous, in rank order, sizes differing by at most one.
    public func shard(of count: Int) -> Range<Int> { shardRange(of: count, rank: rank, size: size) }

    /// Leaves in this rank's shard (`shard(of: buffer.count)`) the element-wise sum of that
    /// shard over all ranks; the rest of `buffer` is scratch afterwards. With `allGatherShards`
    /// it is an all-reduce whose middle can be split: each rank updates only its shard
    /// (a sharded optimizer step) before the shards are gathered.
    public func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try startReduceScatter(buffer, range: 0 ..< buffer.count)
        try finishReduceScatter()
    }

    /// Sums `values` element-wise over all ranks, in place.
    public func allReduceSum(_ values: inout [Float]) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceSum($0) }
    }

    /// Sums `values` element-wise over all ranks, in place.
    public func allReduceSum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceSum($0) }
    }

    /// Takes the element-wise maximum of `values` over all ranks, in place.
    public func allReduceMax(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceMax($0) }
    }
}

/// Rank `rank`'s part of `count` elements split among `size` ranks: contiguous, in rank order,
/// sizes differing by at most one, the first `count % size` ranks holding the larger ones, and a
/// rank may hold none. Global batches and evaluation sets are split this way too.
public func shardRange(of count: Int, rank: Int, size: Int) -> Range<Int> {
    let base = count / size, extra = count % size
    let start = rank * base + min(rank, extra)
    return start ..< start + base + (rank < extra ? 1 : 0)
}
