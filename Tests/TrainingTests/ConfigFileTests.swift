import Foundation
import XCTest

/// `train --config FILE` and `RUN_DIR/config.json`: a run repeated from its config.json trains
/// the same weights; the command line wins over the file; a bad file is one line, exit 64.
final class ConfigFileTests: XCTestCase {
    func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }

    func testRunRepeatsFromItsConfigJSON() throws {
        let base = temporaryDirectory(self)
        let first = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "2", "--train-limit", "2000",
                                                 "--validation-split", "500", "--test-limit", "500", "--lr-schedule", "cosine:0.1",
                                                 "--augment", "standard", "--shift", "0.05", "--standardize", "--seed", "7",
                                                 "--run-dir", base + "/a", "--quiet"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let config = try json(base + "/a/config.json")
        XCTAssertEqual(config["lr"] as? Double, 0.001, "the model's rate, resolved")
        XCTAssertEqual(config["batch-size"] as? Int, 32, "the model's batch size, resolved")
        XCTAssertEqual(config["shift"] as? Double, 0.05)
        XCTAssertEqual(config["standardize"] as? Bool, true)
        XCTAssertNil(config["run-dir"], "the run dir is where a repeat writes, not a setting")

        let again = try runProcess(Repo.binary, ["train", "--config", base + "/a/config.json", "--run-dir", base + "/b", "--quiet"])
        XCTAssertEqual(again.status, 0, again.stderr)
        let a = try json(base + "/a/summary.json"), b = try json(base + "/b/summary.json")
        XCTAssertNotNil(a["weights_sha256"] as? String)
        XCTAssertEqual(b["weights_sha256"] as? String, a["weights_sha256"] as? String)
        XCTAssertEqual(try String(contentsOfFile: base + "/b/config.json", encoding: .utf8),
                       try String(contentsOfFile: base + "/a/config.json", encoding: .utf8))

        // The same settings as TOML lines train the same weights.
        let toml = """
            # run a, by hand
            model = "seed"
            data = "\(Repo.mnist)"   # the test data
            epochs = 2
            train-limit = 2_000
            validation-split = 500
            test-limit = 500
            lr-schedule = "cosine:0.1"
            augment = "standard"
            shift = 0.05
            standardize = true
            seed = 7
            """
        try Data(toml.utf8).write(to: URL(fileURLWithPath: base + "/a.toml"))
        let fromTOML = try runProcess(Repo.binary, ["train", "--config", base + "/a.toml", "--run-dir", base + "/t", "--quiet"])
        XCTAssertEqual(fromTOML.status, 0, fromTOML.stderr)
        XCTAssertEqual(try json(base + "/t/summary.json")["weights_sha256"] as? String, a["weights_sha256"] as? String)

        // The command line wins over the file.
        let other = try runProcess(Repo.binary, ["train", "--config", base + "/a/config.json", "--epochs", "1", "--seed", "8",
                                                 "--run-dir", base + "/c", "--quiet"])
        XCTAssertEqual(other.status, 0, other.stderr)
        let c = try json(base + "/c/config.json")
        XCTAssertEqual(c["epochs"] as? Int, 1)
        XCTAssertEqual(c["seed"] as? Int, 8)
        XCTAssertEqual(c["lr-schedule"] as? String, "cosine:0.1")
        XCTAssertEqual(try json(base + "/c/summary.json")["epochs_run"] as? Int, 1)
    }

    func testBadFilesAreOneLineAndWriteNothing() throws {
        let base = temporaryDirectory(self)
        let cases: [(String, String)] = [
            (#"{"epoch": 2}"#, "key 'epoch' is not a flag of train; did you mean 'epochs'?"),
            (#"{"epochs": 0}"#, "key 'epochs': --epochs must be in 1...1000000, got 0"),
            (#"{"lr-schedule": "plateau:2:1"}"#, "key 'lr-schedule': learning-rate schedule 'plateau:2:1': the factor 2 must be in (0, 1)"),
            (#"{"standardize": 1}"#, "key 'standardize' is a switch: give true or false"),
            (#"{"augment": ["standard"]}"#, "key 'augment' must be a string, a number or true/false"),
            (#"{"config": "x.json"}"#, "key 'config' is not a setting of train"),
            (#"["epochs", 2]"#, "not a JSON object of flag names and values"),
            (#"{"lr-schedule": "plateau:0.5:2", "validation-split": 0}"#, "--lr-schedule plateau watches val_loss and needs a validation set"),
        ]
        let tomlCases: [(String, String)] = [
            ("epochs = [1]", "line 1: value '[1]' of key 'epochs' is not a string, number or true/false"),
            ("# ok\nmodel = \"seed", "line 2: unterminated string"),
            ("[train]", "line 1: not key = value (this TOML subset has no tables or arrays)"),
            ("epochs = 0", "key 'epochs': --epochs must be in 1...1000000, got 0"),
        ]
        let all = cases.map { (text: $0.0, message: $0.1, ext: "json") } + tomlCases.map { (text: $0.0, message: $0.1, ext: "toml") }
        for (i, (text, message, ext)) in all.enumerated() {
            let path = base + "/bad\(i).\(ext)"
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            let r = try runProcess(Repo.binary, ["train", "--config", path, "--data", Repo.mnist, "--run-dir", base + "/run\(i)"])
            XCTAssertEqual(r.status, 64, text)
            XCTAssertTrue(r.stderr.hasPrefix("error: --config \(path): \(message)"), "\(text): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/run\(i)"), "\(text): the run dir was created")
        }
        let missing = try runProcess(Repo.binary, ["train", "--config", base + "/none.json"])
        XCTAssertEqual(missing.status, 64)
        XCTAssertTrue(missing.stderr.contains("--config \(base)/none.json: no such file"), missing.stderr)
    }
}
