import Engine
import Hashing
import Foundation
import Training
import XCTest

/// The headline property: what is trained is a function of the data, the model, the seed, the
/// schedule and the micro-batch size only — not of the number of ranks or threads. Runs the
/// binary under `mpirun` and compares the bits: weights, metrics and checkpoints.
final class WorldSizeTests: XCTestCase {
    static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// `ranks` × `threads` training `model` on 2000 examples with dropout and augmentation.
    func train(ranks: Int, threads: Int = 1, model: String = "ref", batch: Int = 50, dir: String,
               extra: [String] = ["--max-steps", "3"]) throws -> [String: Any] {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun, "mpirun is not installed (scripts/install-deps)")
        let args = ["--oversubscribe", "--bind-to", "none", "-np", "\(ranks)", Repo.binary, "train", "--model", model,
                    "--data", Repo.mnist, "--batch-size", "\(batch)", "--train-limit", "2000",
                    "--validation-split", "500", "--test-limit", "500", "--threads", "\(threads)", "--run-dir", dir, "--quiet"] + extra
        let r = try runProcess(mpirun, args, environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        XCTAssertEqual(r.status, 0, "mpirun -np \(ranks) failed: \(r.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// Starts two ranks with different command lines (`mpirun -np 1 A : -np 1 B`) and checks
    /// that the job fails with exactly one error line, which says each of `messages`.
    static func assertRanksRefused(_ first: [String], _ second: [String], saying messages: String...,
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun, "mpirun is not installed (scripts/install-deps)")
        let r = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "1"] + first + [":", "-np", "1"] + second,
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        XCTAssertNotEqual(r.status, 0, file: file, line: line)
        let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }
        XCTAssertEqual(errors.count, 1, r.stderr, file: file, line: line)
        for message in messages { XCTAssertTrue(r.stderr.contains(message), r.stderr, file: file, line: line) }
    }

    /// The (ranks, threads) layouts every bitwise test runs: two threads in one process, one,
    /// and 2, 3 and 4 ranks (4 oversubscribed on two cores).
    static let layouts = [(1, 2), (1, 1), (2, 1), (3, 1), (4, 1)]

    /// `ref` (dropout) and `seed` (ELU, L2, dropout) with augmentation, global batches of 96 (six
    /// micro-batches of 16) and 100 (the last micro-batch of 4, shares of 32/32/36 on 3 ranks, and
    /// on 4 ranks 32/32/16/20), 20 steps: one `weights_sha256` for every layout.
    func testSameBitsOnAnyNumberOfRanksAndThreads() throws {
        let base = temporaryDirectory(self)
        for model in ["ref", "seed"] {
            for batch in [96, 100] {
                var hashes: [String: String] = [:]
                for (ranks, threads) in WorldSizeTests.layouts {
                    let s = try train(ranks: ranks, threads: threads, model: model, batch: batch,
                                      dir: base + "/\(model)-\(batch)-\(ranks)x\(threads)",
                                      extra: ["--max-steps", "20", "--augment", "standard"])
                    XCTAssertEqual(s["world_size"] as? Int, ranks)
                    hashes["\(ranks)×\(threads)"] = try XCTUnwrap(s["weights_sha256"] as? String)
                }
                XCTAssertEqual(Set(hashes.values).count, 1, "\(model), batch \(batch): weights differ by layout: \(hashes)")
            }
        }
    }

    func weights(_ dir: String) throws -> SafeTensorsFile {
        try SafeTensorsFile.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/final.safetensors"))))
    }

    /// metrics.csv without its timing columns (seconds, images per second), which measure the machine.
    func metricsWithoutTimes(_ dir: String) throws -> [String] {
        let lines = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8).split(separator: "\n").map(String.init)
        let header = lines[0].split(separator: ",").map(String.init)
        let keep = header.indices.filter { !header[$0].contains("second") && !header[$0].contains("images") }
        return lines.map { line in
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            return keep.map { $0 < fields.count ? fields[$0] : "" }.joined(separator: ",")
        }
    }

    /// Whole epochs with early stopping and best-weight restore, validation and test every epoch,
    /// periodic checkpoints: the weights, every checkpoint's weights and metrics.csv (losses,
    /// accuracies, learning rates — the validation losses early stopping decides by) are the
    /// same bits for every layout.
    func testWholeEpochsWithEarlyStoppingAreTheSameBits() throws {
        let base = temporaryDirectory(self)
        var reference: (hash: String, metrics: [String], checkpoints: [String: String])?
        for (ranks, threads) in WorldSizeTests.layouts {
            let dir = base + "/\(ranks)x\(threads)"
            let s = try train(ranks: ranks, threads: threads, batch: 100, dir: dir,
                              extra: ["--epochs", "3", "--patience", "1", "--min-delta", "0.5", "--checkpoint-every", "7",
                                      "--augment", "standard"])
            let hash = try XCTUnwrap(s["weights_sha256"] as? String)
            let metrics = try metricsWithoutTimes(dir)
            XCTAssertGreaterThanOrEqual(metrics.count, 3, "a header and at least two epochs")
            var checkpoints: [String: String] = [:]
            for name in try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints") where name.hasSuffix(".safetensors") {
                let file = try SafeTensorsFile.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/" + name))))
                var hash = SHA256()   // every tensor (weights, state, Adam's moments), by name
                for e in file.entries.sorted(by: { $0.name < $1.name }) {
                    hash.update(Array(e.name.utf8))
                    file.values(e).withUnsafeBytes { hash.update($0) }
                }
                checkpoints[name] = SHA256.hex(hash.finalize())
            }
            XCTAssertFalse(checkpoints.isEmpty)
            guard let r = reference else { reference = (hash, metrics, checkpoints); continue }
            XCTAssertEqual(hash, r.hash, "\(ranks)×\(threads): final weights differ from 1×2")
            XCTAssertEqual(metrics, r.metrics, "\(ranks)×\(threads): metrics.csv differs from 1×2")
            XCTAssertEqual(checkpoints, r.checkpoints, "\(ranks)×\(threads): checkpoints differ from 1×2")
        }
    }

    /// A run stopped on 3 ranks and resumed on 1 (and one stopped on 1, resumed on 4) ends on the
    /// bits of the run never stopped.
    func testResumeOnAnotherWorldSizeIsExact() throws {
        let base = temporaryDirectory(self)
        let whole = try train(ranks: 2, batch: 100, dir: base + "/whole", extra: ["--epochs", "2"])
        for (first, second) in [(3, 1), (1, 4)] {
            let dir = base + "/\(first)to\(second)"
            _ = try train(ranks: first, batch: 100, dir: dir, extra: ["--epochs", "2", "--max-steps", "13"])
            let resumed = try train(ranks: second, batch: 100, dir: dir, extra: ["--epochs", "2", "--resume"])
            XCTAssertEqual(resumed["weights_sha256"] as? String, whole["weights_sha256"] as? String,
                           "stopped on \(first) ranks, resumed on \(second): not the bits of the run never stopped")
        }
    }

    /// Ranks started with different settings all stop at once with one line saying what differs.
    func testRanksWithDifferentSettingsStopTogether() throws {
        let dir = temporaryDirectory(self) + "/mismatch"
        func rank(_ seed: String) -> [String] {
            [Repo.binary, "train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "5", "--train-limit", "500",
             "--run-dir", dir, "--seed", seed]
        }
        try WorldSizeTests.assertRanksRefused(rank("1"), rank("2"), saying: "rank 1 was started with different settings than rank 0: seed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/summary.json"))
        // Options that change the sequence of collectives or what is evaluated: a different
        // --checkpoint-every deadlocked, --max-steps gave raw MPI errors, --test-limit an
        // accuracy over an inconsistent test set.
        for (flag, a, b) in [("checkpoint-every", "2", "3"), ("max-steps", "5", "4"), ("test-limit", "100", "200")] {
            try WorldSizeTests.assertRanksRefused(rank("1") + ["--\(flag)", a], rank("1") + ["--\(flag)", b],
                                                  saying: "rank 1 was started with different settings than rank 0: \(flag)")
        }
    }

    /// The micro-batch size is part of what is trained: another one gives other weights, and a
    /// rank started with another one is refused.
    func testMicroBatchIsPartOfTheResult() throws {
        let base = temporaryDirectory(self)
        let a = try train(ranks: 1, batch: 64, dir: base + "/m16")
        let b = try train(ranks: 1, batch: 64, dir: base + "/m32", extra: ["--max-steps", "3", "--micro-batch", "32"])
        XCTAssertNotEqual(a["weights_sha256"] as? String, b["weights_sha256"] as? String)
        func rank(_ micro: String) -> [String] {
            [Repo.binary, "train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "2", "--train-limit", "500",
             "--run-dir", base + "/mixed", "--micro-batch", micro]
        }
        try WorldSizeTests.assertRanksRefused(rank("16"), rank("8"),
                                              saying: "rank 1 was started with different settings than rank 0: micro-batch")
    }

    /// `--bn-sync local` with one rank is exactly `global`. With two ranks each normalises by its
    /// own shard's statistics (a different estimator, so the weights differ by design), but
    /// every rank ends with identical weights (the run checks the hashes across ranks) and the
    /// running statistics are the count-weighted average over ranks: after one step the first
    /// batch norm's running mean, whose input is the same on both sides, equals the global one.
    func testLocalBatchNorm() throws {
        let base = temporaryDirectory(self)
        let global = try train(ranks: 1, dir: base + "/g", extra: ["--max-steps", "1"])
        let local = try train(ranks: 1, dir: base + "/l", extra: ["--max-steps", "1", "--bn-sync", "local"])
        XCTAssertEqual(global["weights_sha256"] as? String, local["weights_sha256"] as? String)
        let local2 = try train(ranks: 2, dir: base + "/l2", extra: ["--max-steps", "1", "--bn-sync", "local"])
        XCTAssertEqual(local2["world_size"] as? Int, 2)
        XCTAssertNotEqual(local2["weights_sha256"] as? String, local["weights_sha256"] as? String)
        let g = try weights(base + "/g"), l2 = try weights(base + "/l2")
        let a = g.values(g.entry("layers.1.running_mean")!), b = l2.values(l2.entry("layers.1.running_mean")!)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 1
        XCTAssertLessThan(worst, 1e-6, "averaged running mean differs from the global one by \(worst)")
    }
}

