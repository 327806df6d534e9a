import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A host `distcnn launch` runs ranks on, with the number of ranks it gets.
public struct LaunchHost: Equatable, Sendable, CustomStringConvertible {
    public var name: String
    public var slots: Int
    public init(name: String, slots: Int) { self.name = name; self.slots = slots }
    public var description: String { name }
}

/// What `distcnn launch` does: run `distcnn train` under `mpirun` and, after a node loss,
/// relaunch it with `--resume` on the hosts that still answer.
public struct LaunchPlan: Sendable {
    public var hosts: [LaunchHost]
    /// Fewest hosts a relaunch may run on.
    public var minNodes = 1
    /// Relaunches allowed after the first attempt.
    public var maxRestarts = 3
    /// The `mpirun` executable.
    public var mpirun: String
    /// Given to `mpirun` before the hosts and the program.
    public var mpirunArguments: [String] = []
    /// The `distcnn` binary the ranks run, at the same path on every host.
    public var program: String
    /// `train`'s arguments (without the word `train`).
    public var trainArguments: [String]
    /// Seconds a host has to answer the launch agent's `HOST true`.
    public var probeTimeout = 5.0
    /// `mpirun`'s environment (before the keepalive defaults are added).
    public var environment: [String: String]

    public init(hosts: [LaunchHost], mpirun: String, program: String, trainArguments: [String], environment: [String: String]) {
        self.hosts = hosts; self.mpirun = mpirun; self.program = program
        self.trainArguments = trainArguments; self.environment = environment
    }
}

/// What happened, for the command to print as it happens.
public enum LaunchEvent: CustomStringConvertible {
    case started(restart: Int, hosts: [LaunchHost])
    case exited(code: Int32, seconds: Double)
    case hostLost(String, agent: String)
    case stopping(String)

    public var description: String {
        switch self {
        case let .started(restart, hosts):
            let what = restart == 0 ? "starting" : "restart \(restart)"
            return "\(what): world size \(hosts.reduce(0) { $0 + $1.slots }) on \(hosts.count) host\(hosts.count == 1 ? "" : "s") (\(hosts.map(\.name).joined(separator: ", ")))"
        case let .exited(code, seconds):
            return String(format: "mpirun exited with %d after %.1f s", code, seconds)
        case let .hostLost(host, agent):
            return "host \(host) does not answer through \(agent): dropped"
        case let .stopping(why):
            return "not relaunching: \(why)"
        }
    }
}

/// How a launch ended: the last `mpirun`'s exit code, the relaunches made and the last hosts.
public struct LaunchOutcome: Sendable {
    public var exitCode: Int32
    public var restarts: Int
    public var hosts: [LaunchHost]
}

public struct LaunchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum Launcher {
    /// Open MPI's keepalive settings for the runtime's TCP links, as in `deploy/openmpi-mca.conf`:
    /// a silent node is declared lost at most 5 s after it stops answering instead of minutes,
    /// before a `--step-timeout` watchdog aborts the job (why that matters: the file says).
    public static let keepalive = [("oob_tcp_keepalive_time", "2"), ("oob_tcp_keepalive_intvl", "1"),
                                   ("oob_tcp_keepalive_probes", "3")]

    /// Runs `plan`: `mpirun` until it succeeds, the run is preempted or finished, launch itself
    /// gets a signal, fewer than `minNodes` hosts answer, or no restarts are left.
    public static func run(_ plan: LaunchPlan, event: (LaunchEvent) -> Void) throws -> LaunchOutcome {
        guard !plan.hosts.isEmpty else { throw LaunchError("no hosts to launch on") }
        guard plan.hosts.count >= plan.minNodes else {
            throw LaunchError("\(plan.hosts.count) host\(plan.hosts.count == 1 ? "" : "s") given, fewer than --min-nodes \(plan.minNodes)")
        }
        let runDirectory = runDirectory(plan.trainArguments)
        let markers = [runDirectory + "/preempted.json", runDirectory + "/summary.json"]
        let agent = launchAgent(mpirunArguments: plan.mpirunArguments, environment: plan.environment)
        let environment = withKeepalive(plan.environment)
        LaunchSignals.install()
        defer { LaunchSignals.uninstall() }

        var hosts = plan.hosts, restart = 0
        while true {
            event(.started(restart: restart, hosts: hosts))
            let before = markers.map(FileStamp.init(path:))
            let started = Date()
            let code = try runMPIRun(mpirunCommand(plan, hosts: hosts, restart: restart), environment: environment)
            event(.exited(code: code, seconds: Date().timeIntervalSince(started)))
            let outcome = LaunchOutcome(exitCode: code, restarts: restart, hosts: hosts)
            if code == 0 { return outcome }
            if LaunchSignals.received != 0 {
                event(.stopping("launch received \(signalName(LaunchSignals.received)) and passed it to mpirun"))
                return outcome
            }
            if FileStamp(path: markers[0]) != before[0] {
                event(.stopping("the run was preempted (\(markers[0]))"))
                return outcome
            }
            if FileStamp(path: markers[1]) != before[1] {
                event(.stopping("the run finished (\(markers[1]) written)"))
                return outcome
            }
            if restart >= plan.maxRestarts {
                event(.stopping("no restarts left (--max-restarts \(plan.maxRestarts))"))
                return outcome
            }
            let answers = probe(hosts.map(\.name), agent: agent, timeout: plan.probeTimeout)
            for (host, ok) in zip(hosts, answers) where !ok { event(.hostLost(host.name, agent: agent.joined(separator: " "))) }
            hosts = zip(hosts, answers).filter { $0.1 }.map { $0.0 }
            if hosts.count < plan.minNodes {
                event(.stopping("\(hosts.count == 1 ? "1 host answers" : "\(hosts.count) hosts answer"), fewer than --min-nodes \(plan.minNodes)"))
                return LaunchOutcome(exitCode: code, restarts: restart, hosts: hosts)
            }
            restart += 1
        }
    }

