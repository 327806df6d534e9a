import Collective
import Engine

/// Lets batch-norm layers sum their statistics over all ranks (SyncBatchNorm) without the
/// engine knowing of MPI. The time spent in those sums is added to `seconds`, so the step
/// can count them in its exchange time.
public final class CommunicatorReducer: StatisticsReducer {
    let comm: Communicator
    /// Seconds spent in the sums since this was last set to 0.
    public var seconds = 0.0
    public init(_ comm: Communicator) { self.comm = comm }

    public func sum(_ buffer: UnsafeMutableBufferPointer<Double>, phase: String) throws {
        comm.phase = phase
        try Stopwatch.add(to: &seconds) { try comm.allReduceSum(buffer) }
    }

    public func sum(_ buffer: UnsafeMutableBufferPointer<Float>, phase: String) throws {
        comm.phase = phase
        try Stopwatch.add(to: &seconds) { try comm.allReduceSum(buffer) }
    }
}
