import Foundation
import XCTest

/// What `distcnn train` does when no flag says otherwise: the learning rate decays by a cosine
/// over the whole run (epochs × steps per epoch), and the configuration table says so.
final class DefaultsTests: XCTestCase {
    /// 640 examples in batches of 64: 10 steps per epoch, 20 in the run.
    func args(_ dir: String, _ more: [String] = []) -> [String] {
        ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "2", "--batch-size", "64", "--train-limit", "640",
         "--validation-split", "100", "--test-limit", "100", "--run-dir", dir, "--progress", "lines"] + more
    }

    /// The learning rates metrics.csv records at each epoch's end (the rate of the epoch's last update).
    func recordedRates(_ dir: String) throws -> [Double] {
        let csv = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8)
        let rows = csv.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        let column = try XCTUnwrap(rows.first?.firstIndex(of: "learning_rate"), csv)
        return try rows.dropFirst().map { try XCTUnwrap(Double(String($0[column])), csv) }
    }

    func testDefaultScheduleIsCosineOverTheWholeRun() throws {
        let dir = temporaryDirectory(self) + "/cosine"
        let r = try runProcess(Repo.binary, args(dir))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("\nlr         cosine 0.001 → 0.0 over 20 steps (--lr-schedule cosine)\n"), r.stdout)
        // The update after s earlier ones has rate 0.001 · ½(1 + cos(π s / 20)): s = 9 ends epoch 1, s = 19 epoch 2.
        let rates = try recordedRates(dir)
        XCTAssertEqual(rates.count, 2)
        for (rate, s) in zip(rates, [9.0, 19.0]) {
            XCTAssertEqual(rate, 0.001 * 0.5 * (1 + cos(Double.pi * s / 20)), accuracy: 1e-12)
        }
        // A finished cosine run cannot train on with more epochs (the schedule spans them); the message says so.
        let again = try runProcess(Repo.binary, args(dir, ["--resume"]))
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("its --lr-schedule cosine spans them: train longer in a new run"), again.stdout)
        let more = try runProcess(Repo.binary, args(dir, ["--resume", "--epochs", "3"]))
        XCTAssertEqual(more.status, 1)
        XCTAssertTrue(more.stderr.contains("--epochs is 3 here, 2 in the checkpoint"), more.stderr)
    }

    func testConstantScheduleIsStillThere() throws {
        let dir = temporaryDirectory(self) + "/constant"
        let r = try runProcess(Repo.binary, args(dir, ["--lr-schedule", "constant"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("\nlr         constant 0.001 (--lr-schedule constant)\n"), r.stdout)
        XCTAssertEqual(try recordedRates(dir), [0.001, 0.001])
        let again = try runProcess(Repo.binary, args(dir, ["--lr-schedule", "constant", "--resume"]))
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains("raise --epochs to train on"), again.stdout)
        // A run of the old default resumed without the flag is told which flag differs.
        let plain = try runProcess(Repo.binary, args(dir, ["--resume"]))
        XCTAssertEqual(plain.status, 1)
        XCTAssertTrue(plain.stderr.contains("--lr-schedule is cosine here, constant in the checkpoint"), plain.stderr)
    }
}
