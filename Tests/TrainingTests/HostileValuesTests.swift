import Foundation
import ArgumentParser
import CLI
import XCTest

/// Every numeric flag of every command, given 0, -1, nan, inf and values past Int64's and
/// Double's range, either works or gets one line (issue 16): never a trap, never a hang.
final class HostileValuesTests: XCTestCase {
    /// Values every numeric flag is tried with.
    static let hostile = ["0", "-1", "nan", "inf", "-inf", "9223372036854775808", "1e400", "1e16"]

    /// Each command's numeric flags, and the arguments that make a case cheap: a refused value
    /// fails in validation, an accepted one trains or measures one step of the small model on
    /// a few examples, or fails at once on a missing file or an unreachable mirror.
    static func cases(dir: String) -> [(command: String, base: [String], numeric: [String])] {
        let cheapStep = ["--model", "seed", "--batch-size", "8", "--threads", "1"]
        return [
            ("train", cheapStep + ["--data", Repo.mnist, "--run-dir", dir + "/run", "--max-steps", "1",
                                   "--train-limit", "16", "--test-limit", "16", "--validation-split", "0",
                                   "--epochs", "1", "--quiet"],
             ["batch-size", "threads", "micro-batch", "accumulate", "rotation", "shift", "zoom", "shear", "epochs", "lr",
              "warmup-steps", "weight-decay", "label-smoothing", "ema-decay", "validation-split", "patience",
              "min-delta", "seed", "max-steps", "train-limit", "test-limit", "checkpoint-every", "keep",
              "step-timeout", "log-every"]),
            ("bench", cheapStep + ["--steps", "1", "--warmup", "0"], ["batch-size", "threads", "micro-batch", "steps", "warmup"]),
            ("summary", ["--model", "seed"], ["batch-size", "input"]),
            ("evaluate", ["--checkpoint", dir + "/no-such.safetensors"], ["batch-size"]),
            ("predict", ["--checkpoint", dir + "/no-such.safetensors", dir + "/no-such.png"], ["top"]),
            ("download", ["--dataset", "mnist", "--to", dir + "/dl", "--mirror", "http://127.0.0.1:9", "--mirror-only"],
             ["retries", "timeout"]),
            ("launch", ["--hostfile", dir + "/no-such-hostfile", "--", "train"],
             ["min-nodes", "max-restarts", "np-per-node", "probe-timeout"]),
        ]
    }

    /// Options of the help that take no number (names, paths, enumerations, flags).
    static let notNumeric: [String: Set<String>] = [
        "train": ["config", "model", "augment", "bn-sync", "fill", "elastic", "data", "lr-schedule", "standardize", "monitor",
                  "restore-best-weights", "run-dir", "resume", "resume-from", "progress", "quiet", "verbose", "test-every-epoch"],
        "bench": ["model", "augment", "bn-sync", "profile", "eval", "convolution", "json"],
        "summary": ["model", "json"],
        "evaluate": ["checkpoint", "data", "json"],
        "predict": ["checkpoint", "save-prepared", "json"],
        "download": ["dataset", "to", "mirror", "mirror-only"],
        "launch": ["hostfile", "host", "mpirun-arg"],
        "inspect": ["json"],
        "report": ["data"],
        "distcnn": [],
    ]

