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
        let t0 = DispatchTime.now().uptimeNanoseconds
        comm.phase = phase
        try comm.allReduceSum(buffer)
        seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }

    func sum(_ buffer: UnsafeMutableBufferPointer<Float>, phase: String) throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        comm.phase = phase
        try comm.allReduceSum(buffer)
        seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }
}
