import Foundation
import Training
import XCTest

/// `distcnn launch`: its command lines and decisions (with a stand-in mpirun and launch agent),
/// and on the namespace cluster a job that carries on after a host is cut, and a cut host that
/// ends a plain mpirun job quickly with the shipped keepalive settings.
final class LaunchTests: XCTestCase {
    // MARK: Command lines and decisions

    func testTrainArgumentsResumeAndCountRestarts() {
        XCTAssertEqual(Launcher.trainArguments(["--epochs", "2"], restart: 0), ["--epochs", "2", "--resume", "--restarts", "0"])
        XCTAssertEqual(Launcher.trainArguments(["--resume", "--restarts", "7"], restart: 2), ["--resume", "--restarts", "2"])
        // A given starting file is for the first start only; a relaunch resumes from the run's newest checkpoint.
        XCTAssertEqual(Launcher.trainArguments(["--resume-from", "a.safetensors", "--seed", "3"], restart: 0),
                       ["--resume-from", "a.safetensors", "--seed", "3", "--restarts", "0"])
        XCTAssertEqual(Launcher.trainArguments(["--resume-from", "a.safetensors", "--seed", "3"], restart: 1),
                       ["--resume", "--seed", "3", "--restarts", "1"])
        XCTAssertEqual(Launcher.trainArguments(["--resume-from=a.safetensors"], restart: 1), ["--resume", "--restarts", "1"])
        XCTAssertEqual(Launcher.runDirectory(["--run-dir", "r1", "--seed", "2"]), "r1")
        XCTAssertEqual(Launcher.runDirectory(["--run-dir=r2"]), "r2")
        XCTAssertEqual(Launcher.runDirectory([]), RunOptions().runDirectory)
    }

    func testLaunchAgentIsMPIRunsOwn() {
        XCTAssertEqual(Launcher.launchAgent(mpirunArguments: [], environment: [:]), ["ssh"])
        XCTAssertEqual(Launcher.launchAgent(mpirunArguments: [], environment: ["OMPI_MCA_plm_rsh_agent": "ssh -p 2222 : rsh"]),
                       ["ssh", "-p", "2222"])
        XCTAssertEqual(Launcher.launchAgent(mpirunArguments: ["--mca", "plm_rsh_agent", "/opt/agent", "--bind-to", "none"],
                                            environment: ["OMPI_MCA_plm_rsh_agent": "ssh"]), ["/opt/agent"])
        XCTAssertEqual(Launcher.launchAgent(mpirunArguments: ["-launch-agent", "rsh"], environment: [:]), ["rsh"])
    }

    func testKeepaliveOnlyWhereNothingElseSaysSo() {
        let env = Launcher.withKeepalive(["OMPI_MCA_oob_tcp_keepalive_time": "9", "PATH": "/bin"])
        XCTAssertEqual(env["OMPI_MCA_oob_tcp_keepalive_time"], "9")
        XCTAssertEqual(env["OMPI_MCA_oob_tcp_keepalive_intvl"], "1")
        XCTAssertEqual(env["OMPI_MCA_oob_tcp_keepalive_probes"], "3")
        XCTAssertEqual(env["PATH"], "/bin")
        let withFile = ["OMPI_MCA_mca_param_files": "/etc/x.conf"]
        XCTAssertEqual(Launcher.withKeepalive(withFile), withFile)
        // What launch sets is what the shipped parameter file says.
        let conf = (try? String(contentsOfFile: Repo.root + "/deploy/openmpi-mca.conf", encoding: .utf8)) ?? ""
        for (name, value) in Launcher.keepalive {
            XCTAssertTrue(conf.contains("\n\(name) = \(value)\n") || conf.hasSuffix("\n\(name) = \(value)"), "\(name) = \(value) in openmpi-mca.conf")
        }
    }