    /// The `mpirun` command line of attempt `restart` on `hosts`.
    public static func mpirunCommand(_ plan: LaunchPlan, hosts: [LaunchHost], restart: Int) -> [String] {
        [plan.mpirun] + plan.mpirunArguments
            + ["--host", hosts.map { "\($0.name):\($0.slots)" }.joined(separator: ","),
               "-np", "\(hosts.reduce(0) { $0 + $1.slots })", plan.program, "train"]
            + trainArguments(plan.trainArguments, restart: restart)
    }

    /// `train`'s arguments for attempt `restart`: with `--resume` (so the first attempt starts
    /// fresh or resumes, and every relaunch resumes from the newest checkpoint) and
    /// `--restarts N`. A `--resume-from FILE` is kept for the first attempt only.
    public static func trainArguments(_ args: [String], restart: Int) -> [String] {
        var out: [String] = [], i = 0, resumes = false
        while i < args.count {
            let a = args[i]
            if a == "--restarts" { i += 2; continue }
            if a.hasPrefix("--restarts=") { i += 1; continue }
            if a == "--resume" { resumes = true }
            if a == "--resume-from" || a.hasPrefix("--resume-from=") {
                resumes = true
                if restart > 0 { out.append("--resume"); i += a.contains("=") ? 1 : 2; continue }
            }
            out.append(a); i += 1
        }
        if !resumes { out.append("--resume") }
        return out + ["--restarts", "\(restart)"]
    }

    /// `train`'s `--run-dir` (its default when absent).
    public static func runDirectory(_ args: [String]) -> String {
        var dir = RunOptions().runDirectory
        for (i, a) in args.enumerated() {
            if a == "--run-dir", i + 1 < args.count { dir = args[i + 1] }
            if a.hasPrefix("--run-dir=") { dir = String(a.dropFirst("--run-dir=".count)) }
        }
        return dir
    }

    /// The command `mpirun` starts its daemons with, as words: `--launch-agent` or
    /// `--mca plm_rsh_agent` among `mpirunArguments`, else `OMPI_MCA_plm_rsh_agent`, else ssh.
    /// Open MPI's `ssh : rsh` form (alternatives) is read as its first choice.
    public static func launchAgent(mpirunArguments args: [String], environment: [String: String]) -> [String] {
        var value = environment["OMPI_MCA_plm_rsh_agent"] ?? environment["OMPI_MCA_orte_rsh_agent"]
        for (i, a) in args.enumerated() {
            if ["--mca", "-mca", "--gmca", "-gmca"].contains(a), i + 2 < args.count,
               ["plm_rsh_agent", "orte_rsh_agent"].contains(args[i + 1]) { value = args[i + 2] }
            if ["--launch-agent", "-launch-agent"].contains(a), i + 1 < args.count { value = args[i + 1] }
        }
        let first = (value ?? "ssh").components(separatedBy: " : ")[0]
        let words = first.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        return words.isEmpty ? ["ssh"] : words
    }

    /// `environment` with the keepalive settings added where neither the environment nor a
    /// parameter file (`OMPI_MCA_mca_param_files`) says otherwise. A `--mca` on the command line
    /// still wins over both.
    public static func withKeepalive(_ environment: [String: String]) -> [String: String] {
        guard environment["OMPI_MCA_mca_param_files"] == nil else { return environment }
        var env = environment
        for (name, value) in keepalive where env["OMPI_MCA_" + name] == nil { env["OMPI_MCA_" + name] = value }
        return env
    }

    /// Whether each host answers `AGENT HOST true` within `timeout` seconds (asked all at once).
    public static func probe(_ hosts: [String], agent: [String], timeout: Double) -> [Bool] {
        var command = agent
        if (agent.first.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "") == "ssh" {
            // No password prompt, and no waiting past the deadline for a TCP connect.
            command += ["-o", "BatchMode=yes", "-o", "ConnectTimeout=\(max(1, Int(timeout.rounded(.up))))"]
        }
        let pids = hosts.map { try? spawn(command + [$0, "true"], environment: nil, quiet: true) }
        let deadline = Date().addingTimeInterval(timeout)
        var answers = [Bool?](repeating: nil, count: hosts.count)
        for (i, pid) in pids.enumerated() where pid == nil { answers[i] = false }
        while answers.contains(where: { $0 == nil }) && Date() < deadline {
            for (i, pid) in pids.enumerated() where answers[i] == nil {
                if let status = reap(pid!, block: false) { answers[i] = status == 0 }
            }
            usleep(20_000)
        }
        for (i, pid) in pids.enumerated() where answers[i] == nil {
            kill(pid!, SIGKILL)
            _ = reap(pid!, block: true)
            answers[i] = false
        }
        return answers.map { $0 ?? false }
    }

