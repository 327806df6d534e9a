/// Why a collective operation failed, in one line a user can act on.
public enum CollectiveError: Error, CustomStringConvertible, Equatable {
    /// An MPI call returned an error code; `message` is MPI's own text for it.
    case mpi(call: String, code: Int32, message: String)
    /// A collective made no progress for `seconds` while the caller was doing `phase`.
    case timeout(phase: String, seconds: Double)
    /// The communicator can no longer be used: an earlier collective timed out (its
    /// request cannot be cancelled), the group was aborted, or it was finalized.
    case unusable(phase: String, reason: String)

    public var description: String {
        switch self {
        case let .mpi(call, code, message):
            return "\(call) failed with MPI error \(code): \(message)"
        case let .timeout(phase, seconds):
            return "collective timed out during \(phase): no progress for \(formatSeconds(seconds)) s"
                + " (another rank is stalled, dead or in a different phase)"
        case let .unusable(phase, reason):
            return "collective refused during \(phase): \(reason)"
        }
    }
}

/// `30`, `0.25`: seconds without a trailing `.0`.
private func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() && abs(seconds) < 1e15 ? String(Int64(seconds)) : String(seconds)
}