/// `--accumulate N`: each global batch in N passes, gradients summed exactly over all of them.
final class AccumulateTests: XCTestCase {
    /// A model without batch norm (with dropout), where passes change nothing.
    static let noBatchNorm = """
        {"name": "nobn", "input": [28, 28, 1], "batch_size": 64,
         "layers": [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "activation": "relu"},
                    {"type": "maxpool2d", "size": 2},
                    {"type": "conv2d", "filters": 16, "kernel": 3, "padding": "same", "activation": "relu"},
                    {"type": "maxpool2d", "size": 2},
                    {"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"},
                    {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 10}]}
        """

    func run(ranks: Int, threads: Int, dir: String, _ extra: [String]) throws -> (status: Int32, stderr: String, summary: [String: Any]?) {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun, "mpirun is not installed (scripts/install-deps)")
        let r = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "\(ranks)", Repo.binary, "train",
                                        "--data", Repo.mnist, "--max-steps", "12", "--train-limit", "2000", "--test-limit", "300",
                                        "--validation-split", "300", "--augment", "standard", "--threads", "\(threads)",
                                        "--run-dir", dir, "--quiet"] + extra,
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        let summary = (try? Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json")))
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
        return (r.status, r.stderr, summary)
    }

    /// Without batch norm, 4 passes in one process and 3 passes on 2 ranks give the bits of the
    /// whole batch at once; the training loss in metrics.csv too.
    func testPassesGiveTheWholeBatchBits() throws {
        let base = temporaryDirectory(self)
        let model = base + "/nobn.json"
        try AccumulateTests.noBatchNorm.write(toFile: model, atomically: true, encoding: .utf8)
        var hashes: [String] = [], losses: [String] = []
        for (name, ranks, threads, passes) in [("whole", 1, 2, 1), ("four", 1, 2, 4), ("three-on-2", 2, 1, 3)] {
            let r = try run(ranks: ranks, threads: threads, dir: base + "/" + name, ["--model", model, "--accumulate", "\(passes)"])
            XCTAssertEqual(r.status, 0, r.stderr)
            hashes.append(try XCTUnwrap(r.summary?["weights_sha256"] as? String))
            losses.append(try String(contentsOfFile: base + "/\(name)/metrics.csv", encoding: .utf8)
                .split(separator: "\n").dropFirst().map { String($0.split(separator: ",")[2]) }.joined(separator: ";"))
        }
        XCTAssertEqual(Set(hashes).count, 1, "passes changed the weights: \(hashes)")
        XCTAssertEqual(Set(losses).count, 1, "passes changed the training loss: \(losses)")
    }

    /// With batch norm each pass has its own statistics, so the weights differ from the whole
    /// batch's, but not with the number of ranks; too many passes are refused with one line.
    func testPassesWithBatchNorm() throws {
        let base = temporaryDirectory(self)
        let whole = try run(ranks: 1, threads: 2, dir: base + "/whole", ["--model", "ref", "--batch-size", "64"])
        let two = try run(ranks: 1, threads: 2, dir: base + "/two", ["--model", "ref", "--batch-size", "64", "--accumulate", "2"])
        let twoOn3 = try run(ranks: 3, threads: 1, dir: base + "/two-on-3", ["--model", "ref", "--batch-size", "64", "--accumulate", "2"])
        for r in [whole, two, twoOn3] { XCTAssertEqual(r.status, 0, r.stderr) }
        XCTAssertNotEqual(two.summary?["weights_sha256"] as? String, whole.summary?["weights_sha256"] as? String)
        XCTAssertEqual(two.summary?["weights_sha256"] as? String, twoOn3.summary?["weights_sha256"] as? String)
        let bad = try run(ranks: 1, threads: 1, dir: base + "/bad", ["--model", "ref", "--batch-size", "64", "--accumulate", "5"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(bad.stderr.split(separator: "\n").filter { $0.hasPrefix("error:") }.count, 1, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("--accumulate 5 needs at least 5 micro-batches of 16"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/bad/summary.json"))
    }
}
