import Foundation
import XCTest

/// A batch whose buffers would not fit in this node's memory is refused by the library, before
/// any data is read, for every command that runs the model (issue 16).
final class MemoryRefusalTests: XCTestCase {
    /// 28×28 digits through a 1×1 convolution of 21,000 filters: 16.5 M activations per example,
    /// within the per-model limit of 2^24, so a batch of 256 needs about 34 GB to infer and a
    /// batch of 65,536 terabytes.
    static let wide = #"{"name": "wide", "input": [28, 28, 1], "layers": [{"type": "conv2d", "filters": 21000, "kernel": 1, "padding": "same"}, {"type": "maxpool2d", "size": 28}, {"type": "flatten"}, {"type": "dense", "units": 10}]}"#

    func writeWide(_ dir: String) throws -> String {
        let path = dir + "/wide.json"
        try Self.wide.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func assertRefused(_ r: (status: Int32, stdout: String, stderr: String), _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, 1, "\(what): \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(what): \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains("more than this machine's"), "\(what): \(r.stderr)", file: file, line: line)
    }

    func testBenchEvalIsRefused() throws {
        let path = try writeWide(temporaryDirectory(self))
        let r = try runProcess(Repo.binary, ["bench", "--eval", "--model", path, "--batch-size", "65536"], timeout: 120)
        assertRefused(r, "bench --eval")
        XCTAssertTrue(r.stderr.contains("evaluating a batch of 65536"), r.stderr)
    }

    /// Under mpirun each rank holds its share of the batch and the node holds both ranks: the
    /// library's check uses the communicator's size and local size, and rank 0 says it once.
    func testTrainUnderMPIRunCountsTheRanksOnTheNode() throws {
        let dir = temporaryDirectory(self)
        let path = try writeWide(dir)
        let r = try runProcess("/usr/bin/env", ["mpirun", "--oversubscribe", "-np", "2", Repo.binary, "train", "--model", path,
                                                "--batch-size", "65536", "--data", dir + "/none", "--run-dir", dir + "/run"],
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"], timeout: 120)
        XCTAssertNotEqual(r.status, 0)
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
        XCTAssertEqual(lines.count, 1, r.stderr)
        XCTAssertTrue(lines.first?.contains("2 ranks training batches of 32768") == true, r.stderr)
        XCTAssertFalse(r.stderr.contains("none"), "refused before the data folder is read: \(r.stderr)")
    }

    /// `evaluate` and `predict` check their batches once the checkpoint names the model,
    /// before reading data or images.
    func testEvaluateAndPredictAreRefused() throws {
        let dir = temporaryDirectory(self)
        let path = try writeWide(dir)
        let trained = try runProcess(Repo.binary, ["train", "--model", path, "--data", Repo.mnist, "--run-dir", dir + "/run",
                                                   "--batch-size", "2", "--threads", "1", "--max-steps", "1", "--train-limit", "4",
                                                   "--test-limit", "4", "--validation-split", "0", "--quiet"], timeout: 600)
        XCTAssertEqual(trained.status, 0, trained.stderr)
        let checkpoint = dir + "/run/checkpoints/final.safetensors"

        let evaluate = try runProcess(Repo.binary, ["evaluate", "--checkpoint", checkpoint, "--data", dir + "/none",
                                                    "--batch-size", "65536"], timeout: 120)
        assertRefused(evaluate, "evaluate")
        XCTAssertTrue(evaluate.stderr.contains("evaluating a batch of 65536") && evaluate.stderr.contains("--batch-size"), evaluate.stderr)

        // Predict infers 256 images a pass: about 34 GB for this model.
        let needed = 256.0 * (784 + 2 * 28 * 28 * 21000) * 4
        let predict = try runProcess(Repo.binary, ["predict", "--checkpoint", checkpoint, dir + "/no-such.png"], timeout: 120)
        if Double(Self.physicalMemory()) < needed {
            assertRefused(predict, "predict")
            XCTAssertTrue(predict.stderr.contains("evaluating a batch of 256"), predict.stderr)
        } else {
            // A machine that holds it reads the image instead (and finds it missing).
            XCTAssertEqual(predict.status, 1, predict.stderr)
            XCTAssertTrue(predict.stderr.contains("no-such.png"), predict.stderr)
        }
    }

    /// MemTotal from /proc/meminfo, bytes.
    static func physicalMemory() -> Int {
        let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let kib = text.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }?.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        return (kib ?? 0) * 1024
    }
}