    func testHostsFromHostfileAndList() throws {
        XCTAssertEqual(try Launcher.hosts(hostfile: "# nodes\nn1 slots=2 max_slots=4\n\n n2   # spare\n", path: "h"),
                       [LaunchHost(name: "n1", slots: 2), LaunchHost(name: "n2", slots: 1)])
        XCTAssertEqual(try Launcher.hosts(list: "a,b:3"), [LaunchHost(name: "a", slots: 1), LaunchHost(name: "b", slots: 3)])
        XCTAssertThrowsError(try Launcher.hosts(list: "a,a")) { XCTAssertTrue("\($0)".contains("listed twice"), "\($0)") }
        XCTAssertThrowsError(try Launcher.hosts(list: "a:x")) { XCTAssertTrue("\($0)".contains("slots"), "\($0)") }
        XCTAssertThrowsError(try Launcher.hosts(hostfile: "n1 slots=0\n", path: "h")) { XCTAssertTrue("\($0)".hasPrefix("h:1:"), "\($0)") }
        XCTAssertThrowsError(try Launcher.hosts(hostfile: "# none\n", path: "h")) { XCTAssertTrue("\($0)".contains("no hosts"), "\($0)") }
    }

    func testBadLaunchFlagsAreOneLine() throws {
        for (args, needle) in [(["launch", "--", "train"], "--hostfile FILE or --host"),
                               (["launch", "--host", "a", "--", "evaluate"], "-- train ARGS"),
                               (["launch", "--host", "a", "--min-nodes", "0", "--", "train"], "--min-nodes must be in 1...100000, got 0"),
                               (["launch", "--host", "a,a", "--", "train"], "listed twice")] {
            let r = try runProcess(Repo.binary, args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(needle), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
        }
    }

    /// A stand-in mpirun that records its command line and fails like a lost node (exit 205),
    /// and a launch agent that answers only for the hosts listed in a file.
    func fakeCluster(_ dir: String, mpirunBody: String = "exit 205") throws -> (environment: [String: String], calls: String) {
        let bin = dir + "/bin", calls = dir + "/calls"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let scripts = [
            "mpirun": "#!/bin/sh\necho \"$*\" >> \(calls)\nenv | grep '^OMPI_MCA_oob_tcp_keepalive' | sort | tr '\\n' ' ' >> \(calls)\necho >> \(calls)\n\(mpirunBody)\n",
            "agent": "#!/bin/sh\ngrep -qx \"$1\" \(dir)/alive\n",
        ]
        for (name, text) in scripts {
            try text.write(toFile: bin + "/" + name, atomically: true, encoding: .utf8)
            chmod(bin + "/" + name, 0o755)
        }
        let path = bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        return (["PATH": path, "OMPI_MCA_plm_rsh_agent": bin + "/agent"], calls)
    }

    func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func testDropsSilentHostsAndStopsBelowMinNodes() throws {
        let dir = temporaryDirectory(self)
        let (env, calls) = try fakeCluster(dir)
        try "h1\nh3\n".write(toFile: dir + "/alive", atomically: true, encoding: .utf8)   // h2 and h4 are gone
        let r = try runProcess(Repo.binary, ["launch", "--host", "h1,h2,h3,h4", "--np-per-node", "2", "--min-nodes", "2",
                                             "--max-restarts", "1", "--mpirun-arg", "--bind-to", "--mpirun-arg", "none",
                                             "--", "train", "--run-dir", dir + "/run", "--seed", "5"], environment: env)
        XCTAssertEqual(r.status, 205, r.stderr)
        let c = lines(calls)
        XCTAssertEqual(c.count, 4, "two attempts, each with its keepalive line: \(c)")
        XCTAssertTrue(c[0].hasPrefix("--bind-to none --host h1:2,h2:2,h3:2,h4:2 -np 8 /"), c[0])
        XCTAssertTrue(c[0].hasSuffix(" train --run-dir \(dir)/run --seed 5 --resume --restarts 0"), c[0])
        XCTAssertEqual(c[1], "OMPI_MCA_oob_tcp_keepalive_intvl=1 OMPI_MCA_oob_tcp_keepalive_probes=3 OMPI_MCA_oob_tcp_keepalive_time=2 ")
        XCTAssertTrue(c[2].hasPrefix("--bind-to none --host h1:2,h3:2 -np 4 /"), c[2])
        XCTAssertTrue(c[2].hasSuffix(" --resume --restarts 1"), c[2])
        XCTAssertTrue(r.stdout.contains("launch: host h2 does not answer through \(dir)/bin/agent: dropped"), r.stdout)
        XCTAssertTrue(r.stdout.contains("launch: host h4 does not answer"), r.stdout)
        XCTAssertFalse(r.stdout.contains("launch: host h1 does not answer") || r.stdout.contains("launch: host h3 does not answer"), r.stdout)
        XCTAssertTrue(r.stdout.contains("launch: restart 1: world size 4 on 2 hosts (h1, h3)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("launch: not relaunching: no restarts left (--max-restarts 1)"), r.stdout)

        // Only h1 answers: 1 host is fewer than --min-nodes 2, so no relaunch.
        try "h1\n".write(toFile: dir + "/alive", atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: calls)
        let m = try runProcess(Repo.binary, ["launch", "--host", "h1,h2", "--min-nodes", "2", "--", "train", "--run-dir", dir + "/run"],
                               environment: env)
        XCTAssertEqual(m.status, 205, m.stderr)
        XCTAssertEqual(lines(calls).filter { $0.contains(" train ") }.count, 1)
        XCTAssertTrue(m.stdout.contains("launch: not relaunching: 1 host answers, fewer than --min-nodes 2"), m.stdout)
    }

    func testStopsWhenRestartsRunOutOrTheRunWasPreempted() throws {
        let dir = temporaryDirectory(self)
        let (env, calls) = try fakeCluster(dir)
        try "h1\nh2\n".write(toFile: dir + "/alive", atomically: true, encoding: .utf8)
        // Every host answers: the failure is retried on all of them until the restarts run out.
        let r = try runProcess(Repo.binary, ["launch", "--host", "h1,h2", "--max-restarts", "2", "--", "train", "--run-dir", dir + "/run"],
                               environment: env)
        XCTAssertEqual(r.status, 205, r.stderr)
        XCTAssertEqual(lines(calls).filter { $0.contains(" train ") }.map { $0.components(separatedBy: " --restarts ").last },
                       ["0", "1", "2"])
        XCTAssertTrue(r.stdout.contains("launch: not relaunching: no restarts left (--max-restarts 2)"), r.stdout)

        // A preempted run (the trainer left preempted.json and exited 128 + signal) is not relaunched.
        let run = dir + "/pre"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        let (env2, calls2) = try fakeCluster(dir + "/second", mpirunBody: "echo '{}' > \(run)/preempted.json\nexit 143")
        try "h1\nh2\n".write(toFile: dir + "/second/alive", atomically: true, encoding: .utf8)
        let p = try runProcess(Repo.binary, ["launch", "--host", "h1,h2", "--", "train", "--run-dir", run], environment: env2)
        XCTAssertEqual(p.status, 143, p.stderr)
        XCTAssertEqual(lines(calls2).filter { $0.contains(" train ") }.count, 1)
        XCTAssertTrue(p.stdout.contains("launch: not relaunching: the run was preempted (\(run)/preempted.json)"), p.stdout)
    }

    // MARK: On the namespace cluster

    static let prefix = "dclaunch", subnet = "10.79.7"
    var cluster: String { Repo.root + "/deploy/netns-cluster.sh" }
    var hostNames: [String] { (1...3).map { "\(LaunchTests.subnet).\(10 + $0)" } }

    func clusterUp() throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root") }
        let up = try runProcess(cluster, ["up", "3", "--prefix", LaunchTests.prefix, "--subnet", LaunchTests.subnet])
        XCTAssertEqual(up.status, 0, up.stderr)
        addTeardownBlock { [cluster] in _ = try? runProcess(cluster, ["down", "--prefix", LaunchTests.prefix]) }
    }

    /// mpirun's settings for the namespace cluster, as `deploy/netns-mpirun` gives them, but
    /// without its keepalive flags: those come from what we ship.
    var netnsEnvironment: [String: String] {
        let net = LaunchTests.subnet + ".0/24"
        return ["OMPI_MCA_plm_rsh_agent": Repo.root + "/deploy/netns-agent", "OMPI_MCA_plm_rsh_no_tree_spawn": "1",
                "OMPI_MCA_oob_tcp_if_include": net, "OMPI_MCA_btl": "tcp,vader,self", "OMPI_MCA_btl_tcp_if_include": net,
                "OMPI_MCA_hwloc_base_binding_policy": "none",
                "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]
    }

    func trainArgs(_ dir: String) -> [String] {
        ["train", "--model", "ref", "--data", Repo.mnist, "--batch-size", "50", "--train-limit", "2000", "--validation-split", "500",
         "--test-limit", "500", "--threads", "1", "--epochs", "1", "--checkpoint-every", "10", "--step-timeout", "10",
         "--run-dir", dir, "--quiet"]
    }

    func summary(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as! [String: Any]
    }

    /// Starts `executable`, waits for `dir`'s step-10 checkpoint, cuts host 3 and returns the
    /// process and the time of the cut.
    func startAndCutAtStep10(_ executable: String, _ args: [String], dir: String, environment: [String: String],
                             output: String) throws -> (Process, Date) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, b in b }
        FileManager.default.createFile(atPath: output, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        p.standardOutput = log; p.standardError = log
        try p.run()
        let deadline = Date().addingTimeInterval(300)
        while !FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000010.safetensors") && p.isRunning
            && Date() < deadline { usleep(5_000) }
        XCTAssertTrue(p.isRunning, (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
        let cut = Date()
        XCTAssertEqual(try runProcess(cluster, ["cut", "3", "--prefix", LaunchTests.prefix]).status, 0)
        return (p, cut)
    }

    /// 3 hosts, host 3 cut after step 10: launch drops it, relaunches on the other 2 with
    /// `--resume` from step 10, and the job ends with the planned 40 steps and summary.json
    /// saying 1 restart on 2 ranks of the 2 other hosts.
    func testLaunchCarriesOnAfterAHostIsCut() throws {
        try clusterUp()
        let base = temporaryDirectory(self), dir = base + "/launch"
        let args = ["launch", "--host", hostNames.joined(separator: ","), "--min-nodes", "2", "--max-restarts", "2", "--"]
            + trainArgs(dir).filter { $0 != "--quiet" }
        let (p, _) = try startAndCutAtStep10(Repo.binary, args, dir: dir, environment: netnsEnvironment, output: base + "/out")
        let deadline = Date().addingTimeInterval(300)
        while p.isRunning && Date() < deadline { usleep(100_000) }
        if p.isRunning { p.terminate(); XCTFail("launch still running 300 s after the cut") }
        p.waitUntilExit()
        let out = (try? String(contentsOfFile: base + "/out", encoding: .utf8)) ?? ""
        XCTAssertEqual(p.terminationStatus, 0, out)
        XCTAssertTrue(out.contains("launch: host \(hostNames[2]) does not answer"), out)
        XCTAssertTrue(out.contains("launch: restart 1: world size 2 on 2 hosts (\(hostNames[0]), \(hostNames[1]))"), out)
        let s = try summary(dir)
        XCTAssertEqual(s["restarts"] as? Int, 1)
        XCTAssertEqual(s["world_size"] as? Int, 2)
        XCTAssertEqual((s["hosts"] as? [String]).map(Set.init), ["\(LaunchTests.prefix)1", "\(LaunchTests.prefix)2"])
        XCTAssertEqual(s["global_steps"] as? Int, 40)

        // The relaunch went on from the checkpoint written before the cut, not from scratch.
        XCTAssertTrue(out.split(separator: "\n").contains { $0.hasPrefix("resuming from ") && $0.hasSuffix("step-00000010.safetensors") }, out)
    }

    /// Plain mpirun with the shipped parameter file (deploy/openmpi-mca.conf): a cut host ends
    /// the job within `--step-timeout` + 20 s (without the keepalive, mpirun waits minutes for
    /// the cut host's daemon).
    func testCutHostEndsPlainMPIRunWithShippedSettings() throws {
        try clusterUp()
        let base = temporaryDirectory(self), dir = base + "/plain"
        let hostfile = base + "/hosts"
        try hostNames.map { "\($0) slots=1\n" }.joined().write(toFile: hostfile, atomically: true, encoding: .utf8)
        var env = netnsEnvironment
        env["OMPI_MCA_mca_param_files"] = Repo.root + "/deploy/openmpi-mca.conf"
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let (p, cut) = try startAndCutAtStep10(mpirun, ["--hostfile", hostfile, "-np", "3", Repo.binary] + trainArgs(dir),
                                               dir: dir, environment: env, output: base + "/out")
        while p.isRunning && Date().timeIntervalSince(cut) < 60 { usleep(100_000) }
        let elapsed = Date().timeIntervalSince(cut)
        if p.isRunning { p.terminate() }
        XCTAssertLessThan(elapsed, 10 + 20, "mpirun still running \(elapsed) s after the cut")
        p.waitUntilExit()
        XCTAssertNotEqual(p.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/summary.json"))
    }
}
