import Collective
import Dispatch
import Engine

/// Lets batch-norm layers sum their statistics over all ranks (SyncBatchNorm) without the
/// engine knowing of MPI; also times every reduction for the all-reduce share of the step.
final class CommunicatorReducer: StatisticsReducer {
    let comm: Communicator
    var seconds = 0.0
    init(_ comm: Communicator) { self.comm = comm }

    func sum(_ buffer: UnsafeMutableBufferPointer<Double>, phase: String) throws {
        try timed(phase) { try comm.allReduceSum(buffer) }
    }

    func sum(_ buffer: UnsafeMutableBufferPointer<Float>, phase: String) throws {
        try timed(phase) { try comm.allReduceSum(buffer) }
    }

    func startReduceScatter(_ buffer: UnsafeMutableBufferPointer<Float>, range: Range<Int>, phase: String) throws {
        try timed(phase) { try comm.startReduceScatter(buffer, range: range) }
    }

    func progressReduceScatter(phase: String) throws {
        try timed(phase) { try comm.progressReduceScatter() }
    }

    func finishReduceScatter(phase: String) throws {
        try timed(phase) { try comm.finishReduceScatter() }
    }

    func allGather(_ buffer: UnsafeMutableBufferPointer<Float>, phase: String) throws {
        try timed(phase) { try comm.allGatherShards(buffer) }
    }

    /// Runs `body` under `phase`, adding its wall time to `seconds`.
    private func timed(_ phase: String, _ body: () throws -> Void) throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        comm.phase = phase
        defer { seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 }
        try body()
    }
}
