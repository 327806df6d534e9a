import Engine
import Foundation
import XCTest

/// What `summary`, `inspect` and `evaluate` print, text and JSON, agree with each other and
/// say what their figures are.
final class InspectSummaryTests: XCTestCase {
    func json(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    /// Every key at any depth, for the snake_case check.
    func keys(_ value: Any) -> [String] {
        if let d = value as? [String: Any] { return d.keys + d.values.flatMap { keys($0) } }
        if let a = value as? [Any] { return a.flatMap { keys($0) } }
        return []
    }

    /// `summary --json` keys are snake_case, as every other JSON output's; the memory estimate
    /// is for the batch `train` would use unless `--batch-size` is given.
    func testSummaryJSONAndBatch() throws {
        let ref = try runProcess(Repo.builtBinary, ["summary", "--model", "ref", "--json"])
        XCTAssertEqual(ref.status, 0, ref.stderr)
        let r = try json(ref.stdout)
        let all = keys(r)
        XCTAssertTrue(all.contains("output_shape") && all.contains("trainable_parameters"), "\(all)")
        XCTAssertEqual(all.filter { $0 != $0.lowercased() }, [], "camelCase keys")
        XCTAssertEqual(r["batch_size"] as? Int, 128, "ref trains at 128")

        let seed = try runProcess(Repo.builtBinary, ["summary", "--model", "seed"])
        XCTAssertTrue(seed.stdout.contains("Training a batch of 32:"), seed.stdout)
        let text = try runProcess(Repo.builtBinary, ["summary", "--model", "ref"])
        XCTAssertTrue(text.stdout.contains("Training a batch of 128:"), text.stdout)
        let given = try runProcess(Repo.builtBinary, ["summary", "--model", "ref", "--batch-size", "7", "--json"])
        XCTAssertEqual(try json(given.stdout)["batch_size"] as? Int, 7)
        // The estimate follows the batch: 128 needs more than 7.
        XCTAssertGreaterThan(try XCTUnwrap(r["training_bytes"] as? Int), try XCTUnwrap(try json(given.stdout)["training_bytes"] as? Int))
    }

    /// A model file without `name` is named after the file; one with a name keeps it.
    func testModelNameDefaultsToTheFileName() throws {
        let dir = temporaryDirectory(self)
        let layers = #""input": [28, 28, 1], "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]"#
        try "{\(layers)}".write(toFile: dir + "/tiny-mlp.json", atomically: true, encoding: .utf8)
        let unnamed = try runProcess(Repo.builtBinary, ["summary", "--model", dir + "/tiny-mlp.json"])
        XCTAssertEqual(unnamed.status, 0, unnamed.stderr)
        XCTAssertTrue(unnamed.stdout.hasPrefix("Model: \"tiny-mlp\"\n"), unnamed.stdout)
        try "{\"name\": \"mine\", \(layers)}".write(toFile: dir + "/named.json", atomically: true, encoding: .utf8)
        let named = try runProcess(Repo.builtBinary, ["summary", "--model", dir + "/named.json"])
        XCTAssertTrue(named.stdout.hasPrefix("Model: \"mine\"\n"), named.stdout)
        // A checkpoint's model (decoded with no default) must still name itself.
        XCTAssertThrowsError(try ModelSpec.decode(Data("{\(layers)}".utf8), source: "x.safetensors model")) { error in
            XCTAssertTrue("\(error)".contains("missing 'name'"), "\(error)")
        }
    }

    /// `inspect`: the next epoch is the same number in text and JSON; a checkpoint without
    /// optimizer state says so instead of "Adam step 0"; tensors carry the summary's layer
    /// names; "1 epoch", not "1 epochs". `evaluate` labels its per-class figures as recall.
    func testInspectAndEvaluateSayWhatTheyMean() throws {
        let dir = temporaryDirectory(self)
        let t = try runProcess(Repo.builtBinary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "5",
                                                  "--checkpoint-every", "3", "--train-limit", "500", "--validation-split", "100",
                                                  "--test-limit", "100", "--run-dir", dir])
        XCTAssertEqual(t.status, 0, t.stderr)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")
        let step = try XCTUnwrap(names.sorted().first { $0.hasPrefix("step-") }, "\(names)")
        let stepNumber = try XCTUnwrap(Int(step.dropFirst(5).prefix { $0.isNumber }), step)

        for (name, resumable) in [(step, true), ("final.safetensors", false)] {
            let path = dir + "/checkpoints/" + name
            let text = try runProcess(Repo.builtBinary, ["inspect", path])
            let j = try runProcess(Repo.builtBinary, ["inspect", path, "--json"])
            XCTAssertEqual(text.status, 0, text.stderr)
            let out = try json(j.stdout)
            let nextEpoch = try XCTUnwrap(out["next_epoch"] as? Int, j.stdout)
            XCTAssertTrue(text.stdout.contains("next: epoch \(nextEpoch), step \(try XCTUnwrap(out["next_step_in_epoch"] as? Int))"), text.stdout)
            XCTAssertNil(out["epoch"], "the ambiguous 0-based field is gone")
            XCTAssertEqual(out["optimizer_state"] as? Bool, resumable, name)
            if resumable {
                XCTAssertEqual(out["adam_step"] as? Int, stepNumber, j.stdout)
                XCTAssertTrue(text.stdout.contains("Adam step \(stepNumber)"), text.stdout)
            } else {
                XCTAssertTrue(out["adam_step"] is NSNull, j.stdout)
                XCTAssertFalse(text.stdout.contains("Adam step"), text.stdout)
                XCTAssertTrue(text.stdout.contains("no optimizer state"), text.stdout)
            }
            XCTAssertTrue(text.stdout.contains("layers.0.weight (conv2d)"), text.stdout)
            XCTAssertTrue(text.stdout.contains("layers.3.weight (conv2d_1)"), text.stdout)
            let tensors = try XCTUnwrap(out["tensors"] as? [[String: Any]])
            let first = try XCTUnwrap(tensors.first { $0["name"] as? String == "layers.0.weight" })
            XCTAssertEqual(first["layer"] as? String, "conv2d")
            XCTAssertFalse(text.stdout.contains(" 1 epochs"), text.stdout)
        }

        let e = try runProcess(Repo.builtBinary, ["evaluate", "--checkpoint", dir + "/checkpoints/final.safetensors", "--data", Repo.mnist])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(e.stdout.contains("\nper-class recall"), e.stdout)
    }
}
