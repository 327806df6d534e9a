import Collective
import Foundation
import XCTest

/// The MPI communicator between real processes; skipped unless started by mpirun:
///
///     swift build --build-tests
///     mpirun --oversubscribe -np 3 .build/debug/distcnnPackageTests.xctest \
///         CollectiveTests.MPICommunicatorTests
///
/// Every rank runs these tests in the same order, so their collectives match.
final class MPICommunicatorTests: XCTestCase {
    /// The communicator the tests share; MPI is finalized once, after the last test.
    private static var shared: MPICommunicator?

    private func communicator() throws -> MPICommunicator {
        try XCTSkipUnless(MPICommunicator.isLaunchedByMPIRun(), "needs mpirun")
        if let comm = Self.shared { return comm }
        let comm = try MPICommunicator.start()
        comm.timeout = 60  // a broken test fails instead of hanging the job
        Self.shared = comm
        return comm
    }

    override class func tearDown() {
        shared?.finalize()
        shared = nil
        super.tearDown()
    }

    /// `count` floats in [−0.5, 0.5) from a linear congruential generator started at `seed`.
    static func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        return (0 ..< count).map { _ -> Float in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) - 0.5
        }
    }

    func testRanksAndNodes() throws {
        let comm = try communicator()
        XCTAssertTrue((0 ..< comm.size).contains(comm.rank))
        XCTAssertTrue((0 ..< comm.localSize).contains(comm.localRank))
        XCTAssertLessThanOrEqual(comm.localSize, comm.size)
        let hosts = try comm.allGather(Array(comm.hostName.utf8))
        let ranksOnMyNode = hosts.filter { $0 == Array(comm.hostName.utf8) }.count
        XCTAssertEqual(ranksOnMyNode, comm.localSize)
    }

    func testSumsAndMax() throws {
        let comm = try communicator()
        let p = comm.size, r = comm.rank
        var floats = (0 ..< 1000).map { Float($0) + Float(r) }
        try comm.allReduceSum(&floats)
        XCTAssertEqual(floats, (0 ..< 1000).map { Float($0 * p + p * (p - 1) / 2) })
        var doubles = [Double(r), 0.5]
        try comm.allReduceSum(&doubles)
        XCTAssertEqual(doubles, [Double(p * (p - 1) / 2), 0.5 * Double(p)])
        var maxima = [Double(r), -Double(r)]
        try comm.allReduceMax(&maxima)
        XCTAssertEqual(maxima, [Double(p - 1), 0])
    }

    func testLargeFloatSumIsBitwiseIdenticalOnEveryRank() throws {
        let comm = try communicator()
        var values = Self.randomFloats(3_000_000, seed: UInt64(comm.rank + 1))
        try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
        let bytes = values.withUnsafeBytes { Array($0) }
        let fromRankZero = try { () -> [UInt8] in
            var copy = bytes
            try comm.broadcast(&copy, root: 0)
            return copy
        }()
        XCTAssertTrue(bytes == fromRankZero, "rank \(comm.rank)'s sum differs from rank 0's")
    }

    func testBroadcastAndAllGatherWithDifferentLengths() throws {
        let comm = try communicator()
        for root in 0 ..< comm.size {
            var bytes = [UInt8](repeating: UInt8(comm.rank), count: 3 * comm.rank)
            try comm.broadcast(&bytes, root: root)
            XCTAssertEqual(bytes, [UInt8](repeating: UInt8(root), count: 3 * root))
        }
        let gathered = try comm.allGather([UInt8](repeating: UInt8(comm.rank), count: comm.rank))
        XCTAssertEqual(gathered, (0 ..< comm.size).map { [UInt8](repeating: UInt8($0), count: $0) })
        try comm.barrier()
    }

    /// The rings: every rank's shard holds the sum after reduce-scatter, and all-gather leaves
    /// every rank with the owners' shards — for buffers shorter than the rank count, uneven
    /// shards, and one large enough to be the gradient of `ref`.
    func testReduceScatterThenAllGatherIsAnAllReduce() throws {
        let comm = try communicator()
        let p = comm.size, r = comm.rank
        for count in [1, 2, 7, 1000, 1_000_003] {
            let shards = (0 ..< p).map { shardRange(of: count, rank: $0, size: p) }
            XCTAssertEqual(shards.map(\.count).reduce(0, +), count)
            XCTAssertEqual(shards.first?.lowerBound, 0); XCTAssertEqual(shards.last?.upperBound, count)
            XCTAssertLessThanOrEqual(shards.map(\.count).max()! - shards.map(\.count).min()!, 1)
            // Small integers: exact in any summation order.
            var values = (0 ..< count).map { Float($0 % 1000) + Float(r) }
            try values.withUnsafeMutableBufferPointer { try comm.reduceScatterSum($0) }
            let mine = comm.shard(of: count)
            XCTAssertEqual(mine, shards[r])
            XCTAssertEqual(Array(values[mine]), mine.map { Float($0 % 1000 * p + p * (p - 1) / 2) }, "count \(count)")
            for i in mine { values[i] = -values[i] }
            try values.withUnsafeMutableBufferPointer { try comm.allGatherShards($0) }
            XCTAssertEqual(values, (0 ..< count).map { -Float($0 % 1000 * p + p * (p - 1) / 2) }, "count \(count)")
        }
    }

    /// The ring's sums are the same bits on every rank (each element is summed once, by its owner).
    func testRingSumIsBitwiseIdenticalOnEveryRank() throws {
        let comm = try communicator()
        var values = Self.randomFloats(100_003, seed: UInt64(comm.rank + 7))
        try values.withUnsafeMutableBufferPointer { try comm.reduceScatterSum($0); try comm.allGatherShards($0) }
        var fromRankZero = values.withUnsafeBytes { Array($0) }
        try comm.broadcast(&fromRankZero, root: 0)
        XCTAssertTrue(values.withUnsafeBytes { Array($0) } == fromRankZero, "rank \(comm.rank)'s sum differs from rank 0's")
    }

    /// Buckets of any cutting, started in backward's order (last first) with progress between
    /// them while the rest of the buffer is still being written, sum every element in the ring's
    /// order — (x[j+1] + x[j+2]) + … + x[j] for shard j, folded here from every rank's inputs —
    /// bit for bit; and the ring leaves the part of the buffer not yet started alone.
    func testBucketedReduceScatterSumsInRingOrderBitForBit() throws {
        let comm = try communicator()
        let p = comm.size, count = 100_003
        let inputs = (0 ..< p).map { Self.randomFloats(count, seed: UInt64($0 + 11)) }
        let mine = comm.shard(of: count)
        let j = comm.rank  // this rank's shard: its elements end their round trip here
        let expected: [Float] = mine.map { i in
            var sum = inputs[(j + 1) % p][i]
            for k in stride(from: 2, through: p, by: 1) { sum = sum + inputs[(j + k) % p][i] }
            return sum
        }
        // Cuts crossing shard boundaries, empty buckets, one element, the whole buffer at once.
        let cuttings: [[Int]] = [[count, 70_000, 33_334, 33_333, 1, 0], [count, count - 1, 50_000, 0],
                                 [count, 0], [count, 99_000, 98_999, 98_999, 12, 0]]
        let marker = Float.nan
        for cuts in cuttings {
            var values = inputs[comm.rank]
            for i in 0 ..< cuts[1] { values[i] = marker }  // "not computed yet"
            try values.withUnsafeMutableBufferPointer { buffer in
                for (upper, lower) in zip(cuts, cuts.dropFirst()) {
                    // The ring must not have written into a bucket before it started.
                    XCTAssertTrue((lower ..< upper).allSatisfy { $0 >= cuts[1] || buffer[$0].isNaN },
                                  "rank \(comm.rank), cuts \(cuts): the ring wrote outside its buckets")
                    for i in lower ..< min(upper, cuts[1]) { buffer[i] = inputs[comm.rank][i] }  // now "computed"
                    try comm.startReduceScatter(buffer, range: lower ..< upper)
                    for _ in 0 ..< 3 { try comm.progressReduceScatter() }
                }
                try comm.finishReduceScatter()
            }
            XCTAssertTrue(values[mine].elementsEqual(expected, by: { $0.bitPattern == $1.bitPattern }),
                          "rank \(comm.rank), cuts \(cuts): the sums differ from the ring order's")
        }
        // The communicator is reusable with another buffer afterwards.
        var again = [Float](repeating: 1, count: 10)
        try again.withUnsafeMutableBufferPointer { try comm.reduceScatterSum($0) }
        XCTAssertEqual(Array(again[comm.shard(of: 10)]), [Float](repeating: Float(p), count: comm.shard(of: 10).count))
    }

    /// Buffers longer than the largest MPI call (2^28 elements by default: MPI counts are Int32)
    /// go in pieces. With the limit at 5 elements the all-reduces, the rings and the broadcast cut
    /// (the variable-length `allGather` never does), and give what the shared communicator gives
    /// whole: the rings bit for bit (a round's pieces keep every element's summation order), MPI's
    /// all-reduce and broadcast exactly.
    func testBuffersCutIntoPiecesGiveTheSameResults() throws {
        let shared = try communicator()
        try XCTSkipIf(shared.size < 2, "needs two ranks")
        let cut = try MPICommunicator.start(maxElementsPerCall: 5)
        cut.timeout = 60
        XCTAssertEqual(cut.maxElementsPerCall, 5)
        XCTAssertEqual(shared.maxElementsPerCall, MPICommunicator.defaultMaxElementsPerCall)
        let r = shared.rank
        func sameBits(_ a: some Collection<Float>, _ b: some Collection<Float>) -> Bool {
            a.elementsEqual(b) { $0.bitPattern == $1.bitPattern }
        }

        // MPI's own all-reduces, on small integers (exact in any order).
        for count in [1, 5, 6, 23] {
            var whole = (0 ..< count).map { Float($0 * 3) + Float(r) }, pieces = whole
            try shared.allReduceSum(&whole)
            try cut.allReduceSum(&pieces)
            XCTAssertEqual(pieces, whole, "float sum of \(count)")
            var doubleWhole = (0 ..< count).map { Double($0) * Double(r + 1) }, doublePieces = doubleWhole
            try shared.allReduceSum(&doubleWhole)
            try cut.allReduceSum(&doublePieces)
            XCTAssertEqual(doublePieces, doubleWhole, "double sum of \(count)")
            var maxWhole = (0 ..< count).map { Double(($0 + r) % 4) }, maxPieces = maxWhole
            try shared.allReduceMax(&maxWhole)
            try cut.allReduceMax(&maxPieces)
            XCTAssertEqual(maxPieces, maxWhole, "max of \(count)")
        }

        // The rings, on random floats: buckets that cross shards and pieces, then the all-gather.
        let count = 101, mine = shared.shard(of: count)
        XCTAssertGreaterThan(mine.count, cut.maxElementsPerCall)  // every shard goes in pieces
        var whole = Self.randomFloats(count, seed: UInt64(r + 21)), pieces = whole
        try whole.withUnsafeMutableBufferPointer { try shared.reduceScatterSum($0) }
        try pieces.withUnsafeMutableBufferPointer { buffer in
            try cut.startReduceScatter(buffer, range: 60 ..< count)
            try cut.progressReduceScatter()
            try cut.startReduceScatter(buffer, range: 3 ..< 60)
            try cut.startReduceScatter(buffer, range: 0 ..< 3)
            try cut.finishReduceScatter()
        }
        XCTAssertTrue(sameBits(pieces[mine], whole[mine]), "rank \(r): the reduce-scatter in pieces differs")
        for i in mine { whole[i] *= 3; pieces[i] *= 3 }
        try whole.withUnsafeMutableBufferPointer { try shared.allGatherShards($0) }
        try pieces.withUnsafeMutableBufferPointer { try cut.allGatherShards($0) }
        XCTAssertTrue(sameBits(pieces, whole), "rank \(r): the all-gather in pieces differs")
        // Shards of 11 and 10 elements: a rank sends 3 pieces and receives 2, or the reverse.
        let uneven = 10 * shared.size + 1
        var gathered = (0 ..< uneven).map { Float($0) }
        for i in shared.shard(of: uneven) { gathered[i] = -gathered[i] }
        try gathered.withUnsafeMutableBufferPointer { try cut.allGatherShards($0) }
        XCTAssertEqual(gathered, (0 ..< uneven).map { -Float($0) }, "rank \(r): the uneven all-gather in pieces differs")

        // A broadcast of 37 bytes in pieces of 5.
        var bytes = r == 0 ? (0 ..< 37).map { UInt8($0) } : []
        try cut.broadcast(&bytes, root: 0)
        XCTAssertEqual(bytes, (0 ..< 37).map { UInt8($0) })
        try shared.barrier()
    }

    /// Runs `exchange` on a communicator of its own (a timed-out one cannot be reused) with a
    /// 0.5 s timeout, rank 1 sleeping 1.5 s where the exchange calls `late`: the others must time
    /// out naming `phase` (the late rank may still complete: the others' data reached it before
    /// they gave up), and `next` on that communicator must then fail on every rank.
    func assertLateRankTimesOut(phase: String, _ exchange: (MPICommunicator, () -> Void) throws -> Void,
                                next: (MPICommunicator) throws -> Void = { try $0.barrier() },
                                file: StaticString = #filePath, line: UInt = #line) throws {
        let shared = try communicator()
        try XCTSkipIf(shared.size < 2, "needs two ranks")
        let comm = try MPICommunicator.start()
        comm.timeout = 0.5
        comm.phase = phase
        do {
            try exchange(comm) { if comm.rank == 1 { Thread.sleep(forTimeInterval: 1.5) } }
            XCTAssertEqual(comm.rank, 1, "only the late rank may complete", file: file, line: line)
        } catch {
            XCTAssertEqual(error as? CollectiveError, .timeout(phase: phase, seconds: 0.5), file: file, line: line)
        }
        // Nobody meets on this communicator again: refused, or timed out on the straggler.
        XCTAssertThrowsError(try next(comm), file: file, line: line) { error in
            XCTAssertTrue(error is CollectiveError, "\(error)", file: file, line: line)
        }
        try shared.barrier()  // the shared communicator is unaffected
    }

    func testTimeoutNamesThePhaseAndRetiresTheCommunicator() throws {
        var values = [Float](repeating: 1, count: 1000)
        try assertLateRankTimesOut(phase: "gradient all-reduce") { comm, late in
            late()
            try comm.allReduceSum(&values)
        }
    }

    /// A rank that is late to the gradient ring makes the others time out naming the phase.
    func testRingTimeoutNamesThePhase() throws {
        var values = [Float](repeating: 1, count: 1000)   // small messages: nothing left pending at finalize
        try assertLateRankTimesOut(phase: "gradient reduce-scatter", { comm, late in
            late()
            try values.withUnsafeMutableBufferPointer { try comm.reduceScatterSum($0) }
        }, next: { comm in try values.withUnsafeMutableBufferPointer { try comm.allGatherShards($0) } })
    }

    /// A rank late with its last bucket makes the others time out in `finishReduceScatter`,
    /// with buckets in flight, naming the phase.
    func testBucketTimeoutNamesThePhase() throws {
        var values = [Float](repeating: 1, count: 3000)
        try assertLateRankTimesOut(phase: "gradient reduce-scatter") { comm, late in
            try values.withUnsafeMutableBufferPointer { buffer in
                try comm.startReduceScatter(buffer, range: 1500 ..< 3000)
                late()
                try comm.startReduceScatter(buffer, range: 0 ..< 1500)
                try comm.finishReduceScatter()
            }
        }
    }
}
