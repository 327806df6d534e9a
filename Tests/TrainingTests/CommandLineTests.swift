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
        try oneLine(["train", "--epochs", "0"], contains: "--epochs must be in 1...1000000, got 0")
        // A negative number reaches the range check (it is not taken for a flag).
        try oneLine(["train", "--epochs", "-1"], contains: "--epochs must be in 1...1000000, got -1")
        try oneLine(["train", "--lr", "-1"], contains: "--lr must be in 1e-12...1e+30, got -1.0")
        try oneLine(["train", "--min-delta", "inf"], contains: "--min-delta must be in 0.0...1000000.0, got inf")
        try oneLine(["train", "--bn-sync", "sometimes"], contains: "The value 'sometimes' is invalid for '--bn-sync <bn-sync>'. Please provide one of 'global' and 'local'.")
        try oneLine(["train", "--resume", "--resume-from", "x"], contains: "do not go together")
        try oneLine(["train", "--patience", "2", "--validation-split", "0"], contains: "needs a validation set")
        try oneLine(["train", "--lr-schedule", "cosine:2"], contains: "minimum factor 2 must be in [0, 1]")
        try oneLine(["train", "--augment", "heavy"], contains: "The value 'heavy' is invalid for '--augment <augment>'. Please provide one of 'none', 'seed' or 'standard'.")
        try oneLine(["train", "--label-smoothing", "1.5"], contains: "--label-smoothing must be in 0.0..<1.0, got 1.5")
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

    /// The whole help of `distcnn` and of every subcommand is pinned by a golden file in
    /// Fixtures/help/ (one per command, `distcnn.txt` for the top level): any change to a flag,
    /// its text or a command shows up here. After an intended change, regenerate them with
    /// `DISTCNN_UPDATE_HELP=1 swift test -c release --skip-build --filter CommandLineTests/testHelpIsPinned`
    /// and review the diff.
    func testHelpIsPinned() throws {
        let folder = Repo.fixtures + "/help"
        let update = ProcessInfo.processInfo.environment["DISTCNN_UPDATE_HELP"] == "1"
        // Help wraps at COLUMNS (or the terminal's width); the files are at 80.
        func help(_ args: [String]) throws -> String {
            let r = try runProcess(Repo.binary, args + ["--help"], environment: ["COLUMNS": "80"])
            XCTAssertEqual(r.status, 0, "distcnn \(args) --help: \(r.stderr)")
            return r.stdout
        }
        let top = try help([])
        var texts = ["distcnn": top]
        for command in Self.subcommands(inHelp: top) { texts[command] = try help([command]) }
        XCTAssertGreaterThanOrEqual(texts.count, 9, "distcnn --help lists fewer subcommands than expected: \(top)")
        let files = Set(((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".txt") })
        let wanted = Set(texts.keys.map { $0 + ".txt" })
        if update {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for stale in files.subtracting(wanted) { try FileManager.default.removeItem(atPath: folder + "/" + stale) }
            for (name, text) in texts { try text.write(toFile: folder + "/\(name).txt", atomically: true, encoding: .utf8) }
            return
        }
        let regenerate = "if the change is intended, regenerate with DISTCNN_UPDATE_HELP=1 swift test -c release --skip-build "
            + "--filter CommandLineTests/testHelpIsPinned and review the diff"
        if files != wanted {
            XCTFail("golden help files missing: \(wanted.subtracting(files).sorted()), without a command: "
                    + "\(files.subtracting(wanted).sorted()) (in \(folder)); \(regenerate)")
        }
        for (name, text) in texts.sorted(by: { $0.key < $1.key }) {
            guard let golden = try? String(contentsOfFile: folder + "/\(name).txt", encoding: .utf8) else { continue }
            if let d = Self.firstDifference(golden, text) {
                XCTFail("\(name) --help differs from \(name).txt at line \(d.line): - \(d.expected) + \(d.actual); \(regenerate)")
            }
        }
        // The contract's training flags, each as a whole flag (not `--lr` inside `--lr-schedule`).
        for flag in ["--model", "--data", "--epochs", "--batch-size", "--lr", "--augment", "--validation-split", "--patience",
                     "--min-delta", "--run-dir", "--checkpoint-every", "--resume", "--resume-from", "--seed", "--threads",
                     "--bn-sync", "--max-steps", "--step-timeout"] {
            XCTAssertNotNil(texts["train"]?.range(of: "(?<![-\\w])\(flag)(?![-\\w])", options: .regularExpression),
                            "train --help lacks \(flag)")
        }
    }

    /// The names in the SUBCOMMANDS section of a help text (the first word of each entry line).
    static func subcommands(inHelp text: String) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.hasPrefix("SUBCOMMANDS:") }) else { return [] }
        return lines[(start + 1)...].prefix { !$0.isEmpty }
            .filter { $0.hasPrefix("  ") && !$0.hasPrefix("   ") }
            .compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// The first line (1-based) where two texts differ, with both sides; nil when equal.
    static func firstDifference(_ expected: String, _ actual: String) -> (line: Int, expected: String, actual: String)? {
        guard expected != actual else { return nil }
        let e = expected.split(separator: "\n", omittingEmptySubsequences: false)
        let a = actual.split(separator: "\n", omittingEmptySubsequences: false)
        for i in 0..<max(e.count, a.count) {
            let x = i < e.count ? "\"\(e[i])\"" : "(end of file)", y = i < a.count ? "\"\(a[i])\"" : "(end of output)"
            if x != y { return (i + 1, x, y) }
        }
        return (max(e.count, a.count), "(same lines)", "(same lines)")   // unreachable: equal lines mean equal texts
    }
}
