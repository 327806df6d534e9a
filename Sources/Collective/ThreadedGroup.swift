import Foundation

/// The meeting point of an in-process group of ranks: every collective is one round
/// in which each rank leaves a value and, once all have, takes all of them.
final class ThreadedGroup: @unchecked Sendable {
    let size: Int
    let abortHandler: @Sendable (_ rank: Int, _ code: Int32) -> Never
    private let condition = NSCondition()
    // All below are guarded by `condition`.
    private var round = 0
    private var arrived = 0
    private var slots: [Any?]          // (size) this round's values, by rank
    private var lastResult: [Any] = [] // (size) the values of the last completed round
    /// Why no round can complete any more (a rank timed out, aborted or finalized).
    private var brokenReason: String?

    init(size: Int, abortHandler: @escaping @Sendable (_ rank: Int, _ code: Int32) -> Never) {
        precondition(size >= 1, "a group needs at least one rank, got \(size)")
        self.size = size
        self.abortHandler = abortHandler
        slots = Array(repeating: nil, count: size)
    }

    /// Leaves `value` for this round and returns every rank's value in rank order.
    ///
    /// The previous round's result stays valid until this rank arrives again, because a
    /// round cannot complete without it. A rank that times out breaks the group: the
    /// round it left can never complete, so later arrivals, and waiters without a
    /// timeout, throw `unusable` instead of hanging; waiters with a timeout throw
    /// `timeout` at their own deadline, as they would under MPI.
    func exchange(rank: Int, value: Any, phase: String, timeout: Double?) throws -> [Any] {
        condition.lock()
        defer { condition.unlock() }
        if let reason = brokenReason {
            throw CollectiveError.unusable(phase: phase, reason: reason)
        }
        precondition(slots[rank] == nil, "rank \(rank) entered two collectives at once")
        slots[rank] = value
        arrived += 1
        if arrived == size {
            lastResult = slots.map { $0! }
            slots = Array(repeating: nil, count: size)
            arrived = 0
            round &+= 1
            condition.broadcast()
            return lastResult
        }
        let myRound = round
        let deadline = timeout.map { Date(timeIntervalSinceNow: $0) }
        while round == myRound {
            if let deadline {
                if !condition.wait(until: deadline), round == myRound {
                    if brokenReason == nil {
                        brokenReason = "rank \(rank) timed out during \(phase)"
                        condition.broadcast()
                    }
                    throw CollectiveError.timeout(phase: phase, seconds: timeout!)
                }
            } else if let reason = brokenReason {
                throw CollectiveError.unusable(phase: phase, reason: reason)
            } else {
                condition.wait()
            }
        }
        return lastResult
    }

    /// Makes every later or waiting collective throw `unusable` with `reason`.
    func breakGroup(reason: String) {
        condition.lock()
        defer { condition.unlock() }
        if brokenReason == nil { brokenReason = reason }
        condition.broadcast()
    }
}
