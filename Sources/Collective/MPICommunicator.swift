import CMPI
import Foundation

/// The ranks of an MPI job (Open MPI), on a private duplicate of `MPI_COMM_WORLD`.
///
/// Every MPI return code is checked and thrown as `CollectiveError.mpi`. Collectives
/// are nonblocking calls (`MPI_Iallreduce`, `MPI_Ibcast`, `MPI_Ibarrier`, ...) polled
/// until done, so that a waiting rank sleeps instead of spinning and `timeout` can end
/// the wait. A timed-out request cannot be cancelled: the communicator then refuses
/// further collectives, and the caller should report the error and `abort(code:)`.
///
/// The reduce-scatter and `allGatherShards` are our own rings of `MPI_Isend`/`MPI_Irecv`
/// (each rank sends to the next, receives from the previous, P − 1 rounds each), polled the
/// same way; the reduce-scatter runs in buckets that advance while the caller computes
/// (`ReduceScatterRing`). Together they move the bandwidth-optimal 2·(P−1)/P of the buffer per rank (see
/// `benchmarks/allreduce.c` and BENCHMARKS.md for their cost against Open MPI 4.1's default
/// polled `MPI_Iallreduce`). Small buffers (batch-norm statistics, step totals) stay with MPI's
/// own collectives.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let localRank: Int
    public let localSize: Int
    public let hostName: String

    /// Largest element count handed to one MPI call by default; bigger buffers go in pieces.
    public static let defaultMaxElementsPerCall = 1 << 28
    /// Largest element count handed to one MPI call here (MPI counts are Int32).
    public let maxElementsPerCall: Int

    private let comm: MPI_Comm
    private let polling = MPIRequestPolling()
    /// The requests of one wait: at most a receive and a send.
    private let requests = UnsafeMutableBufferPointer<MPI_Request?>.allocate(capacity: 2)
    /// The reduce-scatter, in buckets that may be in flight while the caller computes.
    private let ring: ReduceScatterRing
    /// Point-to-point tag of the all-gather ring (the reduce-scatter's buckets have theirs; our
    /// private communicator carries nothing else).
    private static let allGatherTag: Int32 = 2
    private struct State {
        var phase = "startup"
        var timeout: Double?
        /// Set once a collective timed out (its request is still pending) or after finalize.
        var unusableReason: String?
    }
    private let state = Locked(State())

    /// True when this process was started by `mpirun`/`mpiexec` (`launchedByMPIRun`).
    public static func isLaunchedByMPIRun(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Bool {
        launchedByMPIRun(environment: environment)
    }

    /// Initialises MPI if needed and returns a communicator over all ranks of the job.
    ///
    /// Without a launcher, Open MPI makes a singleton world of size 1; prefer
    /// `makeCommunicator()`, which only uses MPI under a launcher. Each call duplicates
    /// `MPI_COMM_WORLD` (collectively: every rank must call it). `maxElementsPerCall` exists
    /// so that tests can make buffers go in pieces; all ranks must pass the same. Each piece of a
    /// reduce-scatter is a bucket of its own, and at most 32,000 may be in flight.
    public static func start(maxElementsPerCall: Int = defaultMaxElementsPerCall) throws -> MPICommunicator {
        precondition((1 ... Int(Int32.max)).contains(maxElementsPerCall),
                     "maxElementsPerCall must be in 1...Int32.max, got \(maxElementsPerCall)")
        try MPIRuntime.startIfNeeded()
        return try MPICommunicator(maxElementsPerCall: maxElementsPerCall)
    }

    private init(maxElementsPerCall: Int) throws {
        self.maxElementsPerCall = maxElementsPerCall
        var comm: MPI_Comm? = cmpi_comm_null()
        try checkMPI(MPIRuntime.serialized { MPI_Comm_dup(cmpi_comm_world(), &comm) }, "MPI_Comm_dup")
        try checkMPI(MPIRuntime.serialized { MPI_Comm_set_errhandler(comm, cmpi_errors_return()) },
                     "MPI_Comm_set_errhandler")
        self.comm = comm!

        var rank: Int32 = 0, size: Int32 = 0
        try checkMPI(MPIRuntime.serialized { MPI_Comm_rank(comm, &rank) }, "MPI_Comm_rank")
        try checkMPI(MPIRuntime.serialized { MPI_Comm_size(comm, &size) }, "MPI_Comm_size")
        self.rank = Int(rank)
        self.size = Int(size)
        ring = ReduceScatterRing(comm: comm!, rank: self.rank, size: self.size, maxElementsPerCall: maxElementsPerCall)

        // Ranks that share memory are the ranks of this node.
        var node: MPI_Comm? = cmpi_comm_null()
        try checkMPI(MPIRuntime.serialized {
            MPI_Comm_split_type(comm, cmpi_comm_type_shared(), rank, cmpi_info_null(), &node)
        }, "MPI_Comm_split_type")
        var localRank: Int32 = 0, localSize: Int32 = 0
        try checkMPI(MPIRuntime.serialized { MPI_Comm_rank(node, &localRank) }, "MPI_Comm_rank")
        try checkMPI(MPIRuntime.serialized { MPI_Comm_size(node, &localSize) }, "MPI_Comm_size")
        try checkMPI(MPIRuntime.serialized { MPI_Comm_free(&node) }, "MPI_Comm_free")
        self.localRank = Int(localRank)
        self.localSize = Int(localSize)

        var name = [CChar](repeating: 0, count: Int(cmpi_max_processor_name()) + 1)
        var length: Int32 = 0
        try checkMPI(MPIRuntime.serialized { MPI_Get_processor_name(&name, &length) }, "MPI_Get_processor_name")
        hostName = String(cString: name)
    }

    deinit {
        requests.deallocate()
        // After a timeout a receive into the ring's room may still be pending: leave it allocated.
        let reason = state.current.unusableReason
        if (reason == nil || reason == Self.finalizedReason) && ring.inFlight == 0 { ring.deallocate() }
    }

    private static let finalizedReason = "the communicator was finalized"

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

    // MARK: Collectives

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try allReduce(UnsafeMutableRawBufferPointer(buffer), count: buffer.count,
                      type: cmpi_float(), op: cmpi_op_sum())
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try allReduce(UnsafeMutableRawBufferPointer(buffer), count: buffer.count,
                      type: cmpi_double(), op: cmpi_op_sum())
    }

    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try allReduce(UnsafeMutableRawBufferPointer(buffer), count: buffer.count,
                      type: cmpi_double(), op: cmpi_op_max())
    }

    public func startReduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, range: Range<Int>) throws {
        guard size > 1, !range.isEmpty else { return }  // every rank passes the same buckets
        try withRing { try ring.start(buffer, range: range) }
    }

    public func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Int64>) throws {
        guard size > 1, buffer.count > 0 else { return }
        guard buffer.count <= Int(Int32.max) else {
            throw CollectiveError.mpi(call: "MPI_Ireduce_scatter", code: -1, message: "\(buffer.count) elements exceed MPI's Int32 counts")
        }
        var counts = (0 ..< size).map { Int32(shardRange(of: buffer.count, rank: $0, size: size).count) }
        let mine = shard(of: buffer.count)
        // Freed only once the call completed: after a timeout MPI may still write into it.
        let received = UnsafeMutableBufferPointer<Int64>.allocate(capacity: max(mine.count, 1))
        try counts.withUnsafeMutableBufferPointer { counts in
            try run("MPI_Ireduce_scatter") {
                MPI_Ireduce_scatter(buffer.baseAddress, received.baseAddress, counts.baseAddress, cmpi_int64(),
                                    cmpi_op_sum(), comm, &$0)
            }
        }
        for (i, v) in zip(mine, received) { buffer[i] = v }
        received.deallocate()
    }

    public func progressReduceScatter() throws {
        guard size > 1, ring.inFlight > 0 else { return }
        try withRing { _ = try ring.progress() }
    }

    public func finishReduceScatter() throws {
        guard size > 1 else { return }
        let (phase, timeout) = try usableState()
        try wait("reduce-scatter", phase: phase, timeout: timeout, until: ring.progress)
        ring.reset()
    }

    public func allGatherShards(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard size > 1, buffer.count > 0 else { return }
        let (next, previous) = ((rank + 1) % size, (rank + size - 1) % size)
        // Round s: pass on shard rank−s (own, then received), receive shard rank−s−1 in place.
        for s in 0 ..< size - 1 {
            let outgoing = shardRange(of: buffer.count, rank: (rank - s + size) % size, size: size)
            let incoming = shardRange(of: buffer.count, rank: (rank - s - 1 + size) % size, size: size)
            try sendReceive(UnsafeBufferPointer(rebasing: buffer[outgoing]), to: next,
                            UnsafeMutableBufferPointer(rebasing: buffer[incoming]), from: previous,
                            tag: Self.allGatherTag)
        }
    }

    public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
        precondition((0 ..< size).contains(root), "broadcast root \(root) is outside 0..<\(size)")
        var length = Int64(bytes.count)  // meaningful on root only
        try withUnsafeMutablePointer(to: &length) { length in
            try run("MPI_Ibcast") { MPI_Ibcast(length, 1, cmpi_int64(), Int32(root), comm, &$0) }
        }
        if rank != root { bytes = [UInt8](repeating: 0, count: Int(length)) }
        try bytes.withUnsafeMutableBytes { bytes in
            try forEachPiece(of: bytes.count) { offset, count in
                try run("MPI_Ibcast") {
                    MPI_Ibcast(bytes.baseAddress! + offset, count, cmpi_byte(), Int32(root), comm, &$0)
                }
            }
        }
    }

    public func allGather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var lengths = [Int64](repeating: 0, count: size)  // (size) bytes sent by each rank
        var mine = Int64(bytes.count)
        try withUnsafeMutablePointer(to: &mine) { mine in
            try lengths.withUnsafeMutableBufferPointer { lengths in
                try run("MPI_Iallgather") {
                    MPI_Iallgather(mine, 1, cmpi_int64(), lengths.baseAddress, 1, cmpi_int64(), comm, &$0)
                }
            }
        }
        let total = lengths.reduce(0, +)
        precondition(total <= Int64(Int32.max), "allGather of \(total) bytes exceeds MPI's Int32 counts")
        var counts = lengths.map { Int32($0) }                    // (size)
        var offsets = [Int32](repeating: 0, count: size)          // (size) start of each rank's bytes
        for r in 1 ..< max(size, 1) { offsets[r] = offsets[r - 1] + counts[r - 1] }
        var gathered = [UInt8](repeating: 0, count: Int(total))  // (total) ranks' bytes back to back
        if total > 0 {
            try bytes.withUnsafeBytes { send in
                try gathered.withUnsafeMutableBytes { receive in
                    try counts.withUnsafeMutableBufferPointer { counts in
                        try offsets.withUnsafeMutableBufferPointer { offsets in
                            try run("MPI_Iallgatherv") {
                                MPI_Iallgatherv(send.baseAddress, Int32(send.count), cmpi_byte(),
                                                receive.baseAddress, counts.baseAddress, offsets.baseAddress,
                                                cmpi_byte(), comm, &$0)
                            }
                        }
                    }
                }
            }
        }
        return (0 ..< size).map { r in
            let start = Int(offsets[r])
            return Array(gathered[start ..< start + Int(counts[r])])
        }
    }

    public func barrier() throws {
        try run("MPI_Ibarrier") { MPI_Ibarrier(comm, &$0) }
    }

    // MARK: Ending

    public func abort(code: Int32) -> Never {
        MPIRuntime.abortJob(code: code)
    }

    /// Frees the communicator and finalizes MPI for the process.
    ///
    /// After a timeout this does nothing: a request is still pending, and
    /// `MPI_Finalize` would wait for ranks that may never come. The process then
    /// exits without finalizing, which makes `mpirun` end the whole job.
    public func finalize() {
        let wasUsable = state.withLock { state -> Bool in
            defer { state.unusableReason = state.unusableReason ?? Self.finalizedReason }
            return state.unusableReason == nil
        }
        // Reduce-scatter buckets still in flight (a caller that threw between start and finish)
        // have receives pending, as after a timeout.
        guard wasUsable, ring.inFlight == 0 else { return }
        var comm: MPI_Comm? = self.comm
        _ = MPIRuntime.serialized { MPI_Comm_free(&comm) }
        MPIRuntime.finalizeIfRunning()
    }

    // MARK: Helpers

    /// Reduces `count` elements of `type` in place, in pieces MPI's Int32 counts can hold.
    private func allReduce(_ buffer: UnsafeMutableRawBufferPointer, count: Int,
                           type: MPI_Datatype, op: MPI_Op) throws {
        guard count > 0 else { return }  // every rank passes the same count
        let stride = buffer.count / count
        try forEachPiece(of: count) { offset, pieceCount in
            try run("MPI_Iallreduce") {
                MPI_Iallreduce(cmpi_in_place(), buffer.baseAddress! + offset * stride, pieceCount,
                               type, op, comm, &$0)
            }
        }
    }

    /// Calls `body(offset, count)` for consecutive pieces of at most `maxElementsPerCall` elements.
    private func forEachPiece(of count: Int, _ body: (Int, Int32) throws -> Void) rethrows {
        try Collective.forEachPiece(of: count, atMost: maxElementsPerCall) { try body($0, Int32($1)) }
    }

    /// Sends `outgoing` to rank `destination` while receiving `incoming` from rank `source`,
    /// in pieces MPI's Int32 counts can hold (each direction its own number of pieces: the
    /// peer's matching side counts the same elements).
    private func sendReceive(_ outgoing: UnsafeBufferPointer<Float>, to destination: Int,
                             _ incoming: UnsafeMutableBufferPointer<Float>, from source: Int, tag: Int32) throws {
        let piece = maxElementsPerCall
        let sends = (outgoing.count + piece - 1) / piece, receives = (incoming.count + piece - 1) / piece
        for k in 0 ..< max(sends, receives) {
            try run("MPI_Irecv/MPI_Isend", requests: 2) { requests in
                if k < receives {
                    let n = Int32(min(piece, incoming.count - k * piece))
                    try checkMPI(MPIRuntime.serialized {
                        MPI_Irecv(incoming.baseAddress! + k * piece, n, cmpi_float(), Int32(source), tag, comm, &requests[0])
                    }, "MPI_Irecv")
                }
                if k < sends {
                    let n = Int32(min(piece, outgoing.count - k * piece))
                    try checkMPI(MPIRuntime.serialized {
                        MPI_Isend(outgoing.baseAddress! + k * piece, n, cmpi_float(), Int32(destination), tag, comm, &requests[1])
                    }, "MPI_Isend")
                }
            }
        }
    }

    /// Starts one nonblocking operation and waits for it under the current phase and timeout.
    ///
    /// Buffers the operation uses must stay valid until this returns, so callers keep
    /// their `withUnsafe…` scopes around the whole call.
    private func run(_ call: String, _ start: (inout MPI_Request?) -> Int32) throws {
        try run(call, requests: 1) { requests in
            try checkMPI(MPIRuntime.serialized { start(&requests[0]) }, call)
        }
    }

    /// Lets `start` begin up to `count` nonblocking operations (leaving unused requests null)
    /// and waits for all of them under the current phase and timeout.
    private func run(_ call: String, requests count: Int,
                     _ start: (UnsafeMutableBufferPointer<MPI_Request?>) throws -> Void) throws {
        let (phase, timeout) = try usableState()
        let pending = UnsafeMutableBufferPointer(rebasing: requests[0 ..< count])
        for i in pending.indices { pending[i] = cmpi_request_null() }
        do {
            try start(pending)
        } catch {
            // A started request may still be pending and cannot be cancelled.
            if pending.contains(where: { $0 != cmpi_request_null() }) {
                markUnusable("\(call) failed during \(phase) with a request pending")
            }
            throw error
        }
        try wait(call, phase: phase, timeout: timeout) { (try MPIRequestPolling.testAll(pending, call: call), false) }
    }

    /// Polls `test` until it says done, failing after `timeout` seconds without progress. After
    /// a failed test or a timeout the requests' fate is unknown and they cannot be cancelled, so
    /// nothing may meet here again.
    private func wait(_ call: String, phase: String, timeout: Double?,
                      until test: () throws -> (done: Bool, advanced: Bool)) throws {
        let completed: Bool
        do {
            completed = try polling.wait(timeout: timeout.map { UInt64($0 * 1e9) }, until: test)
        } catch {
            markUnusable("\(call) failed during \(phase)")
            throw error
        }
        if completed { return }
        markUnusable("an earlier \(call) timed out during \(phase) and is still pending")
        throw CollectiveError.timeout(phase: phase, seconds: timeout!)
    }

    /// Starts or advances the reduce-scatter's buckets; after a failure with buckets in flight
    /// (their requests cannot be cancelled) nothing may meet here again.
    private func withRing(_ body: () throws -> Void) throws {
        let (phase, _) = try usableState()
        do {
            try body()
        } catch {
            if ring.inFlight > 0 { markUnusable("reduce-scatter failed during \(phase) with a request pending") }
            throw error
        }
    }

    /// The current phase and timeout; throws once the communicator is unusable.
    private func usableState() throws -> (phase: String, timeout: Double?) {
        let (phase, timeout, unusableReason) = state.withLock { ($0.phase, $0.timeout, $0.unusableReason) }
        if let unusableReason { throw CollectiveError.unusable(phase: phase, reason: unusableReason) }
        return (phase, timeout)
    }

    /// Refuses every later collective, keeping the first reason given.
    private func markUnusable(_ reason: String) {
        state.withLock { $0.unusableReason = $0.unusableReason ?? reason }
    }
}
