import Collective
import Foundation
import XCTest

/// MPI is used only under a launcher; error messages say what happened.
final class MakeCommunicatorTests: XCTestCase {
    func testLauncherIsRecognisedByItsEnvironment() {
        XCTAssertTrue(MPICommunicator.isLaunchedByMPIRun(environment: ["OMPI_COMM_WORLD_SIZE": "3"]))
        XCTAssertTrue(MPICommunicator.isLaunchedByMPIRun(environment: ["PMIX_RANK": "0"]))
        XCTAssertFalse(MPICommunicator.isLaunchedByMPIRun(environment: ["PATH": "/usr/bin"]))
    }

    func testWithoutALauncherTheCommunicatorIsASingleProcess() throws {
        try XCTSkipIf(MPICommunicator.isLaunchedByMPIRun(), "running under mpirun")
        let comm = try makeCommunicator()
        XCTAssertTrue(comm is SingleProcessCommunicator)
        XCTAssertEqual(comm.size, 1)
    }

    func testErrorDescriptionsAreOneLineNamingWhatFailed() {
        let timeout = CollectiveError.timeout(phase: "gradient all-reduce", seconds: 30)
        XCTAssertTrue(timeout.description.contains("during gradient all-reduce"), timeout.description)
        XCTAssertTrue(timeout.description.contains("30 s"), timeout.description)
        let mpi = CollectiveError.mpi(call: "MPI_Iallreduce", code: 2, message: "MPI_ERR_COUNT: invalid count argument")
        XCTAssertEqual(mpi.description,
                       "MPI_Iallreduce failed with MPI error 2: MPI_ERR_COUNT: invalid count argument")
        for error in [timeout, mpi, .unusable(phase: "x", reason: "y")] {
            XCTAssertFalse(error.description.contains("\n"))
        }
    }
}
