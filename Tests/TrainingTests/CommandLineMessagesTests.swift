import Foundation
import XCTest

/// What the command line says when it is used wrong (issue 20, "Terminal"): an unknown command
/// is named, `-1` is a value, `--quiet` is quiet, help wraps cleanly, `--version` names the
/// commit, and under mpirun an argument error is said once.
final class CommandLineMessagesTests: XCTestCase {
    func testUnknownCommandIsNamed() throws {
        for (args, line) in [
            (["trian", "--model", "seed"], "error: unknown command 'trian'; did you mean 'train'? (see --help)"),
            (["evalute"], "error: unknown command 'evalute'; did you mean 'evaluate'? (see --help)"),
            (["frobnicate", "--epochs", "1"],
             "error: unknown command 'frobnicate' (commands: train, evaluate, summary, bench, inspect, predict, report, download, launch) (see --help)"),
        ] {
            let r = try runProcess(Repo.binary, args, timeout: 60)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr, line + "\n", "\(args)")
        }
        // The built-in help command is still a command.
        let help = try runProcess(Repo.binary, ["help", "train"], timeout: 60)
        XCTAssertEqual(help.status, 0, help.stderr)
        XCTAssertTrue(help.stdout.hasPrefix("OVERVIEW: Train a model"), help.stdout)
    }

    /// A negative number after a flag is its value, refused by the range check, never
    /// "Missing value" (the parser taking `-1` for a flag).
    func testNegativeNumbersAreValues() throws {
        for (args, flag) in [(["train", "--lr", "-1"], "--lr"), (["train", "--epochs", "-1"], "--epochs"),
                             (["train", "--lr", "-1e-3"], "--lr"), (["bench", "--steps", "-5"], "--steps"),
                             (["download", "--dataset", "mnist", "--to", "x", "--timeout", "-inf"], "--timeout")] {
            let r = try runProcess(Repo.binary, args, timeout: 60)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.contains("Missing value"), "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("error: \(flag) must be in "), "\(args): \(r.stderr)")
        }
    }

    /// `--version`: the release and the commit the binary was built from (Plugins/GitCommit).
    func testVersionNamesTheCommit() throws {
        let r = try runProcess(Repo.binary, ["--version"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = r.stdout.trimmingCharacters(in: .newlines)
        XCTAssertNotNil(line.range(of: #"^distcnn \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}(-dirty)?|unknown)\)$"#, options: .regularExpression), line)
        let git = try runProcess("/usr/bin/env", ["git", "-C", Repo.root, "rev-parse", "--short=12", "HEAD"], timeout: 60)
        XCTAssertEqual(git.status, 0, "the tests run in a git checkout: \(git.stderr)")
        let head = git.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(line.contains("(commit \(head)"), "built from \(line), HEAD is \(head): rebuild after committing")
    }

    /// Under mpirun every rank parses the same bad command line; only rank 0 says so, first,
    /// and the job's exit code is the usage error's.
    func testArgumentErrorUnderMPIRunIsSaidOnce() throws {
        let r = try runProcess("/usr/bin/env", ["mpirun", "--oversubscribe", "-np", "2", Repo.binary, "train", "--epochs", "-1"],
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"], timeout: 120)
        let line = "error: --epochs must be in 1...1000000, got -1 (see --help)"
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertEqual(r.stderr.components(separatedBy: line).count - 1, 1, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix(line + "\n"), "rank 0's line comes before mpirun's report: \(r.stderr)")
        XCTAssertEqual(r.stdout, "")
    }

    /// `--quiet` prints errors and the final line only: a warning (here: resuming skips a damaged
    /// newest checkpoint) is printed without it and not with it.
    func testQuietSilencesWarnings() throws {
        let dir = temporaryDirectory(self)
        let base = ["train", "--model", "seed", "--data", Repo.mnist, "--run-dir", dir + "/run", "--batch-size", "8",
                    "--max-steps", "2", "--checkpoint-every", "1", "--train-limit", "16", "--test-limit", "16",
                    "--validation-split", "0", "--threads", "1"]
        let first = try runProcess(Repo.binary, base + ["--quiet"], timeout: 300)
        XCTAssertEqual(first.status, 0, first.stderr)
        /// Truncates the step-2 checkpoint, so a resume skips it with a warning and starts from step 1.
        func damageNewest() throws {
            let newest = dir + "/run/checkpoints/step-00000002.safetensors"
            let handle = try XCTUnwrap(FileHandle(forWritingAtPath: newest), "no \(newest)")
            try handle.truncate(atOffset: 100)
            try handle.close()
        }
        try damageNewest()
        let loud = try runProcess(Repo.binary, base + ["--resume"], timeout: 300)
        XCTAssertEqual(loud.status, 0, loud.stderr)
        XCTAssertTrue(loud.stderr.contains("warning: skipping"), loud.stderr)
        try damageNewest()
        let quiet = try runProcess(Repo.binary, base + ["--resume", "--quiet"], timeout: 300)
        XCTAssertEqual(quiet.status, 0, quiet.stderr)
        XCTAssertEqual(quiet.stderr, "", "--quiet prints no warning")
        XCTAssertTrue(quiet.stdout.contains("test accuracy"), "the final line is still printed: \(quiet.stdout)")
    }

    /// Every option's description wraps into lines that fill the column: a line short of 60% of
    /// it, before the description's last, is a break forced by a long unbreakable token (the
    /// ragged breaks `train --help` had), and a phrase is not split after `±` or `et`.
    func testHelpWrapsCleanly() throws {
        for columns in [80, 100] {
            let indent = 26, minimum = (columns - indent) * 6 / 10
            for command in ["train", "bench", "evaluate", "predict", "summary", "download", "launch", "inspect", "report"] {
                let r = try runProcess(Repo.binary, [command, "--help"], environment: ["COLUMNS": "\(columns)"], timeout: 60)
                XCTAssertEqual(r.status, 0, r.stderr)
                for description in Self.optionDescriptions(r.stdout, indent: indent) {
                    for line in description.dropLast() {
                        XCTAssertGreaterThanOrEqual(line.count, minimum, "\(command) at \(columns) columns: ragged break after '\(line)' in \(description)")
                        XCTAssertFalse(line.hasSuffix(" ±") || line.hasSuffix(" et"), "\(command): phrase split after '\(line)'")
                    }
                }
            }
        }
    }

    /// The wrapped lines of each option's description in a help text (the part before the
    /// `(default: …)` / `(values: …)` note, which ArgumentParser appends).
    static func optionDescriptions(_ help: String, indent: Int) -> [[String]] {
        var all: [[String]] = [], current: [String]?
        let pad = String(repeating: " ", count: indent)
        for line in help.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("  -") {
                if let c = current { all.append(c) }
                current = []
                if line.count > indent, line.dropFirst(indent - 2).hasPrefix("  "), !line.dropFirst(indent).hasPrefix(" ") {
                    current?.append(String(line.dropFirst(indent)))
                }
            } else if line.hasPrefix(pad), current != nil {
                current?.append(String(line.dropFirst(indent)))
            } else if let c = current {
                all.append(c); current = nil
            }
        }
        if let c = current { all.append(c) }
        // Drop the lines ArgumentParser adds after the text (they start with "(values:" or "(default:").
        return all.map { lines in
            var kept: [String] = []
            for l in lines {
                if l.hasPrefix("(default:") || l.hasPrefix("(values:") { break }
                if let r = l.range(of: " (default:") ?? l.range(of: " (values:") { kept.append(String(l[..<r.lowerBound])); break }
                kept.append(l)
            }
            return kept
        }.filter { !$0.isEmpty }
    }
}
