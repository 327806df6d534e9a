import Foundation
import Training
import XCTest

/// Faults: a stalled rank (also rank 0 in a checkpoint write), signals to mpirun, a NaN loss,
/// resuming with another number of ranks.
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

    /// The pid of rank `rank` among `mpirun`'s children (from OMPI_COMM_WORLD_RANK in its environment).
    func rankProcess(_ rank: Int, of mpirun: Process) throws -> Int32? {
        let children = try runProcess("/usr/bin/pgrep", ["-P", "\(mpirun.processIdentifier)"]).stdout
            .split(separator: "\n").compactMap { Int32($0) }
        return children.first { pid in
            guard let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return env.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }
        }
    }

    /// SIGSTOP of rank 0 while it writes a checkpoint (its `.tmp-step-…` file is open): rank 1
    /// waits for rank 0's files under --step-timeout and ends the job, naming that phase.
    func testRankZeroStoppedWhileWritingACheckpointEndsTheJob() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let dir = temporaryDirectory(self) + "/stall0"
        let err = Pipe(), errText = LockedData()
        err.fileHandleForReading.readabilityHandler = { errText.append($0.availableData) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun)
        p.arguments = ["--oversubscribe", "--bind-to", "none", "-np", "2"]
            + trainArgs(dir, epochs: 5, ["--checkpoint-every", "1", "--step-timeout", "5"])
        p.environment = ProcessInfo.processInfo.environment.merging(FaultTests.rootEnvironment) { _, b in b }
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        // Stop rank 0 when a temporary checkpoint file is there, and keep it stopped only if the
        // file is still there afterwards (the write had not finished); else let it go and retry.
        let checkpoints = dir + "/checkpoints"
        var stopped: Int32?
        let deadline = Date().addingTimeInterval(120)
        func writing() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: checkpoints)) ?? []).contains { $0.hasPrefix(".tmp-step-") }
        }
        while stopped == nil && p.isRunning && Date() < deadline {
            guard writing(), let rank0 = try rankProcess(0, of: p) else { usleep(200); continue }
            kill(rank0, SIGSTOP)
            if writing() { stopped = rank0 } else { kill(rank0, SIGCONT) }
        }
        let rank0 = try XCTUnwrap(stopped, "never caught rank 0 writing a checkpoint")
        let t0 = Date()
        while p.isRunning && Date().timeIntervalSince(t0) < 60 { usleep(50_000) }
        let elapsed = Date().timeIntervalSince(t0)
        kill(rank0, SIGCONT); kill(rank0, SIGKILL)
        p.waitUntilExit()
        err.fileHandleForReading.readabilityHandler = nil
        errText.append(err.fileHandleForReading.readDataToEndOfFile())
        XCTAssertLessThan(elapsed, 5 + 20, "the job took \(elapsed) s to end after rank 0 stalled in a checkpoint write")
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertTrue(errText.string.contains("collective timed out during waiting for rank 0's files"), errText.string)
    }

    /// A step of a few seconds: 2 ranks × 1024 images of the ref model.
    func longStepArgs(_ dir: String, _ extra: [String] = []) -> [String] {
        [Repo.binary, "train", "--model", "ref", "--data", Repo.mnist, "--epochs", "2", "--batch-size", "2048",
         "--train-limit", "8192", "--validation-split", "500", "--test-limit", "500", "--threads", "1",
         "--checkpoint-every", "100", "--run-dir", dir] + extra
    }

    /// Starts mpirun on `args`, waits until rank 0 has printed its run header (its signal
    /// handler is in place) and `delay` more seconds, sends mpirun `signal`, and returns its exit
    /// status and standard error.
    func signalMPIRunMidStep(_ mpirun: String, _ args: [String], signal: Int32, delay: Double) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun)
        p.arguments = ["--oversubscribe", "--bind-to", "none", "-np", "2"] + args
        p.environment = ProcessInfo.processInfo.environment.merging(FaultTests.rootEnvironment) { _, b in b }
        let out = Pipe(), err = Pipe(), outText = LockedData(), errText = LockedData()
        out.fileHandleForReading.readabilityHandler = { outText.append($0.availableData) }
        err.fileHandleForReading.readabilityHandler = { errText.append($0.availableData) }
        p.standardOutput = out; p.standardError = err
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let deadline = Date().addingTimeInterval(120)
        while !outText.string.contains("run dir") && p.isRunning && Date() < deadline { usleep(20_000) }
        usleep(UInt32(delay * 1e6))
        XCTAssertTrue(p.isRunning, "the run ended before the signal: \(errText.string)")
        kill(p.processIdentifier, signal)
        let end = Date().addingTimeInterval(120)
        while p.isRunning && Date() < end { usleep(50_000) }
        p.waitUntilExit()
        out.fileHandleForReading.readabilityHandler = nil; err.fileHandleForReading.readabilityHandler = nil
        errText.append(err.fileHandleForReading.readDataToEndOfFile())
        return (p.terminationStatus, errText.string)
    }

    /// SIGUSR1 to mpirun during a step of a few seconds: mpirun forwards it, every rank stops at
    /// the step's end, rank 0 writes that step's checkpoint and preempted.json naming it, the job
    /// exits 138, and --resume ends with the weights of the uninterrupted run.
    func testSIGUSR1ToMPIRunDuringALongStepCheckpointsAndResumes() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let base = temporaryDirectory(self), dir = base + "/usr1"
        let (status, stderr) = try signalMPIRunMidStep(mpirun, longStepArgs(dir), signal: SIGUSR1, delay: 1.5)
        XCTAssertEqual(status, 138, stderr)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: dir + "/preempted.json"))) as? [String: Any], stderr)
        let step = try XCTUnwrap(json["global_step"] as? Int)
        XCTAssertEqual(json["signal"] as? String, "SIGUSR1")
        XCTAssertGreaterThan(step, 0)
        XCTAssertLessThan(step, 8, "the run went on after the signal")
        XCTAssertEqual(json["checkpoint"] as? String, dir + "/checkpoints/" + String(format: "step-%08d.safetensors", step))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints").sorted(),
                       [String(format: "step-%08d.safetensors", step)], "only the stop's checkpoint")

        let resumed = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "2"] + longStepArgs(dir, ["--resume"]),
                                     environment: FaultTests.rootEnvironment)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("resuming from " + dir + "/checkpoints/" + String(format: "step-%08d.safetensors", step)), resumed.stdout)
        let whole = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "2"] + longStepArgs(base + "/whole"),
                                   environment: FaultTests.rootEnvironment)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        XCTAssertEqual(try summary(dir)["weights_sha256"] as? String, try summary(base + "/whole")["weights_sha256"] as? String)
    }

    /// SIGTERM to mpirun itself: mpirun ends the ranks about a second later, so rank 0 says at
    /// once that the step's checkpoint may be lost and that SIGUSR1 is the signal to send.
    func testSIGTERMToMPIRunWarnsThatTheCheckpointMayBeLost() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let dir = temporaryDirectory(self) + "/term"
        let (status, stderr) = try signalMPIRunMidStep(mpirun, longStepArgs(dir), signal: SIGTERM, delay: 1.5)
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(stderr.contains("warning: SIGTERM received: the run stops with a checkpoint when this step ends (if this signal went to mpirun or srun, it kills the ranks soon and the step's checkpoint is lost"), stderr)
        XCTAssertTrue(stderr.contains("send the launcher SIGUSR1 to stop with a checkpoint"), stderr)
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
