import Collective
import Engine

/// Lets batch-norm layers (and the step's totals) add up per-micro-batch sums over all ranks in
/// one fixed order (SyncBatchNorm) without the engine knowing of MPI: every rank's rows are
/// gathered and added in global micro-batch order. The time spent is added to `seconds`, so
/// the step can count it in its exchange time.
public final class CommunicatorReducer: StatisticsReducer {
    let comm: Communicator
    /// Seconds spent in the sums since this was last set to 0.
    public var seconds = 0.0
    public init(_ comm: Communicator) { self.comm = comm }

    public func sumInOrder(_ rows: UnsafeBufferPointer<Double>, width: Int, into total: UnsafeMutableBufferPointer<Double>,
                           phase: String) throws {
        guard comm.size > 1 else { return foldRows(rows, width: width, into: total) }
        comm.phase = phase
        try Stopwatch.add(to: &seconds) {
            // Ranks hold consecutive micro-batches in rank order, so rank order is micro-batch order.
            let all = try comm.allGather(Array(UnsafeRawBufferPointer(rows))).flatMap { $0 }
            precondition(all.count % (8 * max(width, 1)) == 0, "sumInOrder: ranks sent rows of different widths")
            all.withUnsafeBytes { bytes in
                foldRows(bytes.bindMemory(to: Double.self), width: width, into: total)
            }
        }
    }
}
