import Collective
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM, SIGINT and SIGUSR1 mean "checkpoint and stop": Slurm's preemption and time-limit
/// warnings, a person's Ctrl-C, and the signal Lightning-style Slurm set-ups send before a
/// requeue (and that `mpirun` and `srun` forward to every rank without killing the job, unlike
/// SIGTERM). The handler only raises a flag (and, on rank 0, says so at once); the trainer sends
/// the flag through the next step's all-reduce, so every rank stops at the same step.
enum StopSignal {
    nonisolated(unsafe) static var received: Int32 = 0

    static let handled: [Int32] = [SIGTERM, SIGINT, SIGUSR1]

    /// What the handler writes to standard error for each of `handled` (nothing until
    /// `announce`): fixed buffers, since a handler may call `write` but not allocate, and may
    /// run while `announce` fills them (a length is set only after its text).
    static let noticeCapacity = 512
    nonisolated(unsafe) static let noticeBytes = UnsafeMutablePointer<UInt8>.allocate(capacity: 3 * noticeCapacity)
    nonisolated(unsafe) static let noticeLengths: UnsafeMutablePointer<Int> = {
        let p = UnsafeMutablePointer<Int>.allocate(capacity: 3)
        p.initialize(repeating: 0, count: 3)
        return p
    }()

    /// Catches the signals from now on: call it first thing, so that a signal during start-up
    /// (a time-limit warning, `scancel`) is not the default action that kills the rank.
    static func install() {
        received = 0
        _ = (noticeBytes, noticeLengths)   // initialised here, not lazily inside the handler
        let handler: @convention(c) (Int32) -> Void = { sig in
            StopSignal.received = sig
            // A second SIGTERM or SIGINT gets the default action (a person pressing Ctrl-C
            // twice); SIGUSR1, which launchers may forward more than once, stays caught.
            if sig != SIGUSR1 { signal(SIGTERM, SIG_DFL); signal(SIGINT, SIG_DFL) }
            for i in 0..<StopSignal.handled.count where StopSignal.handled[i] == sig {
                _ = write(2, StopSignal.noticeBytes + i * StopSignal.noticeCapacity, StopSignal.noticeLengths[i])
            }
        }
        for s in handled { signal(s, handler) }
    }

    /// Rank 0 says, the moment a signal arrives, what will happen.
    static func announce() {
        // A launcher ends its ranks soon after it gets SIGTERM or SIGINT itself (mpirun about a
        // second later, srun at once), so a long step may not reach its checkpoint; SIGUSR1 to
        // the launcher is forwarded to the ranks and nothing else.
        let underLauncher = launchedByMPIRun()
        // On a terminal a live progress line may be on screen: the notice starts below it.
        let below = isatty(STDOUT_FILENO) == 1 && isatty(STDERR_FILENO) == 1 && !underLauncher ? "\n" : ""
        for (i, sig) in handled.enumerated() {
            var text = below + "warning: \(name(sig)) received: the run stops with a checkpoint when this step ends"
            if underLauncher && sig != SIGUSR1 {
                text += " (if this signal went to mpirun or srun, it kills the ranks soon and the step's checkpoint is lost: --resume then continues from the newest one written; send the launcher SIGUSR1 to stop with a checkpoint)"
            }
            let bytes = Array((text + "\n").utf8.prefix(noticeCapacity))
            noticeLengths[i] = 0
            (noticeBytes + i * noticeCapacity).update(from: bytes, count: bytes.count)
            noticeLengths[i] = bytes.count
        }
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
