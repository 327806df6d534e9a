import Collective
import Foundation
import XCTest

/// Collectives of an in-process group of three ranks, one thread each.
final class ThreadedCommunicatorTests: XCTestCase {
    func testGroupHasRanksInOrder() {
        let group = ThreadedCommunicator.makeGroup(size: 3)
        XCTAssertEqual(group.map(\.rank), [0, 1, 2])
        XCTAssertEqual(group.map(\.size), [3, 3, 3])
        XCTAssertEqual(group.map(\.localRank), [0, 1, 2])
        XCTAssertEqual(group.map(\.localSize), [3, 3, 3])
        XCTAssertFalse(group[0].hostName.isEmpty)
    }

    func testFloatSumIsTheSameOnEveryRankAndFoldsInRankOrder() throws {
        // (1e8 + 1) - 1e8 is 0 in Float, while 1e8 + (1 - 1e8) would be 1 or more:
        // the sum must fold ranks 0, 1, 2 in that order on every rank.
        let contributions: [[Float]] = [[1e8, 1, 2.5], [1, 2, -1], [-1e8, 3, 0.25]]
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> [Float] in
            var values = contributions[comm.rank]
            try comm.allReduceSum(&values)
            return values
        }
        for result in results {
            XCTAssertEqual(try result.get(), [0, 6, 1.75])
        }
    }

    /// Reduce-scatter leaves each rank's shard summed in rank order (as `allReduceSum` would);
    /// all-gather copies every owner's shard everywhere, also with fewer elements than ranks.
    func testReduceScatterAndAllGatherShards() throws {
        let contributions: [[Float]] = [[1e8, 1, 2.5, 4, 5], [1, 2, -1, 0, 1], [-1e8, 3, 0.25, 1, 1]]
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> ([Float], [Float], [Float]) in
            var values = contributions[comm.rank]
            try values.withUnsafeMutableBufferPointer { try comm.reduceScatterSum($0) }
            let summed = Array(values[comm.shard(of: 5)])
            try values.withUnsafeMutableBufferPointer { try comm.allGatherShards($0) }
            var two: [Float] = [Float(comm.rank), Float(comm.rank)]
            try two.withUnsafeMutableBufferPointer { try comm.allGatherShards($0) }
            return (summed, values, two)
        }
        let whole: [Float] = [0, 6, 1.75, 5, 7]
        // In buckets (backward's order, last first): the same shards.
        let bucketed = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> [Float] in
            var values = contributions[comm.rank]
            try values.withUnsafeMutableBufferPointer { buffer in
                for range in [3 ..< 5, 1 ..< 3, 1 ..< 1, 0 ..< 1] {
                    try comm.startReduceScatter(buffer, range: range)
                    try comm.progressReduceScatter()
                }
                try comm.finishReduceScatter()
            }
            return Array(values[comm.shard(of: 5)])
        }
        for (rank, result) in bucketed.enumerated() {
            XCTAssertEqual(try result.get(), Array(whole[shardRange(of: 5, rank: rank, size: 3)]))
        }
        XCTAssertEqual((0..<3).map { shardRange(of: 5, rank: $0, size: 3) }, [0..<2, 2..<4, 4..<5])
        for (rank, result) in results.enumerated() {
            let (summed, gathered, two) = try result.get()
            XCTAssertEqual(summed, Array(whole[shardRange(of: 5, rank: rank, size: 3)]))
            XCTAssertEqual(gathered, whole)
            XCTAssertEqual(two, [0, 1], "rank 2 owns none of two elements")
        }
    }

    func testDoubleSumOfABufferPointer() throws {
        let count = 10_000
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> [Double] in
            var values = (0 ..< count).map { Double($0) * Double(comm.rank + 1) }
            try values.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            return values
        }
        let expected = (0 ..< count).map { Double($0) * 6 }
        for result in results {
            XCTAssertEqual(try result.get(), expected)
        }
    }

    func testMax() throws {
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> [Double] in
            var values = [Double(comm.rank), -Double(comm.rank), comm.rank == 1 ? .infinity : 0]
            try comm.allReduceMax(&values)
            return values
        }
        for result in results {
            XCTAssertEqual(try result.get(), [2, 0, .infinity])
        }
    }

    func testBroadcastReplacesEveryRanksBytesWithRootsWhateverTheLengths() throws {
        for root in 0 ..< 3 {
            let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> [UInt8] in
                var bytes = [UInt8](repeating: UInt8(comm.rank), count: 5 * comm.rank)
                try comm.broadcast(&bytes, root: root)
                return bytes
            }
            for result in results {
                XCTAssertEqual(try result.get(), [UInt8](repeating: UInt8(root), count: 5 * root), "root \(root)")
            }
        }
    }

    func testAllGatherReturnsEveryRanksBytesInRankOrder() throws {
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm in
            try comm.allGather([UInt8](repeating: 10 + UInt8(comm.rank), count: comm.rank))
        }
        for result in results {
            XCTAssertEqual(try result.get(), [[], [11], [12, 12]])
        }
    }

    func testBarrierWaitsForTheLastRank() throws {
        let arrivals = ArrivalLog()
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> Int in
            if comm.rank == 2 { Thread.sleep(forTimeInterval: 0.2) }
            arrivals.record()
            try comm.barrier()
            return arrivals.count  // every rank must see all three arrivals
        }
        for result in results {
            XCTAssertEqual(try result.get(), 3)
        }
    }

    func testManyRoundsInARowStayInStep() throws {
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> Double in
            var total = 0.0
            for step in 0 ..< 500 {
                var value = [Double(step * 3 + comm.rank)]
                try comm.allReduceSum(&value)
                total += value[0]
            }
            return total
        }
        let expected = (0 ..< 500).reduce(0.0) { $0 + Double(9 * $1 + 3) }
        for result in results {
            XCTAssertEqual(try result.get(), expected)
        }
    }

    func testTimeoutNamesThePhaseWhenARankNeverJoins() throws {
        let group = ThreadedCommunicator.makeGroup(size: 3)
        let results = runRanks(Array(group[0 ..< 2])) { comm in
            comm.timeout = 0.2
            comm.phase = "batch-norm forward"
            var values: [Float] = [1, 2, 3]
            try comm.allReduceSum(&values)
        }
        for result in results {
            let error = try XCTUnwrap(result.error as? CollectiveError)
            XCTAssertEqual(error, .timeout(phase: "batch-norm forward", seconds: 0.2))
            XCTAssertTrue(error.description.contains("batch-norm forward"), error.description)
        }
        // The straggler finds the group broken instead of waiting for ranks that left.
        group[2].phase = "late"
        XCTAssertThrowsError(try group[2].barrier()) { error in
            guard case let .unusable(phase, reason)? = error as? CollectiveError else {
                return XCTFail("expected unusable, got \(error)")
            }
            XCTAssertEqual(phase, "late")
            XCTAssertTrue(reason.contains("timed out during batch-norm forward"), reason)
        }
    }

    func testTimeoutDoesNotFireWhenTheCollectiveCompletes() throws {
        let results = runRanks(ThreadedCommunicator.makeGroup(size: 3)) { comm -> [Double] in
            comm.timeout = 5
            if comm.rank == 0 { Thread.sleep(forTimeInterval: 0.1) }
            var values = [1.0]
            try comm.allReduceSum(&values)
            return values
        }
        for result in results {
            XCTAssertEqual(try result.get(), [3])
        }
    }

    func testWaiterWithoutTimeoutLearnsThatAnotherRankTimedOut() throws {
        let group = ThreadedCommunicator.makeGroup(size: 3)
        let results = runRanks(Array(group[0 ..< 2])) { comm in
            comm.timeout = comm.rank == 0 ? 0.2 : nil
            comm.phase = "gradient all-reduce"
            try comm.barrier()
        }
        XCTAssertEqual(results[0].error as? CollectiveError, .timeout(phase: "gradient all-reduce", seconds: 0.2))
        guard case .unusable? = results[1].error as? CollectiveError else {
            return XCTFail("expected unusable, got \(String(describing: results[1].error))")
        }
    }

    func testAbortCallsTheHandlerAndBreaksTheGroupForWaitingRanks() throws {
        let record = AbortRecord()
        let group = ThreadedCommunicator.makeGroup(size: 3) { rank, code in
            record.set(rank: rank, code: code)
            record.parkForever()  // stands in for the end of the process
        }
        Thread {
            Thread.sleep(forTimeInterval: 0.1)
            group[1].abort(code: 5)
        }.start()
        let survivors = runRanks([group[0], group[2]]) { comm in
            comm.phase = "early-stop vote"
            try comm.barrier()
        }
        for result in survivors {
            XCTAssertEqual(result.error as? CollectiveError,
                           .unusable(phase: "early-stop vote", reason: "rank 1 aborted with code 5"))
        }
        // The handler runs after the group is broken, so it may still be on its way.
        let deadline = Date(timeIntervalSinceNow: 5)
        while record.value == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertEqual(record.value?.rank, 1)
        XCTAssertEqual(record.value?.code, 5)
    }

    func testWithPhaseRestoresThePreviousPhase() {
        let comm = ThreadedCommunicator.makeGroup(size: 1)[0]
        comm.phase = "training"
        comm.withPhase("evaluation") { XCTAssertEqual(comm.phase, "evaluation") }
        XCTAssertEqual(comm.phase, "training")
    }
}

/// Which rank aborted with which code; the aborting thread then parks for good.
private final class AbortRecord: @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: (rank: Int, code: Int32)?
    func set(rank: Int, code: Int32) { lock.lock(); recorded = (rank, code); lock.unlock() }
    var value: (rank: Int, code: Int32)? { lock.lock(); defer { lock.unlock() }; return recorded }
    func parkForever() -> Never {
        while true { Thread.sleep(forTimeInterval: 3600) }
    }
}

/// Counts arrivals from several threads.
private final class ArrivalLog: @unchecked Sendable {
    private let lock = NSLock()
    private var arrivals = 0
    func record() { lock.lock(); arrivals += 1; lock.unlock() }
    var count: Int { lock.lock(); defer { lock.unlock() }; return arrivals }
}
