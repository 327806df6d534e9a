import Foundation
import XCTest

/// `deploy/distcnn.sbatch` on a real one-node Slurm that the test starts itself
/// (`deploy/slurm-local.sh`: Debian's slurmctld, slurmd and munge, installed if missing): a job
/// stopped by its time-limit warning and then by `scancel --signal=USR1 --batch` checkpoints at a
/// step boundary, requeues itself twice, resumes from those checkpoints, and ends with the same
/// weights as the same job never interrupted.
final class SlurmTests: XCTestCase {
    static let slurmDirectory = "/run/distcnn-slurm-test"
    static let conf = slurmDirectory + "/slurm.conf"
    var localSlurm: String { Repo.root + "/deploy/slurm-local.sh" }
    var slurmEnvironment: [String: String] {
        ["DCNN_SLURM_DIR": SlurmTests.slurmDirectory, "DCNN_SLURM_CTLD_PORT": "6927", "DCNN_SLURM_SLURMD_PORT": "6928",
         "SLURM_CONF": SlurmTests.conf]
    }

    /// 2 ranks × 1 thread, 15 epochs of 60 steps (900 steps, about a minute on two cores), a
    /// checkpoint every 20 steps.
    func jobEnvironment(_ runDir: String) -> [String: String] {
        slurmEnvironment.merging([
            "DISTCNN": Repo.root, "RUN_DIR": runDir, "BIN": Repo.binary, "DATA": Repo.mnist,
            "TRAIN_ARGS": "--model ref --epochs 15 --batch-size 100 --train-limit 6000 --validation-split 500 --test-limit 500 --threads 1 --checkpoint-every 20 --step-timeout 60",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        ]) { _, b in b }
    }

    func startSlurm() throws {
        guard getuid() == 0 else { throw XCTSkip("a local Slurm (deploy/slurm-local.sh) needs root") }
        let script = localSlurm, env = slurmEnvironment
        addTeardownBlock { _ = try? runProcess(script, ["down"], environment: env, timeout: 120) }
        let up = try runProcess(localSlurm, ["up"], environment: slurmEnvironment, timeout: 900)
        guard up.status == 0 else {
            throw SlurmFailure("deploy/slurm-local.sh up failed (exit \(up.status)): \(up.stderr)\(up.stdout)")
        }
    }

    func slurm(_ command: String, _ args: [String]) throws -> String {
        let r = try runProcess("/usr/bin/" + command, args, environment: slurmEnvironment, timeout: 30)
        guard r.status == 0 else { throw SlurmFailure("\(command) \(args.joined(separator: " ")) failed: \(r.stderr)") }
        return r.stdout
    }

