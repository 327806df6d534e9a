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
        var state = UInt64(comm.rank + 1) &* 0x9E37_79B9_7F4A_7C15
        var values = (0 ..< 3_000_000).map { _ -> Float in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) - 0.5
        }
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

    func testTimeoutNamesThePhaseAndRetiresTheCommunicator() throws {
        let shared = try communicator()
        try XCTSkipIf(shared.size < 2, "needs two ranks")
        let comm = try MPICommunicator.start()  // its own, as a timed-out one cannot be reused
        comm.timeout = 0.5
        comm.phase = "gradient all-reduce"
        if comm.rank == 1 { Thread.sleep(forTimeInterval: 1.5) }  // the others give up first
        var values = [Float](repeating: 1, count: 1000)
        do {
            try comm.allReduceSum(&values)
            // The straggler may still complete: the others' data reached it before they gave up.
            XCTAssertEqual(comm.rank, 1, "only the late rank may complete")
        } catch {
            XCTAssertEqual(error as? CollectiveError, .timeout(phase: "gradient all-reduce", seconds: 0.5))
        }
        // Nobody meets on this communicator again: refused, or timed out on the straggler.
        XCTAssertThrowsError(try comm.barrier()) { error in
            XCTAssertTrue(error is CollectiveError, "\(error)")
        }
        try shared.barrier()  // the shared communicator is unaffected
    }
}
