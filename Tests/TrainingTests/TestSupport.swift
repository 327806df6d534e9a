import Collective
import Foundation
import XCTest

/// Paths of the repository, found from this file (Tests/TrainingTests/…).
enum Repo {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static var fixtures: String { root + "/Tests/TrainingTests/Fixtures" }
    static var mnist: String { root + "/data/mnist" }
    /// The release binary the tests drive (built by `swift build -c release` before the tests).
    static var binary: String {
        for config in ["release", "debug"] {
            let p = root + "/.build/\(config)/distcnn"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return root + "/.build/release/distcnn"
    }
}

/// A fresh temporary folder, removed when the test ends.
func temporaryDirectory(_ test: XCTestCase) -> String {
    let dir = NSTemporaryDirectory() + "distcnn-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}

/// Runs a command, returning exit status and captured output.
@discardableResult
func runProcess(_ executable: String, _ args: [String], environment: [String: String] = [:],
         timeout: Double = 600) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    let outData = LockedData(), errData = LockedData()
    out.fileHandleForReading.readabilityHandler = { outData.append($0.availableData) }
    err.fileHandleForReading.readabilityHandler = { errData.append($0.availableData) }
    try p.run()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate(); p.waitUntilExit(); XCTFail("\(executable) \(args) timed out after \(timeout) s") }
    p.waitUntilExit()
    out.fileHandleForReading.readabilityHandler = nil
    err.fileHandleForReading.readabilityHandler = nil
    outData.append(out.fileHandleForReading.readDataToEndOfFile())
    errData.append(err.fileHandleForReading.readDataToEndOfFile())
    return (p.terminationStatus, outData.string, errData.string)
}

final class LockedData: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
    var string: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
}

/// Runs `body` once per communicator, each on its own thread (as MPI runs one process per
/// rank), and returns every rank's outcome in rank order; a rank still running after `limit`
/// seconds fails the test (its outcome is an error) instead of hanging it.
func onRanks<T>(_ communicators: [Communicator], limit: Double,
                file: StaticString = #filePath, line: UInt = #line,
                _ body: @escaping (Communicator) throws -> T) -> [Result<T, Error>] {
    let results = RankResults<T>(count: communicators.count)
    let done = DispatchGroup()
    for (rank, comm) in communicators.enumerated() {
        done.enter()
        let thread = Thread {
            results.set(rank, Result { try body(comm) })
            done.leave()
        }
        thread.stackSize = 1 << 22
        thread.start()
    }
    if done.wait(timeout: .now() + limit) == .timedOut {
        XCTFail("ranks still running after \(limit) s", file: file, line: line)
    }
    return results.all.map { $0 ?? .failure(StillRunning()) }
}

struct StillRunning: Error {}

/// Each rank thread's outcome, by rank.
final class RankResults<T>: @unchecked Sendable {
    private var values: [Result<T, Error>?]
    private let lock = NSLock()
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ rank: Int, _ r: Result<T, Error>) { lock.lock(); values[rank] = r; lock.unlock() }
    var all: [Result<T, Error>?] { lock.lock(); defer { lock.unlock() }; return values }
}
