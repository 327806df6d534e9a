import Collective
import Foundation
import XCTest

/// Runs `body` once per communicator, each on its own thread (as MPI runs one
/// process per rank), and returns every rank's outcome in rank order.
///
/// Fails the test instead of hanging when the ranks are not done after `limit` seconds.
func runRanks<T>(
    _ communicators: [Communicator],
    limit: Double = 20,
    file: StaticString = #filePath, line: UInt = #line,
    _ body: @escaping (Communicator) throws -> T
) -> [Result<T, Error>] {
    let outcomes = Outcomes<T>(count: communicators.count)
    let done = DispatchGroup()
    for (rank, comm) in communicators.enumerated() {
        done.enter()
        let thread = Thread {
            outcomes.set(rank, Result { try body(comm) })
            done.leave()
        }
        thread.stackSize = 1 << 22
        thread.start()
    }
    if done.wait(timeout: .now() + limit) == .timedOut {
        XCTFail("ranks still running after \(limit) s", file: file, line: line)
    }
    return outcomes.all
}

/// Each rank's outcome, written by the rank threads.
private final class Outcomes<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<T, Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ rank: Int, _ result: Result<T, Error>) { lock.lock(); results[rank] = result; lock.unlock() }
    var all: [Result<T, Error>] {
        lock.lock()
        defer { lock.unlock() }
        return results.map { $0 ?? .failure(RankDidNotFinish()) }
    }
}

/// A rank's thread had not returned when `runRanks` stopped waiting.
struct RankDidNotFinish: Error {}

extension Result {
    /// The error of a failed result, or nil.
    var error: Failure? {
        if case let .failure(error) = self { return error }
        return nil
    }
}
