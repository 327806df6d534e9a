import Foundation
import Training
import XCTest

/// Runs the built binary the way users do and checks what it leaves behind.
final class EndToEndTests: XCTestCase {
    func summary(_ dir: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// Trains `seed` on a subset of real MNIST and asserts the accuracy it must reach, the run
    /// dir's files, and that `evaluate` scores the final checkpoint as training did.
    func testSeedTrainsOnMNISTSubset() throws {
        let dir = temporaryDirectory(self) + "/run"
        let r = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "2",
                                      "--train-limit", "20000", "--validation-split", "5000", "--run-dir", dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try summary(dir)
        for key in ["model", "world_size", "epochs_run", "global_steps", "stopped_early", "best_epoch", "val_loss",
                    "val_accuracy", "test_loss", "test_accuracy", "train_seconds", "images_per_second", "weights_sha256"]
            where key != "best_epoch" {
            XCTAssertNotNil(s[key], "summary.json lacks \(key)")
        }
        let accuracy = try XCTUnwrap(s["test_accuracy"] as? Double)
        XCTAssertGreaterThan(accuracy, 0.87, "seed after 2 epochs on 20k examples")
        XCTAssertEqual(s["global_steps"] as? Int, 2 * 625)
        XCTAssertEqual(s["world_size"] as? Int, 1)
        let csv = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 3, csv)
        let e = try runProcess(Repo.binary, ["evaluate", "--checkpoint", dir + "/checkpoints/final.safetensors",
                                      "--data", Repo.mnist, "--json"])
        XCTAssertEqual(e.status, 0, e.stderr)
        let ev = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(try XCTUnwrap(ev["test_accuracy"] as? Double), accuracy, accuracy: 1e-9)
        let confusion = try XCTUnwrap(ev["confusion"] as? [[Int]])
        XCTAssertEqual(confusion.flatMap { $0 }.reduce(0, +), 10_000)
        let perClass = try XCTUnwrap(ev["per_class_recall"] as? [Double])
        XCTAssertEqual(perClass.count, 10)
        XCTAssertEqual(perClass[3], Double(confusion[3][3]) / Double(confusion[3].reduce(0, +)), accuracy: 1e-12)
        let confused = try XCTUnwrap(ev["most_confused"] as? [[String: Int]])
        let worst = try XCTUnwrap(confused.first)
        let offDiagonalMax = confusion.enumerated().flatMap { t, row in row.enumerated().filter { $0.offset != t }.map { $0.element } }.max()
        XCTAssertEqual(worst["count"], offDiagonalMax)
        XCTAssertEqual(confusion[worst["true"]!][worst["predicted"]!], worst["count"])
    }

    /// The same run twice gives the same weights, bit for bit.
    func testRunsAreDeterministic() throws {
        let base = temporaryDirectory(self)
        var hashes: [String] = []
        for i in 0..<2 {
            let r = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "40",
                                          "--train-limit", "3000", "--validation-split", "1000", "--run-dir", base + "/r\(i)"])
            XCTAssertEqual(r.status, 0, r.stderr)
            hashes.append(try XCTUnwrap(try summary(base + "/r\(i)")["weights_sha256"] as? String))
        }
        XCTAssertEqual(hashes[0], hashes[1])
    }
}