    func submit(_ runDir: String, log: String, _ options: [String] = []) throws -> String {
        let r = try runProcess("/usr/bin/sbatch", ["--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                                                   "--output=" + log] + options + [Repo.root + "/deploy/distcnn.sbatch"],
                               environment: jobEnvironment(runDir), timeout: 30)
        guard r.status == 0 else { throw SlurmFailure("sbatch failed: \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `scontrol show job`'s fields (JobState, Restarts, ExitCode, …).
    func job(_ id: String) throws -> [String: String] {
        var fields: [String: String] = [:]
        for token in try slurm("scontrol", ["-o", "show", "job", id]).split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            guard let eq = token.firstIndex(of: "=") else { continue }
            fields[String(token[..<eq])] = String(token[token.index(after: eq)...])
        }
        return fields
    }

    /// Polls the job until `condition` holds; fails with the job's state and log after `limit` s.
    func wait(_ id: String, log: String, _ what: String, limit: Double,
              until condition: ([String: String]) throws -> Bool) throws -> [String: String] {
        let deadline = Date().addingTimeInterval(limit)
        while true {
            let fields = try job(id)
            if try condition(fields) { return fields }
            let state = fields["JobState"] ?? "?"
            if Date() > deadline || ["FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"].contains(state) {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? "(no log)"
                throw SlurmFailure("job \(id) did not reach '\(what)' within \(Int(limit)) s: JobState=\(state) Restarts=\(fields["Restarts"] ?? "?") Reason=\(fields["Reason"] ?? "?"); log:\n\(text.suffix(3000))")
            }
            usleep(300_000)
        }
    }

    func newestStep(_ runDir: String) -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: runDir + "/checkpoints")) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".safetensors") }
            .compactMap { Int($0.dropFirst(5).prefix(8)) }.max() ?? 0
    }

    /// The preempted job's `preempted.json`, read while the job waits in the queue.
    func preemption(_ runDir: String) throws -> (checkpoint: String, step: Int, signal: String) {
        let data = try Data(contentsOf: URL(fileURLWithPath: runDir + "/preempted.json"))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (try XCTUnwrap(json["checkpoint"] as? String), try XCTUnwrap(json["global_step"] as? Int),
                try XCTUnwrap(json["signal"] as? String))
    }

    func testPreemptedJobRequeuesAndResumesToTheSameWeights() throws {
        try startSlurm()
        let base = temporaryDirectory(self)

        // The reference: the same job, never interrupted.
        let whole = try submit(base + "/whole", log: base + "/whole.out")
        let wholeEnd = try wait(whole, log: base + "/whole.out", "COMPLETED", limit: 240) { $0["JobState"] == "COMPLETED" }
        XCTAssertEqual(wholeEnd["Restarts"], "0")

        // (b) The time-limit warning: submitted with a 10-minute limit (the script's own
        // --signal=B:USR1@120), shortened to 2 minutes once training runs, so Slurm's next periodic
        // check (every 30 s) finds the job within 120 s of its end and sends the warning.
        let dir = base + "/cut", log = base + "/cut.out"
        let id = try submit(dir, log: log, ["--time=10"])
        _ = try wait(id, log: log, "a first checkpoint", limit: 120) { _ in self.newestStep(dir) >= 20 }
        _ = try slurm("scontrol", ["update", "JobId=" + id, "TimeLimit=2"])
        _ = try wait(id, log: log, "requeued by its time-limit warning", limit: 60) {
            $0["JobState"] == "PENDING" && (Int($0["Restarts"] ?? "") ?? 0) >= 1
        }
        let first = try preemption(dir)
        XCTAssertEqual(first.signal, "SIGUSR1")
        XCTAssertTrue(FileManager.default.fileExists(atPath: first.checkpoint), first.checkpoint)
        // The requeued job gets the whole 10 minutes again, so it meets no second warning.
        _ = try slurm("scontrol", ["update", "JobId=" + id, "TimeLimit=10"])

        // (a) `scancel --signal=USR1 --batch` once the requeued job has trained past its checkpoint.
        _ = try wait(id, log: log, "running again past step \(first.step)", limit: 120) { _ in
            self.newestStep(dir) > first.step
        }
        _ = try slurm("scancel", ["--signal=USR1", "--batch", id])
        _ = try wait(id, log: log, "requeued by scancel --signal=USR1 --batch", limit: 60) {
            $0["JobState"] == "PENDING" && (Int($0["Restarts"] ?? "") ?? 0) >= 2
        }
        let second = try preemption(dir)
        XCTAssertGreaterThan(second.step, first.step)
        XCTAssertEqual(second.signal, "SIGUSR1")

        let end = try wait(id, log: log, "COMPLETED", limit: 240) { $0["JobState"] == "COMPLETED" }
        XCTAssertEqual(end["Restarts"], "2")
        let text = try String(contentsOfFile: log, encoding: .utf8)
        XCTAssertTrue(text.contains("resuming from \(first.checkpoint)"), text)
        XCTAssertTrue(text.contains("resuming from \(second.checkpoint)"), text)
        XCTAssertEqual(text.components(separatedBy: "requeueing job \(id)").count - 1, 2, text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/preempted.json"), "the finished job leaves no preempted.json")

        func summary(_ d: String) throws -> [String: Any] {
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: d + "/summary.json"))) as? [String: Any])
        }
        let a = try summary(base + "/whole"), b = try summary(dir)
        XCTAssertEqual(b["global_steps"] as? Int, 900)
        XCTAssertEqual(b["weights_sha256"] as? String, a["weights_sha256"] as? String,
                       "the twice-requeued job ends with other weights than the uninterrupted one")
    }
}

struct SlurmFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
