/// The communicator for this process: MPI when a launcher started it, else a group of one.
///
/// Open MPI can run an un-launched process as a singleton world, but singleton start-up
/// is slow and fails in some sandboxes, and buys nothing for a single process.
public func makeCommunicator() throws -> Communicator {
    MPICommunicator.isLaunchedByMPIRun() ? try MPICommunicator.start() : SingleProcessCommunicator()
}
