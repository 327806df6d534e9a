import ArgumentParser
import Foundation
import Training

struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run distcnn train under mpirun; after a node loss, relaunch it with --resume on the hosts that answer.",
        discussion: """
            Runs mpirun (found on PATH) with the hosts, K ranks each, and `distcnn train ARGS… \
            --resume`, so the first start begins fresh and every relaunch resumes from the newest \
            checkpoint with the same schedule. When mpirun fails and the run was neither \
            preempted (RUN_DIR/preempted.json) nor finished (RUN_DIR/summary.json), every host is \
            asked `AGENT HOST true` through mpirun's launch agent (--mca plm_rsh_agent, \
            OMPI_MCA_plm_rsh_agent, else ssh); those that do not answer within --probe-timeout \
            are dropped, and the job is relaunched on the rest while --min-nodes remain and \
            restarts are left. A signal to launch goes on to mpirun and ends the relaunching. \
            OMPI_MCA_* settings pass through; unless OMPI_MCA_mca_param_files is set, mpirun gets \
            the keepalive settings of deploy/openmpi-mca.conf where the environment has none, so \
            a silent node ends the attempt within about 5 s. The exit code is the last mpirun's.

            Example:
              distcnn launch --hostfile hosts --min-nodes 2 -- \\
                  train --model ref --data data/mnist --run-dir runs/x \\
                  --checkpoint-every 100 --step-timeout 60
            """)

    @Option(help: "Open MPI hostfile: NAME [slots=K] per line.") var hostfile: String?
    @Option(help: "Hosts, comma-separated: NAME or NAME:K (K ranks on it, default 1).") var host: String?
    @Option(parsing: .unconditional, help: "Fewest hosts to relaunch on.") var minNodes = 1
    @Option(parsing: .unconditional, help: "Relaunches allowed after the first start.") var maxRestarts = 3
    @Option(parsing: .unconditional, help: "Ranks on every host (overrides the hostfile's slots and NAME:K).") var npPerNode: Int?
    @Option(parsing: .unconditionalSingleValue, help: "One more argument for mpirun, before the program (repeat for each word, e.g. --mpirun-arg --mca).")
    var mpirunArg: [String] = []
    @Option(parsing: .unconditional, help: "Seconds a host has to answer the launch agent before it is dropped.") var probeTimeout = 5.0
    @Argument(parsing: .postTerminator, help: "-- train ARGS…: the train command the ranks run.") var command: [String] = []

    func validate() throws {
        if (hostfile == nil) == (host == nil) { throw ValidationError("give the hosts with --hostfile FILE or --host H1,H2,… (one of them)") }
        try check(minNodes, "min-nodes", in: 1...100_000)
        try check(maxRestarts, "max-restarts", in: 0...1_000)
        try check(npPerNode, "np-per-node", in: 1...4096)
        try check(probeTimeout, "probe-timeout", in: 0.001...600)
        guard command.first == "train" else { throw ValidationError("end with -- train ARGS… (the command the ranks run)") }
    }

    func run() throws {
        var code: Int32 = 1
        try reportingErrors {
            let environment = ProcessInfo.processInfo.environment
            var hosts = try hostfile.map { path in
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw LaunchError("cannot read the hostfile \(path)") }
                return try Launcher.hosts(hostfile: text, path: path)
            } ?? Launcher.hosts(list: host ?? "")
            if let k = npPerNode { hosts = hosts.map { LaunchHost(name: $0.name, slots: k) } }
            guard let mpirun = Launcher.executable("mpirun", path: environment["PATH"]) else {
                throw LaunchError("mpirun not found on PATH (install Open MPI, e.g. apt-get install openmpi-bin)")
            }
            var plan = LaunchPlan(hosts: hosts, mpirun: mpirun, program: Self.program(), trainArguments: Array(command.dropFirst()),
                                  environment: environment)
            plan.minNodes = minNodes; plan.maxRestarts = maxRestarts; plan.mpirunArguments = mpirunArg
            plan.probeTimeout = probeTimeout
            let outcome = try Launcher.run(plan) { event in
                print("launch: \(event)")
                fflush(stdout)
            }
            code = outcome.exitCode
        }
        try finish(code)
    }

    /// This binary's absolute path, which the ranks run (the same path on every node).
    static func program() -> String {
        let argv0 = CommandLine.arguments[0]
        if argv0.hasPrefix("/") { return argv0 }
        if argv0.contains("/") { return FileManager.default.currentDirectoryPath + "/" + argv0 }
        return (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? argv0
    }
}