    /// The long options a command's pinned help lists (`--help` aside).
    static func helpOptions(_ command: String) throws -> Set<String> {
        let text = try String(contentsOfFile: Repo.fixtures + "/help/\(command).txt", encoding: .utf8)
        let regex = try NSRegularExpression(pattern: #"^  (?:-[a-zA-Z], )?--([a-z][a-z0-9-]*)"#, options: .anchorsMatchLines)
        let names = regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap {
            Range($0.range(at: 1), in: text).map { String(text[$0]) }
        }
        return Set(names).subtracting(["help", "version"])
    }

    func testEveryNumericOptionOfTheHelpHasCases() throws {
        let covered = Dictionary(uniqueKeysWithValues: Self.cases(dir: "/x").map { ($0.command, Set($0.numeric)) })
        let commands = try FileManager.default.contentsOfDirectory(atPath: Repo.fixtures + "/help")
            .filter { $0.hasSuffix(".txt") }.map { String($0.dropLast(4)) }
        XCTAssertGreaterThanOrEqual(commands.count, 9)
        for command in commands {
            let options = try Self.helpOptions(command)
            XCTAssertFalse(options.isEmpty && command != "distcnn", "no options read from \(command)'s help")
            let known = covered[command, default: []].union(Self.notNumeric[command, default: []])
            XCTAssertEqual(options.subtracting(known), [], "\(command): options of the help with no hostile-value case; add them to the table (numeric) or to notNumeric")
            XCTAssertEqual(covered[command, default: []].subtracting(options), [], "\(command): cases for options the help does not list")
        }
    }

    func testHostileNumbersNeverTrapOrHang() throws {
        let dir = temporaryDirectory(self)
        var runs: [(args: [String], flag: String)] = []
        for c in Self.cases(dir: dir) {
            for flag in c.numeric {
                let values = flag == "input"
                    ? ["0x0x0", "-1x28x1", "nanx28x1", "9223372036854775807x9223372036854775807x1", "65536x65536x3", "99999999x99999999x3"]
                    : Self.hostile
                for value in values {
                    // The value under test comes last (before a `--`): it replaces the base's own
                    // (the last one given wins).
                    let cut = c.base.firstIndex(of: "--") ?? c.base.count
                    runs.append(([c.command] + c.base[..<cut] + ["--\(flag)", value] + c.base[cut...], flag))
                }
            }
        }
        // The reproductions of issue 16, beyond the table.
        runs += [
            (["train", "--epochs", "6000000000000000"], "epochs"),
            (["bench", "--steps", "9223372036854775807", "--warmup", "9223372036854775807"], "steps"),
            (["bench", "--batch-size", "99999999"], "batch-size"),
            (["summary", "--batch-size", "10000000000000000"], "batch-size"),
            (["download", "--dataset", "mnist", "--to", dir + "/dl", "--timeout", "inf"], "timeout"),
            (["train", "--threads", "1000000"], "threads"),
        ]
        let failures = LockedLines()
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 2
        var refused = 0, accepted = 0
        let counts = NSLock()
        for (i, var run) in runs.enumerated() {
            // Each run its own run dir: runs that train go on side by side.
            run.args = run.args.map { $0 == dir + "/run" ? dir + "/run-\(i)" : $0 }
            queue.addOperation {
                let start = Date()
                guard let r = try? runProcess(Repo.binary, run.args, timeout: 60) else {
                    return failures.add("\(run.args): could not start")
                }
                let seconds = Date().timeIntervalSince(start)
                let said = "\(run.args.joined(separator: " ")) → exit \(r.status), stderr: \(r.stderr)"
                // Process reports a signal's number as the status; a shell would say 128 + it.
                if [4, 5, 6, 9, 11, 132, 133, 134, 137, 139].contains(r.status) || r.stderr.contains("Fatal error") {
                    failures.add("trap: " + said)
                }
                if seconds >= 60 { failures.add("hang: " + said) }
                let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
                counts.lock(); if r.status == 0 { accepted += 1 } else { refused += 1 }; counts.unlock()
                if r.status != 0 && lines.count != 1 { failures.add("not one line: " + said) }
                // A usage error (64) names the flag it refuses.
                if r.status == 64 && !r.stderr.contains("--\(run.flag)") { failures.add("flag not named: " + said) }
            }
        }
        queue.waitUntilAllOperationsAreFinished()
        for f in failures.all { XCTFail(f) }
        XCTAssertGreaterThan(refused, 150, "most hostile values are refused")
        XCTAssertGreaterThan(accepted, 12, "the valid ones (0 where 0 is allowed) run")
    }

    /// The line a refused number gets: flag, range and value.
    func testRefusalsSayRangeAndValue() throws {
        for (args, line) in [
            (["train", "--epochs", "-1"], "error: --epochs must be in 1...1000000, got -1 (see --help)"),
            (["train", "--epochs", "6000000000000000"], "error: --epochs must be in 1...1000000, got 6000000000000000 (see --help)"),
            (["train", "--lr", "-1"], "error: --lr must be in 1e-12...1e+30, got -1.0 (see --help)"),
            (["train", "--min-delta", "inf"], "error: --min-delta must be in 0.0...1000000.0, got inf (see --help)"),
            (["train", "--threads", "1000000"], "error: --threads must be in 1...1024, got 1000000 (see --help)"),
            (["bench", "--threads", "0"], "error: --threads must be in 1...1024, got 0 (see --help)"),
            (["bench", "--steps", "9223372036854775807"], "error: --steps must be in 1...1000000, got 9223372036854775807 (see --help)"),
            (["summary", "--batch-size", "10000000000000000"], "error: --batch-size must be in 1...65536, got 10000000000000000 (see --help)"),
            (["download", "--dataset", "mnist", "--to", "x", "--timeout", "inf"], "error: --timeout must be in 0.001...86400.0, got inf (see --help)"),
        ] {
            let r = try runProcess(Repo.binary, args, timeout: 60)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr, line + "\n", "\(args)")
        }
    }

