import Foundation
import Training
import XCTest

/// Faults: a stalled rank, a NaN loss, resuming with another number of ranks.
final class FaultTests: XCTestCase {
    static let rootEnvironment = ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]

    func trainArgs(_ dir: String, epochs: Int = 1, _ extra: [String] = []) -> [String] {
        [Repo.binary, "train", "--model", "ref", "--data", Repo.mnist, "--epochs", "\(epochs)", "--batch-size", "50",
         "--train-limit", "3000", "--validation-split", "500", "--test-limit", "500", "--threads", "1",
         "--checkpoint-every", "10", "--run-dir", dir, "--quiet"] + extra
    }

    /// Starts `mpirun ARGS` in the background, waits until the run has written its step-20
    /// checkpoint, and returns mpirun and its rank processes.
    func startUntilStep20(_ mpirun: String, _ arguments: [String], dir: String,
                          stderr: Pipe? = nil) throws -> (Process, [Int32]) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun)
        p.arguments = arguments
        p.environment = ProcessInfo.processInfo.environment.merging(FaultTests.rootEnvironment) { _, b in b }
        p.standardError = stderr ?? FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let checkpoint = dir + "/checkpoints/step-00000020.safetensors"
        let deadline = Date().addingTimeInterval(300)
        while !FileManager.default.fileExists(atPath: checkpoint) && p.isRunning && Date() < deadline { usleep(2_000) }
        let ranks = try runProcess("/usr/bin/pgrep", ["-P", "\(p.processIdentifier)"]).stdout
            .split(separator: "\n").compactMap { Int32($0) }
        return (p, ranks)
    }

    func summary(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as! [String: Any]
    }

    /// SIGSTOP one of two ranks: the other's collective makes no progress, it ends within
    /// `--step-timeout` plus a few seconds naming the phase, and `--resume` finishes the run.
    func testStalledRankEndsJobWithinTimeout() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let dir = temporaryDirectory(self) + "/stall"
        let err = Pipe()
        let (p, ranks) = try startUntilStep20(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "2"]
                                                  + trainArgs(dir, ["--step-timeout", "5"]), dir: dir, stderr: err)
        XCTAssertEqual(ranks.count, 2, "mpirun's children: \(ranks)")
        let stopped = try XCTUnwrap(ranks.last)
        let t0 = Date()
        kill(stopped, SIGSTOP)
        while p.isRunning && Date().timeIntervalSince(t0) < 60 { usleep(50_000) }
        let elapsed = Date().timeIntervalSince(t0)
        kill(stopped, SIGCONT); kill(stopped, SIGKILL)
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertLessThan(elapsed, 5 + 8, "the job took \(elapsed) s to end after a rank stalled")
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(stderr.contains("collective timed out during"), stderr)
        let resumed = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "2"] + trainArgs(dir, ["--resume"]),
                                     environment: FaultTests.rootEnvironment)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try summary(dir)["global_steps"] as? Int, 60)
    }

    /// Each rank keeps only its shard of Adam's moments current (the sharded optimizer step), so a
    /// checkpoint has to gather them from their owners. One of three ranks killed with SIGKILL
    /// after a checkpoint, and `--resume` with three ranks, ends bit for bit where the
    /// uninterrupted three-rank run does.
    func testThreeRankResumeAfterSIGKILLIsBitwiseExact() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let base = temporaryDirectory(self)
        let launch = ["--oversubscribe", "--bind-to", "none", "-np", "3"]
        let whole = try runProcess(mpirun, launch + trainArgs(base + "/whole"), environment: FaultTests.rootEnvironment)
        XCTAssertEqual(whole.status, 0, whole.stderr)

        let dir = base + "/cut"
        let (p, ranks) = try startUntilStep20(mpirun, launch + trainArgs(dir), dir: dir)
        XCTAssertEqual(ranks.count, 3, "mpirun's children: \(ranks)")
        kill(try XCTUnwrap(ranks.last), SIGKILL)
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/summary.json"), "the killed run must not finish")

        let resumed = try runProcess(mpirun, launch + trainArgs(dir, ["--resume"]), environment: FaultTests.rootEnvironment)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try summary(base + "/whole"), b = try summary(dir)
        XCTAssertEqual(b["global_steps"] as? Int, 60)
        XCTAssertEqual(b["weights_sha256"] as? String, a["weights_sha256"] as? String, "resumed 3-rank run ends with other weights")
    }

    /// A NaN or infinite loss stops every rank with one clear line; the last good checkpoint stays.
    func testNonFiniteLossStopsTheRun() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let dir = temporaryDirectory(self) + "/nan"
        let r = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "2"]
                                   + trainArgs(dir, ["--lr", "1e30", "--checkpoint-every", "1"]),
                               environment: FaultTests.rootEnvironment)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.contains("the training loss became"), r.stderr)
        XCTAssertEqual(r.stderr.components(separatedBy: "the training loss became").count, 2, "said once: \(r.stderr)")
        let checkpoints = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")
        XCTAssertFalse(checkpoints.isEmpty, "the last good checkpoint is kept")
        for name in checkpoints {
            let i = try runProcess(Repo.binary, ["inspect", dir + "/checkpoints/" + name])
            XCTAssertEqual(i.status, 0, "\(name) is valid")
        }
    }

    /// A checkpoint of a 2-rank run resumed with 3 ranks continues the same schedule and ends
    /// where the uninterrupted 2-rank run does, within the world-size tolerance.
    func testResumeWithAnotherWorldSize() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let base = temporaryDirectory(self)
        func launch(_ n: Int, _ args: [String]) throws {
            let r = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "\(n)"] + args,
                                   environment: FaultTests.rootEnvironment)
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        try launch(2, trainArgs(base + "/whole", ["--max-steps", "30"]))
        try launch(2, trainArgs(base + "/part", ["--max-steps", "20"]))
        // Continue the 20-step run with 3 ranks from its step-20 checkpoint.
        try launch(3, trainArgs(base + "/part", ["--max-steps", "30", "--resume-from",
                                                  base + "/part/checkpoints/step-00000020.safetensors"]))
        let a = try summary(base + "/whole"), b = try summary(base + "/part")
        XCTAssertEqual(b["global_steps"] as? Int, 30)
        XCTAssertEqual(b["world_size"] as? Int, 3)
        let la = try XCTUnwrap(a["test_loss"] as? Double), lb = try XCTUnwrap(b["test_loss"] as? Double)
        XCTAssertEqual(lb, la, accuracy: 2e-2 * la, "test loss: uninterrupted \(la), resumed with 3 ranks \(lb)")
    }
}
