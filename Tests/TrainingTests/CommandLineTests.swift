import Foundation
import XCTest

/// Bad input gets one clear line and a non-zero exit; nothing is written.
final class CommandLineTests: XCTestCase {
    func oneLine(_ args: [String], contains needle: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runProcess(Repo.binary, args)
        XCTAssertNotEqual(r.status, 0, "expected failure for \(args)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertTrue(r.stderr.contains(needle), "stderr for \(args): \(r.stderr)", file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Fatal error") || r.stderr.contains("Stack dump"), r.stderr, file: file, line: line)
        XCTAssertEqual(lines.count, 1, "one line: \(r.stderr)", file: file, line: line)
    }

    func testBadFlagsAreRefused() throws {
        try oneLine(["train", "--epochs", "0"], contains: "--epochs must be at least 1")
        try oneLine(["train", "--bn-sync", "sometimes"], contains: "The value 'sometimes' is invalid for '--bn-sync <bn-sync>'. Please provide one of 'global' and 'local'.")
        try oneLine(["train", "--resume", "--resume-from", "x"], contains: "do not go together")
        try oneLine(["train", "--patience", "2", "--validation-split", "0"], contains: "needs a validation set")
        try oneLine(["train", "--lr-schedule", "cosine:2"], contains: "minimum factor 2 must be in [0, 1]")
        try oneLine(["train", "--augment", "heavy"], contains: "The value 'heavy' is invalid for '--augment <augment>'. Please provide one of 'none', 'seed' or 'standard'.")
        try oneLine(["train", "--label-smoothing", "1.5"], contains: "--label-smoothing must be in [0, 1)")
        try oneLine(["train", "--progress", "fancy"], contains: "The value 'fancy' is invalid for '--progress <progress>'. Please provide one of 'auto', 'bar' or 'lines'.")
        try oneLine(["train", "--elastic", "34"], contains: "--elastic must be ALPHA:SIGMA")
    }

    func testUnknownModelAndMissingData() throws {
        let dir = temporaryDirectory(self)
        try oneLine(["train", "--model", "nosuch", "--run-dir", dir + "/r"], contains: "model 'nosuch': not a preset")
        try oneLine(["train", "--data", dir + "/empty", "--run-dir", dir + "/r"], contains: "--data")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r/summary.json"))
    }

    func testCorruptDataFileIsNamed() throws {
        let dir = temporaryDirectory(self)
        for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            try FileManager.default.copyItem(atPath: Repo.mnist + "/" + name, toPath: dir + "/" + name)
        }
        // Cut the test labels short.
        let path = dir + "/t10k-labels-idx1-ubyte.gz"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: path))
        try oneLine(["train", "--data", dir, "--max-steps", "1", "--run-dir", dir + "/r"], contains: "t10k-labels-idx1-ubyte.gz")
    }

    func testModelFileErrors() throws {
        let dir = temporaryDirectory(self)
        let bad = dir + "/bad.json"
        try #"{"name": "bad", "input": [28, 28, 1], "layers": [{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "dense", "units": 10}]}"#
            .write(toFile: bad, atomically: true, encoding: .utf8)
        try oneLine(["summary", "--model", bad], contains: "layer 1 (dense): input (26, 26, 4) is not flat")
    }

    func testSummaryCountsPresets() throws {
        let r = try runProcess(Repo.binary, ["summary", "--model", "ref"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("Trainable params: 871,530"), r.stdout)
        let s = try runProcess(Repo.binary, ["summary", "--model", "seed"])
        XCTAssertTrue(s.stdout.contains("Trainable params: 9,100"), s.stdout)
        XCTAssertTrue(s.stdout.contains("Total params: 9,130"), s.stdout)
    }

    /// The help of every command is pinned: a change to flags shows up here.
    func testHelpListsContractFlags() throws {
        let r = try runProcess(Repo.binary, ["train", "--help"])
        XCTAssertEqual(r.status, 0)
        for flag in ["--model", "--data", "--epochs", "--batch-size", "--lr", "--augment", "--validation-split", "--patience",
                     "--min-delta", "--run-dir", "--checkpoint-every", "--resume", "--resume-from", "--seed", "--threads",
                     "--bn-sync", "--max-steps", "--step-timeout"] {
            XCTAssertTrue(r.stdout.contains(flag), "train --help lacks \(flag)")
        }
        let expected: [String: [String]] = [
            "evaluate": ["--checkpoint", "--data", "--json"],
            "summary": ["--model", "--input", "--batch-size", "--json"],
            "bench": ["--model", "--batch-size", "--steps", "--threads", "--profile", "--eval", "--json"],
            "inspect": ["<file>", "--json"],
            "predict": ["--checkpoint", "<images>", "--top", "--json"],
            "report": ["<run-dir>"],
            "download": ["--dataset", "--to", "--mirror"],
        ]
        for (command, flags) in expected {
            let h = try runProcess(Repo.binary, [command, "--help"])
            XCTAssertEqual(h.status, 0, command)
            XCTAssertTrue(h.stdout.contains("USAGE: distcnn \(command)"), h.stdout)
            XCTAssertTrue(h.stdout.contains("OVERVIEW: "), "\(command) --help has no overview")
            for flag in flags { XCTAssertTrue(h.stdout.contains(flag), "\(command) --help lacks \(flag): \(h.stdout)") }
        }
        let top = try runProcess(Repo.binary, ["--help"])
        for command in expected.keys { XCTAssertTrue(top.stdout.contains(command), "distcnn --help lacks \(command)") }
    }
}
