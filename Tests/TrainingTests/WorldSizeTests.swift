import Engine
import Foundation
import Training
import XCTest

/// The headline property: the number of ranks does not change what is trained. Runs the
/// binary under `mpirun -np 1/2/3` and compares the final weights.
///
/// Tolerances: one process and several sum the same per-example gradients in a different
/// order, so results agree up to float reassociation, and Adam amplifies such differences
/// quickly early in training (a gradient component near zero flips its step; measured here:
/// one process with 1 vs 2 threads diverges just as fast). So weights are compared tightly
/// after 3 steps, and the function (test loss) after 24. Biases that feed a batch norm are left
/// out of weight comparisons: their true gradient is exactly zero, so what they hold is float
/// noise that Adam turns into steps of up to lr, and they have no effect on the output.
final class WorldSizeTests: XCTestCase {
    static let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }

    func train(ranks: Int, steps: Int, dir: String, extra: [String] = []) throws -> [String: Any] {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun, "mpirun is not installed (scripts/install-deps)")
        let args = ["--oversubscribe", "--bind-to", "none", "-np", "\(ranks)", Repo.binary, "train", "--model", "ref",
                    "--data", Repo.mnist, "--max-steps", "\(steps)", "--batch-size", "50", "--train-limit", "2000",
                    "--validation-split", "500", "--test-limit", "2000", "--threads", "1", "--run-dir", dir, "--quiet"] + extra
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

    func weights(_ dir: String) throws -> SafeTensorsFile {
        try SafeTensorsFile.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/final.safetensors"))))
    }

    /// Biases whose layer feeds a batch norm.
    static let preBatchNormBiases: Set<String> = {
        let layers = ModelSpec.ref.layers
        return Set(layers.indices.dropLast().filter { layers[$0 + 1].type == .batchnorm }.map { "layers.\($0).bias" })
    }()

    struct Difference { var worst: Float; var share: Double; var at: String }

    func compare(_ a: SafeTensorsFile, _ b: SafeTensorsFile) -> Difference {
        var worst: Float = 0, at = "", within = 0, total = 0
        for e in a.entries where !e.name.hasPrefix("adam.") && !e.name.contains("running")
            && !WorldSizeTests.preBatchNormBiases.contains(e.name) {
            let x = a.values(e), y = b.values(b.entry(e.name)!)
            for (p, q) in zip(x, y) {
                let d = abs(p - q)
                if d > worst { worst = d; at = e.name }
                if d <= 1e-5 + 1e-4 * abs(p) { within += 1 }
                total += 1
            }
        }
        return Difference(worst: worst, share: Double(within) / Double(max(total, 1)), at: at)
    }

    /// The worst difference of the first step's gradients (Adam's first moment is 0.1·g),
    /// relative to each tensor's largest value.
    func gradientDifference(_ a: SafeTensorsFile, _ b: SafeTensorsFile) -> (Float, String) {
        var worst: Float = 0, at = ""
        for e in a.entries where e.name.hasPrefix("adam.m.")
            && !WorldSizeTests.preBatchNormBiases.contains(String(e.name.dropFirst("adam.m.".count))) {
            let x = a.values(e), y = b.values(b.entry(e.name)!)
            let scale = max(x.map { abs($0) }.max() ?? 0, 1e-30)
            for (p, q) in zip(x, y) where abs(p - q) / scale > worst { worst = abs(p - q) / scale; at = e.name }
        }
        return (worst, at)
    }

    /// After one step the summed gradients agree to float reassociation: the global batch,
    /// its shards, dropout masks and batch-norm statistics are the same for every world size.
    func testGradientsDoNotDependOnWorldSize() throws {
        let base = temporaryDirectory(self)
        _ = try train(ranks: 1, steps: 1, dir: base + "/np1")
        for p in [2, 3] {
            _ = try train(ranks: p, steps: 1, dir: base + "/np\(p)")
            let (worst, at) = gradientDifference(try weights(base + "/np1"), try weights(base + "/np\(p)"))
            XCTAssertLessThan(worst, 1e-5, "-np \(p): first-step gradient differs by \(worst) of its tensor's scale in \(at)")
        }
    }

    func testWeightsDoNotDependOnWorldSize() throws {
        let base = temporaryDirectory(self)
        var runs: [(Int, [String: Any], SafeTensorsFile)] = []
        for p in [1, 2, 3] {
            // Global batch 50: shards of 25/25 and 17/17/16; dropout on.
            let s = try train(ranks: p, steps: 3, dir: base + "/np\(p)")
            XCTAssertEqual(s["world_size"] as? Int, p)
            runs.append((p, s, try weights(base + "/np\(p)")))
        }
        for (p, _, w) in runs.dropFirst() {
            let d = compare(runs[0].2, w)
            XCTAssertLessThanOrEqual(d.worst, 1e-3, "-np \(p) vs -np 1 after 3 steps: worst |Δw| \(d.worst) in \(d.at)")
            XCTAssertGreaterThanOrEqual(d.share, 0.99, "-np \(p) vs -np 1 after 3 steps: \(d.share) of weights within 1e-5 + 1e-4·|w|")
        }
    }

    /// Augmentation is keyed by (seed, epoch, example index), so ranks draw what one process draws.
    func testAugmentedTrainingDoesNotDependOnWorldSize() throws {
        let base = temporaryDirectory(self)
        let augmented = try train(ranks: 1, steps: 1, dir: base + "/np1", extra: ["--augment", "standard", "--elastic", "34:4"])
        _ = try train(ranks: 2, steps: 1, dir: base + "/np2", extra: ["--augment", "standard", "--elastic", "34:4"])
        let (worst, at) = gradientDifference(try weights(base + "/np1"), try weights(base + "/np2"))
        XCTAssertLessThan(worst, 1e-5, "augmented: first-step gradient differs by \(worst) of its tensor's scale in \(at)")
        let plain = try train(ranks: 1, steps: 1, dir: base + "/plain")
        XCTAssertNotEqual(plain["weights_sha256"] as? String, augmented["weights_sha256"] as? String, "augmentation changed nothing")
    }

    func testFunctionDoesNotDependOnWorldSizeOverTensOfSteps() throws {
        let base = temporaryDirectory(self)
        let one = try train(ranks: 1, steps: 24, dir: base + "/np1")
        let three = try train(ranks: 3, steps: 24, dir: base + "/np3")
        let l1 = try XCTUnwrap(one["test_loss"] as? Double), l3 = try XCTUnwrap(three["test_loss"] as? Double)
        XCTAssertEqual(l3, l1, accuracy: 2e-2 * l1, "test loss after 24 steps: -np 1 \(l1), -np 3 \(l3)")
        XCTAssertEqual(one["global_steps"] as? Int, 24)
        XCTAssertEqual(three["global_steps"] as? Int, 24)
        let d = compare(try weights(base + "/np1"), try weights(base + "/np3"))
        XCTAssertLessThan(d.worst, 24e-3, "no weight moved further apart than the steps allow: \(d.worst) in \(d.at)")
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

    /// How backward's gradients are cut into reduce-scatter buckets changes no bit: 3 ranks with
    /// one exchange after backward (the default), a bucket per layer (0.01 MiB) and buckets of
    /// 0.5 MiB end with the same weights. Also pins that a layer's backward writes only its own
    /// gradients (a bucket in flight is not touched by the layers below). A rank started with another
    /// bucket size is refused, as its messages would not match.
    func testGradientBucketsChangeNoBit() throws {
        let base = temporaryDirectory(self)
        let hashes = try [[], ["--bucket-mib", "0.01"], ["--bucket-mib", "0.5"]].enumerated().map { i, extra in
            try train(ranks: 3, steps: 3, dir: base + "/b\(i)", extra: extra)["weights_sha256"] as? String
        }
        XCTAssertNotNil(hashes[0])
        XCTAssertEqual(hashes[1], hashes[0], "a bucket per layer gives other weights than one exchange")
        XCTAssertEqual(hashes[2], hashes[0], "0.5 MiB buckets give other weights than one exchange")

        func rank(_ mib: String) -> [String] {
            [Repo.binary, "train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "2", "--train-limit", "500",
             "--run-dir", base + "/mixed", "--bucket-mib", mib]
        }
        try WorldSizeTests.assertRanksRefused(rank("0"), rank("1"),
                                              saying: "rank 1 was started with different settings than rank 0: bucket-mib")
    }

    /// `--bn-sync local` with one rank is exactly `global`. With two ranks each normalises by its
    /// own shard's statistics (a different estimator, so the weights differ by design), but
    /// every rank ends with identical weights (the run checks the hashes across ranks) and the
    /// running statistics are the count-weighted average over ranks: after one step the first
    /// batch norm's running mean, whose input is the same on both sides, equals the global one.
    func testLocalBatchNorm() throws {
        let base = temporaryDirectory(self)
        let global = try train(ranks: 1, steps: 1, dir: base + "/g")
        let local = try train(ranks: 1, steps: 1, dir: base + "/l", extra: ["--bn-sync", "local"])
        XCTAssertEqual(global["weights_sha256"] as? String, local["weights_sha256"] as? String)
        let local2 = try train(ranks: 2, steps: 1, dir: base + "/l2", extra: ["--bn-sync", "local"])
        XCTAssertEqual(local2["world_size"] as? Int, 2)
        XCTAssertNotEqual(local2["weights_sha256"] as? String, local["weights_sha256"] as? String)
        let g = try weights(base + "/g"), l2 = try weights(base + "/l2")
        let a = g.values(g.entry("layers.1.running_mean")!), b = l2.values(l2.entry("layers.1.running_mean")!)
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 1
        XCTAssertLessThan(worst, 1e-6, "averaged running mean differs from the global one by \(worst)")
    }
}