    /// A model file's batch_size out of range is refused where the file is read, naming the field.
    func testModelFileBatchSizeIsBounded() throws {
        let dir = temporaryDirectory(self)
        for value in ["0", "-5", "1e12", "100000"] {
            let path = dir + "/m\(value).json"
            try #"{"name": "m", "input": [28, 28, 1], "batch_size": \#(value), "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]}"#
                .write(toFile: path, atomically: true, encoding: .utf8)
            let r = try runProcess(Repo.binary, ["summary", "--model", path], timeout: 60)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("batch_size"), r.stderr)
        }
    }

    /// A batch whose buffers would not fit in the machine's memory is refused before allocating.
    func testBatchBeyondMemoryIsRefused() throws {
        let dir = temporaryDirectory(self)
        // Fine per model limits (2^24 activations per example), but 65536 of them are terabytes.
        let path = dir + "/wide.json"
        try #"{"name": "wide", "input": [512, 512, 1], "layers": [{"type": "conv2d", "filters": 16, "kernel": 3, "padding": "same"}, {"type": "maxpool2d", "size": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        for args in [["train", "--data", dir + "/none", "--run-dir", dir + "/run"], ["bench"]] {
            let r = try runProcess(Repo.binary, args + ["--model", path, "--batch-size", "65536"], timeout: 60)
            let command = args[0]
            XCTAssertEqual(r.status, 1, "\(command): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("more than this machine's"), r.stderr)
        }
    }
}

/// Failure lines gathered from several threads.
final class LockedLines: @unchecked Sendable {
    private var lines: [String] = []
    private let lock = NSLock()
    func add(_ line: String) { lock.lock(); lines.append(line); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

/// The command line's fuzz target: argument vectors built from the real flag names (read from
/// the pinned help) and hostile values, parsed and validated by the command structs in this
/// process (never run). A trap ends the test process. The committed reproductions in Fuzz/corpus/cli (one argument a line) run first.
/// `DISTCNN_CLI_FUZZ_RUNS` sets how many random vectors (default 20000), `DISTCNN_CLI_FUZZ_SEED` the seed
/// (printed, so a failure repeats).
final class CommandLineFuzzTests: XCTestCase {
    static let corpus = Repo.root + "/Fuzz/corpus/cli"

    /// Parses and validates `argv` as `distcnn` would, and renders the error main() would print.
    func parse(_ argv: [String]) {
        do { _ = try Distcnn.parseAsRoot(argv) } catch {
            _ = Distcnn.message(for: error)
            _ = Distcnn.exitCode(for: error)
        }
    }

    func testCorpusReplays() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).filter { $0.hasSuffix(".args") }.sorted()
        XCTAssertGreaterThanOrEqual(files.count, 10)
        for file in files {
            let text = try String(contentsOfFile: Self.corpus + "/" + file, encoding: .utf8)
            var argv = text.components(separatedBy: "\n")
            if argv.last == "" { argv.removeLast() }
            parse(argv)
            // Every reproduction is refused, but those the parser rightly accepts (`.accepted.args`:
            // refused later, such as a batch beyond the machine's memory).
            if file.hasSuffix(".accepted.args") {
                XCTAssertNoThrow(try Distcnn.parseAsRoot(argv), file)
            } else {
                XCTAssertThrowsError(try Distcnn.parseAsRoot(argv), file)
            }
        }
    }

    func testRandomVectorsNeverTrap() throws {
        var flags: [String: [String]] = [:]
        for command in ["train", "bench", "summary", "evaluate", "predict", "download", "inspect", "report"] {
            flags[command] = try HostileValuesTests.helpOptions(command).sorted().map { "--" + $0 }
        }
        let commands = flags.keys.sorted()
        let values = HostileValuesTests.hostile + [
            "1", "2", "3", "32", "65536", "65537", "99999999", "9223372036854775807", "-9223372036854775809",
            "18446744073709551616", "1e-400", "-0", "0x10", "1_000", " 1", "", "-", "--", "+1", "1e308", "4.9e-324",
            "NaN", "Infinity", "-nan", "28x28x1", "0x0x0", "99999999x99999999x3", "seed", "ref", "x.png", "é", "\u{0}",
        ]
        let seed = ProcessInfo.processInfo.environment["DISTCNN_CLI_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 0...UInt64.max)
        var state = seed
        func next(_ n: Int) -> Int {   // SplitMix64, so a failure names a seed that repeats it
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(n))
        }
        let runs = Int(ProcessInfo.processInfo.environment["DISTCNN_CLI_FUZZ_RUNS"] ?? "") ?? 20_000
        for _ in 0..<runs {
            let command = commands[next(commands.count)]
            var argv = [command]
            for _ in 0..<next(7) {
                let flag = flags[command]![next(flags[command]!.count)]
                switch next(4) {
                case 0: argv += [flag]
                case 1: argv += [flag + "=" + values[next(values.count)]]
                default: argv += [flag, values[next(values.count)]]
                }
            }
            if next(5) == 0 { argv.insert(values[next(values.count)], at: 1 + next(argv.count)) }
            parse(argv)
        }
        print("parsed \(runs) argument vectors (seed \(seed))")
    }
}
