import Foundation

/// The communicator for this process: MPI when a launcher started it, else a group of one.
///
/// Open MPI can run an un-launched process as a singleton world, but singleton start-up
/// is slow and fails in some sandboxes, and buys nothing for a single process.
public func makeCommunicator() throws -> Communicator {
    launchedByMPIRun() ? try MPICommunicator.start() : SingleProcessCommunicator()
}

/// True when this process was started by `mpirun`/`mpiexec` (or a PMIx launcher such as
/// `srun --mpi=pmix`), whose pseudo-terminal stands for the job's output and whose signals
/// reach the ranks its own way.
public func launchedByMPIRun(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
    environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
}
