import CMPI
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How a rank waits for a nonblocking MPI operation: test, yield, then sleep with backoff.
///
/// Open MPI's blocking calls spin on a core; with several ranks on one small node the
/// waiting rank would steal the core a slower rank needs to reach the collective. So
/// we poll `MPI_Test` (which also drives the operation's progress), yielding the core
/// between tests, for up to `spinNanoseconds`: long enough to cover what one rank waits
/// for another within a training step and the whole of a large all-reduce, which only
/// advances inside `MPI_Test` (a spin too short to cover it slowed training: see
/// BENCHMARKS.md, "Measurements once quoted in code comments"). Beyond that (a rank
/// writing a checkpoint, a peer that died) we sleep between tests with a backoff up to
/// `maxSleepNanoseconds`.
struct MPIRequestPolling {
    /// Polls with `sched_yield` between tests for this long before sleeping.
    var spinNanoseconds: UInt64 = 5_000_000
    /// First sleep between tests once spinning is over; doubles up to `maxSleepNanoseconds`.
    var minSleepNanoseconds: UInt64 = 10_000
    var maxSleepNanoseconds: UInt64 = 200_000

    /// Whether all `requests` have completed (`MPI_Testall`, which also drives their progress);
    /// the completed ones become null.
    static func testAll(_ requests: UnsafeMutableBufferPointer<MPI_Request?>, call: String) throws -> Bool {
        var done: Int32 = 0
        let code = MPIRuntime.serialized {
            MPI_Testall(Int32(requests.count), requests.baseAddress, &done, cmpi_statuses_ignore())
        }
        try checkMPI(code, call)
        return done != 0
    }

    /// Calls `test` (which must not block) until it says `done` (true) or `timeout` nanoseconds
    /// pass without it saying `advanced` (false): the deadline is for making no progress.
    func wait(timeout: UInt64?, until test: () throws -> (done: Bool, advanced: Bool)) rethrows -> Bool {
        var start = monotonicNanoseconds()
        var sleep = minSleepNanoseconds
        while true {
            let (done, advanced) = try test()
            if done { return true }
            let now = monotonicNanoseconds()
            if advanced { start = now; sleep = minSleepNanoseconds }
            if let timeout, now - start >= timeout { return false }
            if now - start < spinNanoseconds {
                sched_yield()
            } else {
                var pause = timespec(tv_sec: 0, tv_nsec: Int(sleep))
                nanosleep(&pause, nil)
                sleep = min(sleep * 2, maxSleepNanoseconds)
            }
        }
    }
}

/// Nanoseconds on the monotonic clock (immune to wall-clock changes).
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
