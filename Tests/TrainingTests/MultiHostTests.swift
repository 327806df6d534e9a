import Foundation
import Training
import XCTest

/// Training across three "hosts": network namespaces joined by veth links (deploy/), with MPI
/// over TCP between them. Needs root, as CI has.
final class MultiHostTests: XCTestCase {
    static let prefix = "dctest", subnet = "10.79.0"
    var cluster: String { Repo.root + "/deploy/netns-cluster.sh" }

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        let up = try runProcess(cluster, ["up", "3", "--prefix", MultiHostTests.prefix, "--subnet", MultiHostTests.subnet])
        XCTAssertEqual(up.status, 0, up.stderr)
        addTeardownBlock { [cluster] in _ = try? runProcess(cluster, ["down", "--prefix", MultiHostTests.prefix]) }
    }

    func args(_ dir: String, _ extra: [String] = [], threads: Int = 1) -> [String] {
        [Repo.binary, "train", "--model", "ref", "--data", Repo.mnist, "--batch-size", "50", "--train-limit", "2000",
         "--validation-split", "500", "--test-limit", "500", "--threads", "\(threads)", "--run-dir", dir, "--quiet"] + extra
    }

    func netnsMPIRun(_ extra: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(Repo.root + "/deploy/netns-mpirun", ["--prefix", MultiHostTests.prefix, "-np", "3"] + extra)
    }

    func summary(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as! [String: Any]
    }

    /// Three hosts with two threads each (MPI over TCP) train the bits one process with one
    /// thread trains.
    func testThreeHostsTrainWhatOneHostTrains() throws {
        let base = temporaryDirectory(self)
        let remote = try netnsMPIRun(args(base + "/hosts", ["--max-steps", "5", "--augment", "standard"], threads: 2))
        XCTAssertEqual(remote.status, 0, remote.stderr)
        let local = try runProcess(Repo.binary, Array(args(base + "/local", ["--max-steps", "5", "--augment", "standard"]).dropFirst()))
        XCTAssertEqual(local.status, 0, local.stderr)
        let s = try summary(base + "/hosts")
        XCTAssertEqual(s["world_size"] as? Int, 3)
        XCTAssertEqual((s["hosts"] as? [String]).map { Set($0).count }, 3, "three distinct hosts: \(s["hosts"] ?? "")")
        XCTAssertEqual(s["weights_sha256"] as? String, try summary(base + "/local")["weights_sha256"] as? String)
    }

    /// Cutting a host's link mid-run: the other ranks' collectives stall, each ends within
    /// `--step-timeout` plus a few seconds, and after the link heals `--resume` finishes.
    func testCutHostEndsRanksWithinTimeout() throws {
        let dir = temporaryDirectory(self) + "/cut"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Repo.root + "/deploy/netns-mpirun")
        p.arguments = ["--prefix", MultiHostTests.prefix, "-np", "3"]
            + args(dir, ["--epochs", "1", "--checkpoint-every", "10", "--step-timeout", "5"])
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(300)
        while !FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000010.safetensors") && p.isRunning
            && Date() < deadline { usleep(5_000) }
        XCTAssertTrue(p.isRunning)
        let t0 = Date()
        XCTAssertEqual(try runProcess(cluster, ["cut", "2", "--prefix", MultiHostTests.prefix]).status, 0)
        func ranksAlive() -> Bool {
            let pids = (try? runProcess("/usr/bin/pgrep", ["-f", "run-dir \(dir)"]).stdout) ?? ""
            return pids.split(separator: "\n").contains { pid in
                ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").hasPrefix("distcnn")
            }
        }
        while ranksAlive() && Date().timeIntervalSince(t0) < 60 { usleep(100_000) }
        let elapsed = Date().timeIntervalSince(t0)
        XCTAssertLessThan(elapsed, 5 + 8, "ranks took \(elapsed) s to end after the cut")
        XCTAssertEqual(try runProcess(cluster, ["heal", "2", "--prefix", MultiHostTests.prefix]).status, 0)
        // mpirun waits for the cut host's daemon until the link is back; then it exits.
        let exitDeadline = Date().addingTimeInterval(120)
        while p.isRunning && Date() < exitDeadline { usleep(100_000) }
        if p.isRunning { p.terminate() }
        let resumed = try netnsMPIRun(args(dir, ["--epochs", "1", "--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try summary(dir)["global_steps"] as? Int, 40)
    }
}
