import Collective
import XCTest

/// A group of one leaves data alone and needs no launcher.
final class SingleProcessCommunicatorTests: XCTestCase {
    func testCollectivesOfOneRankLeaveTheDataAsItIs() throws {
        let comm = SingleProcessCommunicator()
        XCTAssertEqual([comm.rank, comm.size, comm.localRank, comm.localSize], [0, 1, 0, 1])
        var floats: [Float] = [1, -2, 3]
        try comm.allReduceSum(&floats)
        XCTAssertEqual(floats, [1, -2, 3])
        var doubles = [4.0, 5.0]
        try comm.allReduceMax(&doubles)
        XCTAssertEqual(doubles, [4, 5])
        var bytes: [UInt8] = [7, 8]
        try comm.broadcast(&bytes, root: 0)
        XCTAssertEqual(bytes, [7, 8])
        XCTAssertEqual(try comm.allGather([9]), [[9]])
        try comm.barrier()
        comm.finalize()
    }

    func testPhaseAndTimeoutAreKept() {
        let comm = SingleProcessCommunicator()
        comm.phase = "evaluation"
        comm.timeout = 30
        XCTAssertEqual(comm.phase, "evaluation")
        XCTAssertEqual(comm.timeout, 30)
    }
}
