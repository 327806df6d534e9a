import Engine
import Foundation
import Hashing
import Training
import XCTest

/// Crafted checkpoints: a table that lies about where tensors are, hostile training-state
/// values, non-finite weights. Each is refused with one line naming the file and the fault.
final class CheckpointIntegrityTests: XCTestCase {
    /// A fresh step checkpoint of the seed model with distinct values everywhere, so any swap
    /// changes what would be restored.
    func makeCheckpoint() throws -> SafeTensorsFile {
        let model = try Model(spec: try ModelSpec.load("seed"))
        model.initialize(seed: 7)
        let adam = Adam(parameterCount: model.parameterCount, config: AdamConfig())
        for i in 0..<model.parameterCount { adam.m.pointer[i] = Float(i) * 1e-6; adam.v.pointer[i] = 1 + Float(i) * 1e-6 }
        adam.step = 3
        var state = TrainingState(config: TrainConfig(model: model.spec))
        state.epoch = 1; state.stepInEpoch = 2; state.globalStep = 9
        return Checkpoint(model: model, adam: adam, state: state).file
    }

    /// Recomputes the two hashes older builds checked (data, metadata), so that only the
    /// header hash can tell a crafted table from the original.
    func resealOldHashes(_ f: inout SafeTensorsFile) {
        f.metadata["data_sha256"] = SHA256.hex(f.data.withUnsafeBytes { SHA256.hash($0) })
        var h = SHA256()
        for key in f.metadata.keys.sorted() where key != "metadata_sha256" {
            h.update(Array(key.utf8) + [0] + Array(f.metadata[key]!.utf8) + [0])
        }
        f.metadata["metadata_sha256"] = SHA256.hex(h.finalize())
    }

    func write(_ f: SafeTensorsFile, _ name: String) throws -> String {
        let path = temporaryDirectory(self) + "/" + name
        try Data(f.serialized()).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Asserts that reading `path` fails with one line naming the file and containing `needle`.
    func assertRefused(_ path: String, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Checkpoint.read(path: path), file: file, line: line) { error in
            let m = "\(error)"
            XCTAssertTrue(m.hasPrefix(path + ": ") && m.contains(needle), m, file: file, line: line)
            XCTAssertFalse(m.contains("\n"), m, file: file, line: line)
        }
    }

    func testFreshCheckpointStatesAndPassesAllThreeHashes() throws {
        let f = try makeCheckpoint()
        for key in ["data_sha256", "header_sha256", "metadata_sha256"] {
            XCTAssertEqual(f.metadata[key]?.count, 64, key)
        }
        let path = try write(f, "good.safetensors")
        let i = try Tool.inspect(path: path)
        XCTAssertEqual(i.hashes.map(\.name), ["header_sha256", "data_sha256", "metadata_sha256"])
        XCTAssertTrue(i.hashes[0].covers.contains("tensor table"), i.hashes[0].covers)
        XCTAssertEqual(i.hashes[0].value, f.metadata["header_sha256"])
    }

    func testSwappedOffsetsOfSameShapeTensorsAreRefused() throws {
        var f = try makeCheckpoint()
        let weights = f.entries.indices.filter { !f.entries[$0].name.hasPrefix("adam.") }
        let pair = try XCTUnwrap(weights.lazy.compactMap { a in
            weights.first { b in b > a && f.entries[b].shape == f.entries[a].shape }.map { (a, $0) }
        }.first, "the seed model has two tensors of one shape")
        XCTAssertNotEqual(f.values(f.entries[pair.0]), f.values(f.entries[pair.1]))
        (f.entries[pair.0].range, f.entries[pair.1].range) = (f.entries[pair.1].range, f.entries[pair.0].range)
        resealOldHashes(&f)
        let path = try write(f, "swapped.safetensors")
        assertRefused(path, "header (tensor table and metadata) SHA-256")
    }

    func testSwappedAdamMomentsOfEveryLayerAreRefused() throws {
        var f = try makeCheckpoint()
        var swapped = 0
        for i in f.entries.indices where f.entries[i].name.hasPrefix("adam.m.") {
            let j = try XCTUnwrap(f.entries.firstIndex { $0.name == "adam.v." + f.entries[i].name.dropFirst(7) })
            (f.entries[i].range, f.entries[j].range) = (f.entries[j].range, f.entries[i].range)
            swapped += 1
        }
        XCTAssertGreaterThan(swapped, 2)
        resealOldHashes(&f)
        assertRefused(try write(f, "adam-swapped.safetensors"), "header (tensor table and metadata) SHA-256")
    }

    /// Files written before `header_sha256` resume with the checks they had, and `inspect`
    /// says the table is not covered.
    func testVersion1FileWithoutHeaderHashStillReads() throws {
        var f = try makeCheckpoint()
        f.metadata["header_sha256"] = nil
        resealOldHashes(&f)
        let path = try write(f, "old.safetensors")
        XCTAssertNoThrow(try Checkpoint.read(path: path))
        let i = try Tool.inspect(path: path)
        XCTAssertEqual(i.hashes.first?.value, "")
        XCTAssertTrue(i.hashes.first?.covers.contains("not covered") == true)
        // But removing the key from a new file without resealing breaks the metadata hash.
        var stripped = try makeCheckpoint()
        stripped.metadata["header_sha256"] = nil
        assertRefused(try write(stripped, "stripped.safetensors"), "metadata SHA-256")
    }

    func testMetadataMismatchIsWordedAsMetadata() throws {
        var f = try makeCheckpoint()
        f.metadata["model"]! += " "
        assertRefused(try write(f, "meta.safetensors"), "metadata SHA-256 is")
    }

