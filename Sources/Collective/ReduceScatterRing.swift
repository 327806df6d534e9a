import CMPI

/// The reduce-scatter ring of `MPICommunicator`, started in buckets so that it can run while
/// the caller computes the rest of the buffer (the gradients of lower layers during backward).
///
/// A bucket is any range of the buffer; the shards are always those of the whole buffer
/// (`shardRange(of: buffer.count, …)`). In round s each rank sends the next rank its partial sum
/// of (shard rank−s−1) ∩ bucket and adds the incoming partial sum of (shard rank−s−2) ∩ bucket;
/// after P − 1 rounds this rank's shard of the bucket holds every rank's contribution. Every
/// element is added in the same order as by one ring over the whole buffer, so the result does
/// not depend on how the buffer was cut into buckets: bit for bit the same.
///
/// Nothing here waits: `start` posts a bucket's first round, `progress` tests the buckets in
/// flight and posts their next rounds. `MPICommunicator` polls and owns the failure handling.
final class ReduceScatterRing {
    private let comm: MPI_Comm
    private let rank: Int, size: Int
    /// Receives land here at their elements' positions in the buffer, so buckets and rounds in
    /// flight never share room (grown when a new buffer starts, then reused).
    private var scratch = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
    /// The buffer of the buckets since the last `reset()`.
    private var buffer: UnsafeMutableBufferPointer<Float>?
    private struct Bucket {
        var range: Range<Int>
        /// The round whose messages are posted; `size − 1` once done.
        var round = 0
    }
    private var buckets: [Bucket] = []
    /// Two per bucket (receive, send) for its current round: a null request is one not needed.
    private var requests: [MPI_Request?] = []
    /// Buckets not done yet.
    private(set) var inFlight = 0
    /// Tags of the buckets: the first bucket since `reset()` gets `firstTag`, the next one more.
    /// Within a bucket the rounds keep their order (MPI does not overtake on one tag); different
    /// tags keep buckets whose rounds the two neighbours post in different orders apart.
    private static let firstTag: Int32 = 16, tagCount = 32_000
    /// Largest element count handed to one MPI call; longer buckets are split.
    private let maxElementsPerCall: Int

    init(comm: MPI_Comm, rank: Int, size: Int, maxElementsPerCall: Int) {
        self.comm = comm; self.rank = rank; self.size = size; self.maxElementsPerCall = maxElementsPerCall
    }

    /// Frees the receive room. Only when no receive can be pending (not after a timeout).
    func deallocate() { scratch.deallocate() }

    /// Posts the first round of `range` of `buffer`. Every bucket until `reset()` must belong to
    /// the same buffer, and every rank must start the same buckets in the same order.
    func start(_ buffer: UnsafeMutableBufferPointer<Float>, range: Range<Int>) throws {
        precondition(range.lowerBound >= 0 && range.upperBound <= buffer.count,
                     "reduce-scatter bucket \(range) is outside a buffer of \(buffer.count)")
        if let current = self.buffer {
            precondition(current.baseAddress == buffer.baseAddress && current.count == buffer.count,
                         "a reduce-scatter bucket of another buffer started before the last one finished")
        } else {
            self.buffer = buffer
            if scratch.count < buffer.count {
                scratch.deallocate()
                scratch = .allocate(capacity: buffer.count)
            }
        }
        try forEachPiece(of: range.count, atMost: maxElementsPerCall) { offset, count in
            precondition(buckets.count < Self.tagCount, "more than \(Self.tagCount) reduce-scatter buckets in flight")
            let lower = range.lowerBound + offset
            buckets.append(Bucket(range: lower ..< lower + count))
            requests.append(cmpi_request_null())
            requests.append(cmpi_request_null())
            inFlight += 1
            try post(buckets.count - 1)
        }
    }

    /// Tests the buckets in flight without waiting, adds what arrived and posts next rounds.
    /// `done`: every bucket started since `reset()` is done; `advanced`: some round completed.
    func progress() throws -> (done: Bool, advanced: Bool) {
        guard inFlight > 0 else { return (true, false) }
        var advanced = false
        for b in buckets.indices where buckets[b].round < size - 1 {
            var done: Int32 = 0
            let code = requests.withUnsafeMutableBufferPointer { requests in
                MPIRuntime.serialized {
                    MPI_Testall(2, requests.baseAddress! + 2 * b, &done, cmpi_statuses_ignore())
                }
            }
            try checkMPI(code, "MPI_Testall")
            guard done != 0 else { continue }
            advanced = true
            let incoming = self.incoming(buckets[b])
            if !incoming.isEmpty {
                let sum = buffer!.baseAddress!, received = scratch.baseAddress!
                for i in incoming { sum[i] += received[i] }
            }
            buckets[b].round += 1
            if buckets[b].round < size - 1 { try post(b) } else { inFlight -= 1 }
        }
        return (inFlight == 0, advanced)
    }

    /// Forgets the finished buckets and their buffer. Only once `progress()` said done.
    func reset() {
        precondition(inFlight == 0, "reduce-scatter reset with \(inFlight) bucket(s) in flight")
        buckets.removeAll(keepingCapacity: true)
        requests.removeAll(keepingCapacity: true)
        buffer = nil
    }

    // MARK: Rounds

    /// The part of a bucket this rank sends in its current round.
    private func outgoing(_ bucket: Bucket) -> Range<Int> {
        part(bucket, shard: rank - bucket.round - 1)
    }

    /// The part of a bucket this rank receives and adds in its current round.
    private func incoming(_ bucket: Bucket) -> Range<Int> {
        part(bucket, shard: rank - bucket.round - 2)
    }

    private func part(_ bucket: Bucket, shard: Int) -> Range<Int> {
        let owned = shardRange(of: buffer!.count, rank: (shard % size + size) % size, size: size)
        return owned.clamped(to: bucket.range)
    }

    /// Posts bucket `b`'s receive from the previous rank and send to the next for its current round.
    private func post(_ b: Int) throws {
        let tag = Self.firstTag + Int32(b % Self.tagCount)
        let (next, previous) = (Int32((rank + 1) % size), Int32((rank + size - 1) % size))
        let incoming = self.incoming(buckets[b]), outgoing = self.outgoing(buckets[b])
        let buffer = buffer!.baseAddress!, scratch = scratch.baseAddress!
        try requests.withUnsafeMutableBufferPointer { requests in
            if !incoming.isEmpty {
                try checkMPI(MPIRuntime.serialized {
                    MPI_Irecv(scratch + incoming.lowerBound, Int32(incoming.count), cmpi_float(), previous, tag, comm,
                              &requests[2 * b])
                }, "MPI_Irecv")
            }
            if !outgoing.isEmpty {
                try checkMPI(MPIRuntime.serialized {
                    MPI_Isend(buffer + outgoing.lowerBound, Int32(outgoing.count), cmpi_float(), next, tag, comm,
                              &requests[2 * b + 1])
                }, "MPI_Isend")
            }
        }
    }
}
