import Foundation
import Training
import XCTest

/// Checkpoints, exact resume after SIGKILL and SIGTERM, refused checkpoints, early stopping.
final class ResumeTests: XCTestCase {
    /// A run of `ref` small enough for tests: 60 steps per epoch, 2 epochs.
    func trainArgs(_ dir: String, _ extra: [String] = []) -> [String] {
        ["train", "--model", "ref", "--data", Repo.mnist, "--epochs", "2", "--batch-size", "50", "--train-limit", "3000",
         "--validation-split", "500", "--test-limit", "1000", "--threads", "1", "--checkpoint-every", "10",
         "--keep", "100", "--run-dir", dir, "--quiet"] + extra
    }

    func summary(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/summary.json"))) as! [String: Any]
    }

    /// Starts training, waits for the checkpoint of `step` to appear, then sends `signal`.
    func interrupt(_ dir: String, atStep step: Int, signal: Int32) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Repo.binary)
        p.arguments = trainArgs(dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let target = dir + "/checkpoints/" + String(format: "step-%08d.safetensors", step)
        let deadline = Date().addingTimeInterval(300)
        while !FileManager.default.fileExists(atPath: target) && p.isRunning && Date() < deadline { usleep(2_000) }
        XCTAssertTrue(p.isRunning, "the run ended before step \(step)")
        kill(p.processIdentifier, signal)
        p.waitUntilExit()
        return p.terminationStatus
    }

    func testResumeAfterSIGKILLIsBitwiseExact() throws {
        let base = temporaryDirectory(self)
        let whole = try runProcess(Repo.binary, trainArgs(base + "/whole"))
        XCTAssertEqual(whole.status, 0, whole.stderr)
        // Killed mid-epoch 2 (steps 60…119), after its step-80 checkpoint.
        _ = try interrupt(base + "/cut", atStep: 80, signal: SIGKILL)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/cut/summary.json"))
        let resumed = try runProcess(Repo.binary, trainArgs(base + "/cut", ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try summary(base + "/whole"), b = try summary(base + "/cut")
        XCTAssertEqual(b["weights_sha256"] as? String, a["weights_sha256"] as? String, "resumed run ends with other weights")
        XCTAssertEqual(b["global_steps"] as? Int, 120)
        XCTAssertEqual(b["test_loss"] as? Double, a["test_loss"] as? Double)
        let csv = try String(contentsOfFile: base + "/cut/metrics.csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 3, "one header and one row per epoch: \(csv)")
    }

    func testSIGTERMCheckpointsAndResumesExactly() throws {
        let base = temporaryDirectory(self)
        let whole = try runProcess(Repo.binary, trainArgs(base + "/whole"))
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let status = try interrupt(base + "/term", atStep: 30, signal: SIGTERM)
        XCTAssertEqual(status, 143, "preempted runs exit 143")
        let resumed = try runProcess(Repo.binary, trainArgs(base + "/term", ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try summary(base + "/term")["weights_sha256"] as? String,
                       try summary(base + "/whole")["weights_sha256"] as? String)
    }

    /// Everything that evolves with the step resumes exactly too: the schedule with warm-up,
    /// AdamW, label smoothing, the weight average and augmentation.
    func testResumeWithScheduleAndWeightAverageIsBitwiseExact() throws {
        let base = temporaryDirectory(self)
        let extra = ["--lr-schedule", "cosine:0.1", "--warmup-steps", "20", "--weight-decay", "1e-4", "--label-smoothing", "0.1",
                     "--ema-decay", "0.99", "--augment", "standard"]
        func args(_ dir: String, _ more: [String] = []) -> [String] {
            ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "2", "--train-limit", "6400", "--validation-split", "500",
             "--test-limit", "500", "--checkpoint-every", "50", "--keep", "100", "--run-dir", dir, "--quiet"] + extra + more
        }
        let whole = try runProcess(Repo.binary, args(base + "/whole"))
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let part = try runProcess(Repo.binary, args(base + "/part", ["--max-steps", "250"]))
        XCTAssertEqual(part.status, 0, part.stderr)
        // Continue from the mid-epoch-2 checkpoint (epoch 1 has 200 steps) without the step cap.
        let resumed = try runProcess(Repo.binary, args(base + "/part", ["--resume-from", base + "/part/checkpoints/step-00000250.safetensors"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let a = try summary(base + "/whole"), b = try summary(base + "/part")
        XCTAssertEqual(b["weights_sha256"] as? String, a["weights_sha256"] as? String)
        XCTAssertEqual(b["global_steps"] as? Int, 400)
    }

    /// Early stopping's state (best value, its epoch, epochs waited) lives in the checkpoint: a run
    /// cut after epoch 2 and resumed stops where the uninterrupted one does. Stale temporary
    /// files of a killed write are removed at start.
    func testEarlyStoppingStateSurvivesResume() throws {
        let base = temporaryDirectory(self)
        func args(_ dir: String, _ more: [String] = []) -> [String] {
            ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "6", "--train-limit", "3008", "--validation-split", "1000",
             "--test-limit", "500", "--patience", "2", "--min-delta", "10", "--run-dir", dir, "--quiet"] + more
        }
        let whole = try runProcess(Repo.binary, args(base + "/whole"))
        XCTAssertEqual(whole.status, 0, whole.stderr)
        XCTAssertEqual(try summary(base + "/whole")["epochs_run"] as? Int, 3)
        let part = try runProcess(Repo.binary, args(base + "/part", ["--max-steps", "188"]))   // 94 steps per epoch
        XCTAssertEqual(part.status, 0, part.stderr)
        XCTAssertEqual(try summary(base + "/part")["stopped_early"] as? Bool, false)
        let stale = base + "/part/checkpoints/.tmp-step-00000190.safetensors.4242"
        XCTAssertTrue(FileManager.default.createFile(atPath: stale, contents: Data("half a checkpoint".utf8)), "cannot create \(stale)")
        let resumed = try runProcess(Repo.binary, args(base + "/part", ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale), "stale temporary file left behind")
        let a = try summary(base + "/whole"), b = try summary(base + "/part")
        XCTAssertEqual(b["epochs_run"] as? Int, 3)
        XCTAssertEqual(b["stopped_early"] as? Bool, true)
        XCTAssertEqual(b["best_epoch"] as? Int, 1)
        XCTAssertEqual(b["weights_sha256"] as? String, a["weights_sha256"] as? String)
    }

    /// `--lr-schedule plateau`'s state (best val_loss, epochs waited, factor) lives in the
    /// checkpoint: a run stopped mid-epoch 3, after its first cut of the rate, and resumed ends
    /// with the uninterrupted run's weights and rates. Without a validation set it is refused.
    func testPlateauScheduleResumesExactly() throws {
        let base = temporaryDirectory(self)
        func args(_ dir: String, _ more: [String] = []) -> [String] {
            ["train", "--model", "seed", "--data", Repo.mnist, "--epochs", "5", "--train-limit", "3008", "--validation-split", "1000",
             "--test-limit", "500", "--lr", "0.02", "--lr-schedule", "plateau:0.5:1", "--run-dir", dir, "--quiet"] + more
        }
        let whole = try runProcess(Repo.binary, args(base + "/whole"))
        XCTAssertEqual(whole.status, 0, whole.stderr)
        func rates(_ dir: String) throws -> [String] {
            let csv = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8).split(separator: "\n")
            let column = try XCTUnwrap(csv.first?.split(separator: ",").firstIndex(of: "learning_rate"))
            return csv.dropFirst().map { String($0.split(separator: ",", omittingEmptySubsequences: false)[column]) }
        }
        // val_loss rises in epochs 2 and 4 (measured), so the rate halves after each.
        XCTAssertEqual(try rates(base + "/whole"), ["0.02", "0.02", "0.01", "0.01", "0.005"])
        let part = try runProcess(Repo.binary, args(base + "/part", ["--max-steps", "230"]))   // 94 steps per epoch
        XCTAssertEqual(part.status, 0, part.stderr)
        let resumed = try runProcess(Repo.binary, args(base + "/part", ["--resume"]))
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try summary(base + "/part")["weights_sha256"] as? String, try summary(base + "/whole")["weights_sha256"] as? String)
        XCTAssertEqual(try rates(base + "/part"), try rates(base + "/whole"))

        let refused = try runProcess(Repo.binary, args(base + "/noval", ["--validation-split", "0"]))
        XCTAssertEqual(refused.status, 64)
        XCTAssertTrue(refused.stderr.contains("--lr-schedule plateau watches val_loss and needs a validation set"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: base + "/noval"))
    }

    func testResumeWithNoCheckpointStartsFresh() throws {
        let dir = temporaryDirectory(self) + "/fresh"
        let r = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "5",
                                             "--train-limit", "500", "--validation-split", "100", "--test-limit", "100",
                                             "--run-dir", dir, "--resume"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("starting fresh"), r.stdout)
    }

    /// Each kind of bad checkpoint is refused with one line naming the file and why; the run
    /// dir is left as it was.
    func testBadCheckpointsAreRefused() throws {
        let base = temporaryDirectory(self)
        let good = base + "/good"
        let r = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "5",
                                             "--train-limit", "500", "--validation-split", "100", "--test-limit", "100",
                                             "--run-dir", good])
        XCTAssertEqual(r.status, 0, r.stderr)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good + "/checkpoints/final.safetensors"))
        var flipped = bytes
        flipped[flipped.count - 10] ^= 0xFF
        let cases: [(String, Data, String)] = [
            ("truncated", bytes.prefix(bytes.count - 100), "truncated"),
            ("flipped", flipped, "fails its checksum"),
            ("garbage", Data("hello, not a checkpoint".utf8), "not a distcnn checkpoint"),
        ]
        for (name, data, needle) in cases {
            let path = base + "/\(name).safetensors"
            try data.write(to: URL(fileURLWithPath: path))
            let run = base + "/run-\(name)"
            let t = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "5",
                                                 "--train-limit", "500", "--run-dir", run, "--resume-from", path])
            XCTAssertEqual(t.status, 1, name)
            XCTAssertTrue(t.stderr.contains(needle) && t.stderr.contains(path), "\(name): \(t.stderr)")
            XCTAssertEqual(t.stderr.split(separator: "\n").count, 1, t.stderr)
            XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")) ?? [], [],
                           "\(name): the run dir gained checkpoints")
            let i = try runProcess(Repo.binary, ["inspect", path])
            XCTAssertEqual(i.status, 1, "inspect must call \(name) invalid")
        }
        // The run's result is not a point to resume from.
        let final = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "5",
                                                 "--train-limit", "500", "--validation-split", "100", "--test-limit", "100",
                                                 "--run-dir", base + "/run-final", "--resume-from", good + "/checkpoints/final.safetensors"])
        XCTAssertEqual(final.status, 1)
        XCTAssertTrue(final.stderr.contains("holds no optimizer state"), final.stderr)
        // A valid checkpoint of another model.
        let other = try runProcess(Repo.binary, ["train", "--model", "ref", "--data", Repo.mnist, "--max-steps", "1",
                                                 "--train-limit", "500", "--resume-from", good + "/checkpoints/final.safetensors",
                                                 "--run-dir", base + "/run-other"])
        XCTAssertEqual(other.status, 1)
        XCTAssertTrue(other.stderr.contains("belongs to another model"), other.stderr)
    }

    /// Keras semantics, decided on rank 0 and broadcast: with -np 3 every rank stops after the
    /// same epoch, and the final weights are the best epoch's.
    func testEarlyStoppingAcrossThreeRanks() throws {
        let mpirun = try XCTUnwrap(WorldSizeTests.mpirun)
        let dir = temporaryDirectory(self) + "/es"
        // min-delta 10: no epoch after the first can improve on it, so patience 1 stops after epoch 2.
        let r = try runProcess(mpirun, ["--oversubscribe", "--bind-to", "none", "-np", "3", Repo.binary, "train", "--model", "seed",
                                        "--data", Repo.mnist, "--epochs", "6", "--train-limit", "3000", "--validation-split", "1000",
                                        "--test-limit", "1000", "--patience", "1", "--min-delta", "10", "--threads", "1",
                                        "--run-dir", dir, "--quiet"],
                               environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let s = try summary(dir)
        XCTAssertEqual(s["epochs_run"] as? Int, 2)
        XCTAssertEqual(s["stopped_early"] as? Bool, true)
        XCTAssertEqual(s["best_epoch"] as? Int, 1)
        let best = try SafeTensorsFile.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/best.safetensors"))))
        let final = try SafeTensorsFile.parse([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoints/final.safetensors"))))
        for e in best.entries {
            XCTAssertEqual(final.values(final.entry(e.name)!), best.values(e), "final \(e.name) is not the best epoch's")
        }
    }

    /// The files open with Python's safetensors and numpy, and agree with `inspect`.
    func testPythonReadsCheckpoints() throws {
        let dir = temporaryDirectory(self) + "/py"
        let r = try runProcess(Repo.binary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "3",
                                             "--train-limit", "500", "--validation-split", "100", "--test-limit", "100",
                                             "--run-dir", dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        let file = dir + "/checkpoints/final.safetensors"
        let i = try runProcess(Repo.binary, ["inspect", file, "--json"])
        XCTAssertEqual(i.status, 0, i.stderr)
        let info = try JSONSerialization.jsonObject(with: Data(i.stdout.utf8)) as! [String: Any]
        let tensors = info["tensors"] as! [[String: Any]]
        let w = try XCTUnwrap(tensors.first { $0["name"] as? String == "layers.3.weight" })
        let script = """
            import json, sys
            from safetensors.numpy import load_file
            from safetensors import safe_open
            t = load_file(sys.argv[1])
            meta = safe_open(sys.argv[1], "np").metadata()
            w = t["layers.3.weight"]
            print(json.dumps({"shape": list(w.shape), "first": float(w.flatten()[0]), "mean": float(w.astype("float64").mean()),
                              "format": meta["format"]}))
            """
        let py = try runProcess("/usr/bin/env", ["python3", "-c", script, file])
        guard py.status == 0 else {
            return XCTFail("python3 with safetensors and numpy is needed (scripts/test installs them in .build/python): \(py.stderr)")
        }
        let out = try JSONSerialization.jsonObject(with: Data(py.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(out["shape"] as? [Int], [10, 5, 3, 3])
        XCTAssertEqual(out["format"] as? String, "distcnn-checkpoint")
        XCTAssertEqual(out["first"] as! Double, w["first"] as! Double, accuracy: 0)
        XCTAssertEqual(out["mean"] as! Double, w["mean"] as! Double, accuracy: 1e-9)
    }
}