    /// Hash-valid checkpoints whose training state no run could have written.
    func testHostileStateValuesAreRefused() throws {
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("epoch-max", { $0["epoch"] = Int.max }, "epoch is 9223372036854775807, outside 0...2147483647"),
            ("negative-step", { $0["stepInEpoch"] = -1 }, "stepInEpoch is -1"),
            ("negative-global", { $0["globalStep"] = -5 }, "globalStep is -5"),
            ("adam-step-max", { $0["adamStep"] = Int.max }, "adamStep is"),
            ("threads-zero", { $0["threads"] = 0 }, "threads is 0"),
            ("normalizer-rgb", { $0["normalizer"] = ["mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]] },
             "normalizer has 3 means and 3 standard deviations for a model input of 1 channel (it needs one of each)"),
            ("normalizer-zero-std", { $0["normalizer"] = ["mean": [0.1], "std": [0]] }, "normalizer has mean [0.1] and std [0.0]; each mean must be finite and each std finite and > 0"),
            ("batch-zero", { var c = $0["config"] as! [String: Any]; c["batchSize"] = 0; $0["config"] = c }, "config.batchSize is 0"),
            ("history-epoch", { $0["history"] = [["epoch": Int.min, "globalStep": 1, "trainLoss": 1, "trainAccuracy": 0.5,
                                                   "testLoss": 1, "testAccuracy": 0.5, "learningRate": 0.001, "seconds": 1]] },
             "history[0].epoch is"),
        ]
        for (name, edit, needle) in cases {
            var f = try makeCheckpoint()
            var state = try JSONSerialization.jsonObject(with: Data(f.metadata["state"]!.utf8)) as! [String: Any]
            edit(&state)
            f.metadata["state"] = String(decoding: try JSONSerialization.data(withJSONObject: state), as: UTF8.self)
            Checkpoint.seal(&f)
            let path = try write(f, name + ".safetensors")
            assertRefused(path, "impossible training state: " + needle)
            if name == "epoch-max" || name == "normalizer-rgb" {
                // The commands that trapped on these now print the line and exit 1.
                for args in [["inspect", path], ["inspect", path, "--json"], ["evaluate", "--checkpoint", path]] {
                    let r = try runProcess(Repo.binary, args, timeout: 60)
                    XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
                    XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
                    XCTAssertTrue(r.stderr.contains(needle), r.stderr)
                }
            }
        }
    }

    /// Plain `inspect` and `inspect --json` agree: non-finite weights are not a valid checkpoint.
    func testNonFiniteWeightsAreInvalidInBothInspectForms() throws {
        for bad in [Float.nan, .infinity, -.infinity] {
            var f = try makeCheckpoint()
            let e = try XCTUnwrap(f.entry("layers.0.weight"))
            withUnsafeBytes(of: bad) { f.data.replaceSubrange(e.range.lowerBound + 8..<e.range.lowerBound + 12, with: $0) }
            XCTAssertFalse(Checkpoint.allFinite(f))
            Checkpoint.seal(&f)
            let path = try write(f, "nonfinite.safetensors")
            assertRefused(path, "non-finite values (nan or inf) in layers.0.weight")
            let plain = try runProcess(Repo.binary, ["inspect", path], timeout: 60)
            let json = try runProcess(Repo.binary, ["inspect", path, "--json"], timeout: 60)
            XCTAssertEqual(plain.status, 1, plain.stdout)
            XCTAssertEqual(json.status, 1, json.stdout)
            let out = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            XCTAssertEqual(out?["valid"] as? Bool, false, json.stdout)
        }
        XCTAssertTrue(Checkpoint.allFinite(try makeCheckpoint()))
    }

    /// A FIFO hung every command that reads a checkpoint; /dev/zero was read without limit; a
    /// folder was "9223372036854775807 bytes"; a 1 GiB junk file was read whole before its
    /// 8-byte header was checked. Each is now one line, at once.
    func testFilesThatAreNotCheckpointsAreRefusedAtOnce() throws {
        let dir = temporaryDirectory(self)
        let fifo = dir + "/pipe.safetensors"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let junk = dir + "/junk.safetensors"
        XCTAssertTrue(FileManager.default.createFile(atPath: junk, contents: Data(repeating: 0x41, count: 64)))
        XCTAssertEqual(truncate(junk, 1 << 30), 0)   // sparse: 1 GiB without the disk space
        let image = dir + "/digit.pgm"
        try Data("P5 2 2 255\n\u{0}\u{1}\u{2}\u{3}".utf8).write(to: URL(fileURLWithPath: image))
        let cases = [(fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (dir, "it is a folder"),
                     (junk, "header length 4702111234474983745 is not plausible")]
        for (path, reason) in cases {
            let commands = [["inspect", path], ["inspect", path, "--json"], ["evaluate", "--checkpoint", path],
                            ["predict", "--checkpoint", path, image],
                            ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "1", "--train-limit", "500",
                             "--run-dir", dir + "/run", "--resume-from", path]]
            for args in commands {
                let start = Date()
                let r = try runProcess(Repo.binary, args, timeout: 60)
                XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
                XCTAssertLessThan(Date().timeIntervalSince(start), args[0] == "train" ? 30 : 5, "\(args)")
                let lines = r.stderr.split(separator: "\n")
                XCTAssertEqual(lines.count, 1, "\(args): \(r.stderr)")
                XCTAssertTrue(r.stderr.contains(path) && r.stderr.contains(reason), "\(args): \(r.stderr)")
            }
        }
    }
}
