import Foundation
import XCTest

/// `distcnn bench --profile --json`: every layer timed, each convolution's data-layout share,
/// and the step's parts outside the layers, adding up to the step clocked around them.
final class BenchTests: XCTestCase {
    func bench(_ args: [String]) throws -> [String: Any] {
        let r = try runProcess(Repo.binary, ["bench", "--steps", "3", "--warmup", "1", "--threads", "1", "--json"] + args)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    }

    /// The timed parts of a step add up to the step, clocked separately around all of it
    /// (`step_milliseconds`): the layer rows (without their "of which" rows) and the timed phases
    /// outside the layers (without the batch-norm sync, which is inside its layers' rows, and the
    /// rest, which is the step less the others). They are disjoint intervals inside the step, so
    /// their sum cannot exceed it (1e-9 of it allowed for rounding: a part counted twice fails).
    /// What they leave untimed (zeroing the gradients, the timers) was 0.4–1.8% of the step in 14
    /// runs of these benches; at most 5% is allowed, about three times that, so a stray delay there
    /// passes and a layer or phase that is no longer timed, or is counted twice, fails.
    func assertPartsAddUp(_ d: [String: Any], file: StaticString = #filePath, line: UInt = #line) throws {
        let rows = try XCTUnwrap(d["profile"] as? [[String: Any]]), phases = try XCTUnwrap(d["phases"] as? [[String: Any]])
        let layerMs = rows.filter { !($0["name"] as! String).hasPrefix(" ") }
            .reduce(0.0) { $0 + ($1["forward_ms"] as! Double) + ($1["backward_ms"] as! Double) }
        let timed = phases.filter { !["batch-norm sync (in its rows)", "rest (untimed: zeroing gradients, timers)"].contains($0["name"] as! String) }
        XCTAssertEqual(timed.count, phases.count - 2, "both untimed rows are named as expected", file: file, line: line)
        let phaseMs = timed.reduce(0.0) { $0 + ($1["ms"] as! Double) }
        let steps = try XCTUnwrap(d["step_milliseconds"] as? [Double])
        let stepMs = steps.reduce(0, +) / Double(steps.count)
        let untimed = (stepMs - layerMs - phaseMs) / stepMs
        XCTAssertGreaterThanOrEqual(untimed, -1e-9, "the timed parts (\(layerMs + phaseMs) ms) exceed the step (\(stepMs) ms)",
                                    file: file, line: line)
        XCTAssertLessThanOrEqual(untimed, 0.05, "\(untimed * 100)% of the step (\(stepMs) ms) is in no timed part",
                                 file: file, line: line)
    }

    func testProfileCoversLayersLayoutAndPhases() throws {
        for (convolution, layout) in [("auto", "Winograd transforms"), ("shifted", "padded copies"),
                                      ("im2col", "im2col/col2im")] {
            let d = try bench(["--model", "ref", "--batch-size", "8", "--profile", "--augment", "standard",
                               "--convolution", convolution])
            let rows = try XCTUnwrap(d["profile"] as? [[String: Any]])
            let names = rows.compactMap { $0["name"] as? String }
            // ref: 20 layers, 4 convolutions each followed by its layout row.
            XCTAssertEqual(names.count, 24, "\(names)")
            XCTAssertEqual(names.filter { $0.hasSuffix("conv2d") }.count, 4)
            // The first convolution (one input channel) uses im2col under auto and as forced shifted
            // copies otherwise; the other three follow --convolution.
            XCTAssertEqual(names.filter { $0.hasSuffix(layout) }.count, convolution == "auto" ? 3 : 4, "\(names)")
            let phases = try XCTUnwrap(d["phases"] as? [[String: Any]])
            XCTAssertEqual(phases.compactMap { $0["name"] as? String },
                           ["input (fill + augmentation)", "loss (softmax cross-entropy)", "batch-norm sync (in its rows)",
                            "gradient/weight ring exchange", "optimizer (L2 + Adam, own shard)", "rest (untimed: zeroing gradients, timers)"])
            try assertPartsAddUp(d)
            for p in phases { XCTAssertGreaterThanOrEqual(p["ms"] as! Double, 0, "\(p)") }
            XCTAssertGreaterThan(phases[0]["ms"] as! Double, 0, "augmentation takes time")
        }
    }

    /// `bench --eval --profile` times every layer of the inference pass too; a batch norm folded
    /// into its convolution says so and has no time of its own (it is in the convolution's).
    func testEvalProfileTimesTheInferenceLayers() throws {
        let d = try bench(["--model", "ref", "--batch-size", "16", "--eval", "--profile"])
        let rows = try XCTUnwrap(d["profile"] as? [[String: Any]])
        let layers = rows.filter { !($0["name"] as! String).hasPrefix(" ") }
        let names = layers.map { $0["name"] as! String }
        XCTAssertEqual(names.count, 20, "\(names)")
        // ref's four convolutions each fold the batch norm after them; the dense layer's does not.
        XCTAssertEqual(names.filter { $0.hasSuffix("batchnorm (folded into \(Int($0.prefix { $0 != " " })! - 1))") },
                       ["1 batchnorm (folded into 0)", "4 batchnorm (folded into 3)", "8 batchnorm (folded into 7)",
                        "11 batchnorm (folded into 10)"])
        for row in layers {
            let name = row["name"] as! String, ms = row["forward_ms"] as! Double
            if ["conv2d", "dense", "maxpool2d", "16 batchnorm"].contains(where: name.hasSuffix) {
                XCTAssertGreaterThan(ms, 0, name)
            }
            if name.contains("folded") || name.hasSuffix("relu") { XCTAssertEqual(ms, 0, name) }
            XCTAssertEqual(row["backward_ms"] as? Double, 0, name)
        }
        let layerMs = layers.reduce(0.0) { $0 + ($1["forward_ms"] as! Double) }
        let steps = try XCTUnwrap(d["step_milliseconds"] as? [Double])
        XCTAssertLessThanOrEqual(layerMs, steps.reduce(0, +) / Double(steps.count), "the layers are inside the step")
        XCTAssertNil(d["phases"], "inference has no training phases")
    }

    /// Under `mpirun -np 2`: the job's aggregate, rank 0's parts adding up to its step, and the
    /// two all-reduce shares in order.
    func testTwoRanksReportTheAggregateAndBothShares() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let r = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "2", Repo.binary, "bench",
                                        "--model", "ref", "--batch-size", "16", "--steps", "3", "--warmup", "1",
                                        "--threads", "1", "--profile", "--json"],
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let d = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(d["world_size"] as? Int, 2)
        XCTAssertEqual(d["bn_sync"] as? String, "global")
        let most = try XCTUnwrap(d["all_reduce_share"] as? Double), least = try XCTUnwrap(d["all_reduce_share_least"] as? Double)
        XCTAssertGreaterThan(least, 0, "two ranks exchange something")
        XCTAssertLessThanOrEqual(least, most)
        XCTAssertLessThan(most, 1)
        try assertPartsAddUp(d)   // rank 0's
    }

    /// Ranks started with different bench settings (another micro-batch size would cut the
    /// batch differently) all stop at once with one line saying what differs.
    func testRanksWithDifferentSettingsStopTogether() throws {
        func rank(_ micro: String) -> [String] {
            [Repo.binary, "bench", "--model", "seed", "--steps", "2", "--warmup", "0", "--threads", "1", "--micro-batch", micro]
        }
        try WorldSizeTests.assertRanksRefused(rank("16"), rank("8"),
                                              saying: "rank 1 was started with different bench settings than rank 0",
                                              "micro-batch 8' vs 'model seed")
    }
}