    /// Hosts from an Open MPI hostfile: `NAME [slots=K] …` per line, `#` comments.
    public static func hosts(hostfile text: String, path: String) throws -> [LaunchHost] {
        var hosts: [LaunchHost] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard let name = words.first else { continue }
            var slots = 1
            for w in words.dropFirst() where w.hasPrefix("slots=") {
                guard let k = Int(w.dropFirst("slots=".count)), (1...4096).contains(k) else {
                    throw LaunchError("\(path):\(n + 1): slots must be a number in 1...4096, not '\(w)'")
                }
                slots = k
            }
            hosts.append(LaunchHost(name: String(name), slots: slots))
        }
        return try checked(hosts, source: path)
    }

    /// Hosts from `--host H1,H2:K,…` (K ranks on H2, 1 where not given).
    public static func hosts(list: String) throws -> [LaunchHost] {
        let hosts = try list.split(separator: ",").map { item -> LaunchHost in
            let parts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, !parts[0].isEmpty else { throw LaunchError("--host: '\(item)' is not NAME or NAME:SLOTS") }
            guard parts.count == 1 || Int(parts[1]).map({ (1...4096).contains($0) }) == true else {
                throw LaunchError("--host: slots in '\(item)' must be a number in 1...4096")
            }
            return LaunchHost(name: String(parts[0]), slots: parts.count == 2 ? Int(parts[1])! : 1)
        }
        return try checked(hosts, source: "--host")
    }

    static func checked(_ hosts: [LaunchHost], source: String) throws -> [LaunchHost] {
        guard !hosts.isEmpty else { throw LaunchError("\(source): no hosts") }
        var seen = Set<String>()
        for h in hosts where !seen.insert(h.name).inserted { throw LaunchError("\(source): host \(h.name) is listed twice") }
        return hosts
    }

    /// The path of `name` in `PATH` (or `name` itself when it has a slash).
    public static func executable(_ name: String, path: String?) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        for dir in (path ?? "/usr/bin:/bin").split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        return nil
    }

    /// Runs `mpirun` in its own process group (so a Ctrl-C reaches it once, through launch) with
    /// standard input from /dev/null, and returns its exit code (128 + the signal that killed it).
    static func runMPIRun(_ command: [String], environment: [String: String]) throws -> Int32 {
        let pid = try spawn(command, environment: environment, quiet: false)
        LaunchSignals.child = pid
        if LaunchSignals.received != 0 { kill(pid, LaunchSignals.received) }   // it came before the pid was known
        defer { LaunchSignals.child = 0 }
        return reap(pid, block: true)!
    }

    static func spawn(_ argv: [String], environment: [String: String]?, quiet: Bool) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if quiet {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let cArgs = argv.map { strdup($0) } + [nil]
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let cEnv = env.map { strdup($0) } + [nil]
        defer { (cArgs + cEnv).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, cEnv)
        guard rc == 0 else { throw LaunchError("cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        return pid
    }

    /// The exit code of `pid` once it ended (128 + signal when killed); nil while it runs
    /// (`block: false`).
    static func reap(_ pid: pid_t, block: Bool) -> Int32? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, block ? 0 : WNOHANG)
            if r == pid { break }
            if r == 0 { return nil }
            if r < 0 && errno == EINTR { continue }
            return 255
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: "SIGINT"
        case SIGTERM: "SIGTERM"
        case SIGHUP: "SIGHUP"
        case SIGUSR1: "SIGUSR1"
        case SIGUSR2: "SIGUSR2"
        default: "signal \(signal)"
        }
    }
}

/// A file's identity and modification time, to tell whether an attempt wrote it (compared with
/// itself before the attempt, so clocks of other nodes do not matter).
struct FileStamp: Equatable {
    var exists = false, inode: UInt64 = 0, seconds = 0, nanoseconds = 0
    init(path: String) {
        var s = stat()
        guard stat(path, &s) == 0 else { return }
        exists = true; inode = UInt64(s.st_ino); seconds = Int(s.st_mtim.tv_sec); nanoseconds = Int(s.st_mtim.tv_nsec)
    }
}

/// Signals to launch go on to `mpirun` (in its own process group) and end the relaunching.
enum LaunchSignals {
    nonisolated(unsafe) static var child: pid_t = 0
    nonisolated(unsafe) static var received: Int32 = 0
    static let forwarded: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2]

    static func install() {
        received = 0
        let handler: @convention(c) (Int32) -> Void = { sig in
            LaunchSignals.received = sig
            if LaunchSignals.child > 0 { kill(LaunchSignals.child, sig) }
        }
        for s in forwarded { signal(s, handler) }
    }

    static func uninstall() { for s in forwarded { signal(s, SIG_DFL) } }
}
