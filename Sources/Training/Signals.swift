import Collective
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM, SIGINT and SIGUSR1 mean "checkpoint and stop": Slurm's preemption and time-limit
/// warnings, a person's Ctrl-C, and the signal Lightning-style Slurm set-ups send before a
/// requeue (and that `mpirun` forwards to every rank without killing the job, unlike SIGTERM).
/// The handler only raises a flag (and, on rank 0, says so at once); the trainer sends the flag
/// through the next step's all-reduce, so every rank stops at the same step.
enum StopSignal {
    nonisolated(unsafe) static var received: Int32 = 0
    /// What the handler writes to standard error on rank 0 for each of `handled`, prepared
    /// before any signal arrives (a handler may call `write`, not allocate).
    nonisolated(unsafe) static var notices: [[UInt8]] = []

    static let handled: [Int32] = [SIGTERM, SIGINT, SIGUSR1]

    static func install(announce: Bool) {
        received = 0
        // mpirun ends its ranks about a second after it gets SIGTERM or SIGINT itself (Open MPI's
        // behaviour, which no setting here changes), so a long step may not reach its checkpoint;
        // SIGUSR1 to mpirun is forwarded to the ranks and nothing else.
        let underMPIRun = MPICommunicator.isLaunchedByMPIRun()
        notices = handled.map { sig in
            guard announce else { return [] }
            var text = "warning: \(name(sig)) received: the run stops with a checkpoint when this step ends"
            if underMPIRun && sig != SIGUSR1 {
                text += " (if this signal went to mpirun, it kills the ranks about 1 s from now and the step's checkpoint is lost: --resume then continues from the newest one written; send mpirun SIGUSR1 to stop with a checkpoint)"
            }
            return Array((text + "\n").utf8)
        }
        // The first signal asks for a clean stop; a second one gets the default action.
        let handler: @convention(c) (Int32) -> Void = { sig in
            StopSignal.received = sig
            for s in StopSignal.handled { signal(s, SIG_DFL) }
            for (i, s) in StopSignal.handled.enumerated() where s == sig {
                StopSignal.notices[i].withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
            }
        }
        for s in handled { signal(s, handler) }
    }

    static var requested: Bool { received != 0 }

    static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGUSR1: return "SIGUSR1"
        default: return "SIGTERM"
        }
    }

    /// The process's exit code after a stop by `signal`: 128 + its number, as a shell reports a
    /// process killed by it (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1).
    static func exitCode(_ signal: Int32) -> Int32 { 128 + signal }
}
