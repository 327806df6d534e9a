import Foundation
import XCTest

/// The binary shipped to compute nodes links the Swift runtime statically (`swift build -c
/// release --static-swift-stdlib`, which scripts/test writes to .build-static): it needs only
/// the system libraries (Open MPI, OpenBLAS, zlib, libpng, libcurl), not the toolchain's folder.
/// scripts/test builds it for any x86-64 CPU (`DISTCNN_TARGET_CPU=x86-64`: SSE2 only).
final class StaticBinaryTests: XCTestCase {
    static var binary: String { Repo.root + "/.build-static/release/distcnn" }

    /// The Swift toolchain's root (`/opt/swift` for `/opt/swift/usr/bin/swift`), from PATH.
    func toolchainRoot() throws -> String {
        let which = try runProcess("/usr/bin/env", ["which", "swift"])
        XCTAssertEqual(which.status, 0, "swift is not on PATH")
        let swift = URL(fileURLWithPath: which.stdout.trimmingCharacters(in: .whitespacesAndNewlines)).resolvingSymlinksInPath()
        return swift.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Runs `binary ARGS` in a private mount namespace where the toolchain's folder is an empty tmpfs.
    func runHidingToolchain(_ binary: String, _ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let root = try toolchainRoot()
        let script = "mount -t tmpfs none \"$0\" && test ! -e \"$0/usr\" && exec \"$@\""
        return try runProcess("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/sh", "-c", script, root, binary] + args,
                              timeout: 300)
    }

    func testTrainsWithTheToolchainHidden() throws {
        guard getuid() == 0 else { throw XCTSkip("a private mount namespace needs root") }
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.binary),
                      "\(Self.binary) is missing: scripts/test builds it (swift build -c release --static-swift-stdlib --product distcnn --scratch-path .build-static)")
        let libraries = try runProcess("/usr/bin/ldd", [Self.binary])
        XCTAssertEqual(libraries.status, 0, libraries.stderr)
        XCTAssertFalse(libraries.stdout.contains("libswift"), libraries.stdout)
        XCTAssertFalse(libraries.stdout.contains("libFoundation"), libraries.stdout)
        XCTAssertFalse(libraries.stdout.contains("not found"), libraries.stdout)

        // The hiding is real: the test build, linked against the toolchain's runtime, cannot start there.
        let dynamic = try runHidingToolchain(Repo.binary, ["--help"])
        XCTAssertNotEqual(dynamic.status, 0, "the dynamically linked binary started with the toolchain hidden")

        let dir = temporaryDirectory(self) + "/run"
        let r = try runHidingToolchain(Self.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "1",
                                                     "--train-limit", "1000", "--validation-split", "200", "--test-limit", "500",
                                                     "--threads", "1", "--run-dir", dir, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as? [String: Any])
        XCTAssertEqual(summary["global_steps"] as? Int, 32, "1000 images in batches of 32")
    }

    /// The engine's own arithmetic does not depend on the SIMD width it was compiled for: the
    /// x86-64 build (SSE2) trains the bits of the build for this machine's CPU (AVX-512 here).
    /// (OpenBLAS picks its kernels at run time, by CPU, so both use the same ones.)
    func testPortableBuildTrainsTheNativeBits() throws {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.binary), "\(Self.binary) is missing: scripts/test builds it")
        let base = temporaryDirectory(self)
        var hashes: [String] = []
        for (name, binary) in [("native", Repo.binary), ("portable", Self.binary)] {
            let dir = base + "/" + name
            let r = try runProcess(binary, ["train", "--model", "ref", "--data", Repo.mnist, "--batch-size", "100", "--max-steps", "10",
                                            "--train-limit", "1000", "--validation-split", "200", "--test-limit", "200",
                                            "--augment", "standard", "--threads", "2", "--run-dir", dir, "--quiet"], timeout: 300)
            XCTAssertEqual(r.status, 0, r.stderr)
            let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as? [String: Any])
            hashes.append(try XCTUnwrap(summary["weights_sha256"] as? String))
        }
        XCTAssertEqual(hashes[0], hashes[1], "the x86-64 build trains other weights than the native one")
    }
}
