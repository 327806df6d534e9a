#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGINT (what Slurm preemption and Ctrl-C send) only raise a flag; the trainer
/// sends it through the next step's all-reduce so every rank stops at the same step.
enum StopSignal {
    nonisolated(unsafe) static var received: Int32 = 0

    static func install() {
        // The first signal asks for a clean stop; a second one gets the default action.
        let handler: @convention(c) (Int32) -> Void = { sig in
            StopSignal.received = sig
            signal(SIGTERM, SIG_DFL); signal(SIGINT, SIG_DFL)
        }
        signal(SIGTERM, handler)
        signal(SIGINT, handler)
    }

    static var requested: Bool { received != 0 }
    static var name: String { received == SIGINT ? "SIGINT" : "SIGTERM" }
}
