import CMPI
import Foundation

/// The process's MPI library: initialised once, finalized once, one call at a time.
///
/// MPI is started with `MPI_THREAD_SERIALIZED`, and every call made by this module
/// goes through `serialized(_:)`, so communicators may be used from any thread
/// (one collective at a time). Errors come back as codes (`MPI_ERRORS_RETURN`).
enum MPIRuntime {
    private enum Stage { case notStarted, running, finalized }

    private static let stage = Locked(Stage.notStarted)
    private static let callLock = NSRecursiveLock()  // recursive: error text is fetched inside calls

    /// Runs `body` (which makes MPI calls) while no other thread is inside MPI.
    static func serialized<T>(_ body: () throws -> T) rethrows -> T {
        callLock.lock()
        defer { callLock.unlock() }
        return try body()
    }

    /// Initialises MPI unless this process already did; throws once it was finalized.
    static func startIfNeeded() throws {
        try stage.withLock { stage in
            switch stage {
            case .running:
                return
            case .finalized:
                throw CollectiveError.unusable(phase: "startup", reason: "MPI was already finalized in this process")
            case .notStarted:
                try serialized {
                    var provided: Int32 = 0
                    try checkMPI(MPI_Init_thread(nil, nil, cmpi_thread_serialized(), &provided), "MPI_Init_thread")
                    // Errors not tied to a communicator are raised on MPI_COMM_WORLD;
                    // duplicates made later inherit the handler.
                    try checkMPI(MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return()),
                                 "MPI_Comm_set_errhandler")
                }
                stage = .running
            }
        }
    }

    /// Calls MPI_Finalize once, if MPI is running.
    static func finalizeIfRunning() {
        stage.withLock { stage in
            guard stage == .running else { return }
            _ = serialized { MPI_Finalize() }
            stage = .finalized
        }
    }

    /// Ends every process of the job; does not take the call lock, so it also works
    /// while another thread waits in a collective (a watchdog, a signal handler thread).
    static func abortJob(code: Int32) -> Never {
        _ = MPI_Abort(cmpi_comm_world(), code)
        exit(code)  // MPI_Abort does not return; this keeps the promise if it ever does.
    }
}

/// Calls `body(offset, count)` for consecutive pieces of `count` elements, each at most
/// `limit` (MPI counts are Int32).
func forEachPiece(of count: Int, atMost limit: Int, _ body: (Int, Int) throws -> Void) rethrows {
    var offset = 0
    while offset < count {
        let piece = min(count - offset, limit)
        try body(offset, piece)
        offset += piece
    }
}

/// Throws `CollectiveError.mpi` naming `call` unless `code` is `MPI_SUCCESS`.
func checkMPI(_ code: Int32, _ call: String) throws {
    guard code != cmpi_success() else { return }
    throw CollectiveError.mpi(call: call, code: code, message: mpiErrorString(code))
}

/// MPI's text for an error code, from `MPI_Error_string`.
func mpiErrorString(_ code: Int32) -> String {
    var text = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
    var length: Int32 = 0
    guard MPIRuntime.serialized({ MPI_Error_string(code, &text, &length) }) == cmpi_success() else {
        return "unknown MPI error"
    }
    return String(cString: text)
}
