import Engine
import Foundation
import Training
import XCTest

/// Our hand-written event files, read back by TensorBoard's own Python reader.
final class TensorBoardTests: XCTestCase {
    func testCRC32CheckValues() {
        let check = Array("123456789".utf8)
        XCTAssertEqual(CRC32.castagnoli.checksum(check), 0xE306_9283)
        XCTAssertEqual(CRC32.ieee.checksum(check), 0xCBF4_3926)
        XCTAssertEqual(CRC32.castagnoli.checksum([]), 0)
        // Split input continues the same CRC.
        XCTAssertEqual(CRC32.castagnoli.update(CRC32.castagnoli.checksum(check[..<4]), check[4...]), 0xE306_9283)
        // Masked values as tensorboard's masked_crc32c computes them.
        XCTAssertEqual(CRC32.masked(CRC32.castagnoli.checksum(check)), 0xC78A_B0E5)
        XCTAssertEqual(CRC32.masked(0), 0xA282_EAD8)
    }

    func testScalarsReadBackByTensorBoard() throws {
        let dir = temporaryDirectory(self) + "/tb"
        let w = try TensorBoardWriter(directory: dir)
        XCTAssertTrue(URL(fileURLWithPath: w.path).lastPathComponent.hasPrefix("events.out.tfevents."))
        w.scalar("loss", 0.5, step: 1)
        w.scalars([("loss", 0.25), ("accuracy", 0.875), ("tiny", 1e-7)], step: 2)
        w.scalar("accuracy", 0.1, step: 3, wallTime: 1_700_000_000.25)
        w.scalar("loss", -3.75, step: 1 << 40)
        try w.flush()
        w.scalar("after flush", 42, step: 7)
        try w.close()

        let read = try readWithTensorBoard([dir])[dir]!
        XCTAssertEqual(read.records, [6], "file_version + 5 scalar events")
        XCTAssertEqual(Set(read.scalars.keys), ["loss", "accuracy", "tiny", "after flush"])
        assertScalars(read.scalars["loss"], [(1, 0.5), (2, 0.25), (1 << 40, -3.75)])
        assertScalars(read.scalars["accuracy"], [(2, 0.875), (3, 0.1)])
        assertScalars(read.scalars["tiny"], [(2, 1e-7)])
        assertScalars(read.scalars["after flush"], [(7, 42)])
    }

    /// A requeued run starts a new event file at its checkpoint's step; TensorBoard must show
    /// the new attempt's values for the steps after it, and each step once.
    func testResumedLogReplacesTheLostAttempt() throws {
        let dir = temporaryDirectory(self) + "/tensorboard"
        let first = TensorBoardLog(directory: dir, globalStep: 0)
        for (i, step) in [10, 20, 30].enumerated() {
            try first.batch(step: step - 5, loss: 2, accuracy: 0.5)
            try first.epoch(metrics(epoch: i + 1, step: step, value: Double(i + 1)))
        }
        // Killed after step 30; the last checkpoint was at step 20.
        let second = TensorBoardLog(directory: dir, globalStep: 20)
        try second.batch(step: 25, loss: 1, accuracy: 0.75)
        try second.epoch(metrics(epoch: 3, step: 30, value: 30))
        try second.epoch(metrics(epoch: 4, step: 40, value: 40))

        let read = try readWithTensorBoard([dir + "/train", dir + "/validation", dir + "/test"])
        let train = read[dir + "/train"]!
        XCTAssertEqual(train.files.count, 2, "one event file per attempt: \(train.files)")
        assertScalars(train.scalars["epoch_loss"], [(10, 1), (20, 2), (30, 30), (40, 40)])
        assertScalars(train.scalars["epoch_accuracy"], [(10, 0.1), (20, 0.2), (30, 3), (40, 4)])
        assertScalars(train.scalars["epoch_learning_rate"], [(10, 1e-3), (20, 1e-3), (30, 1e-3), (40, 1e-3)])
        assertScalars(train.scalars["batch_loss"], [(5, 2), (15, 2), (25, 1)])
        assertScalars(read[dir + "/validation"]!.scalars["epoch_loss"], [(10, 1.5), (20, 2.5), (30, 30.5), (40, 40.5)])
        assertScalars(read[dir + "/test"]!.scalars["epoch_accuracy"], [(10, 0.3), (20, 0.6), (30, 9), (40, 12)])
    }

    /// A run's log: the hparams plugin's session (the settings, numbers as numbers, ended with
    /// success) in the log folder, a histogram of every weight tensor after each epoch under
    /// train/, batch points every `--log-every` steps, and the test set once, at the end.
    func testRunLogsHyperparametersAndWeightHistograms() throws {
        let (s, run) = try trainInProcess(try seedConfig(), ranks: 1, test: self) { $0.logEvery = 4 }
        let dir = run + "/tensorboard"
        let read = try readWithTensorBoard([dir, dir + "/train", dir + "/test"])
        let root = try XCTUnwrap(read[dir])
        XCTAssertEqual(root.endStatus, 1, "STATUS_SUCCESS")
        XCTAssertEqual(root.hparams["batch-size"] as? Double, 100)
        XCTAssertEqual(root.hparams["adam.beta2"] as? Double, 0.999)
        XCTAssertEqual(root.hparams["lr-schedule"] as? String, "constant")
        XCTAssertEqual(root.hparams["standardize"] as? Bool, false)
        XCTAssertEqual(root.hparams["model"] as? String, "seed")
        XCTAssertNil(root.hparams["run-dir"])

        let train = try XCTUnwrap(read[dir + "/train"])
        let model = try Model(spec: try ModelSpec.load("seed"))
        let weights = model.tensors.filter { $0.region == .parameters }
        XCTAssertEqual(Set(train.histograms.keys), Set(weights.map(\.name)))
        for t in weights {
            let h = try XCTUnwrap(train.histograms[t.name])
            XCTAssertEqual(h.map { Int($0[0]) }, [6, 12], "\(t.name): one per epoch, at its last step")
            for point in h {
                XCTAssertEqual(Int(point[3]), t.count, "\(t.name): every value counted")
                XCTAssertEqual(Int(point[4]), t.count, "\(t.name): the buckets hold every value")
                XCTAssertLessThanOrEqual(point[1], point[2])
            }
        }
        XCTAssertEqual(train.scalars["batch_loss"]?.map(\.step), [4, 8, 12], "every --log-every steps")
        let test = try XCTUnwrap(read[dir + "/test"])
        XCTAssertEqual(test.scalars["epoch_accuracy"]?.map(\.step), [12], "the test set once, at the end")
        XCTAssertEqual(try XCTUnwrap(test.scalars["epoch_accuracy"]?.first?.value), s[0].testAccuracy, accuracy: 1e-6)
    }

    func testValidationFolderOnlyWithValidationMetrics() throws {
        let dir = temporaryDirectory(self) + "/tensorboard"
        var m = metrics(epoch: 1, step: 5, value: 1)
        m.valLoss = nil; m.valAccuracy = nil
        try TensorBoardLog(directory: dir, globalStep: 0).epoch(m)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["test", "train"])
    }

    func testUnwritableDirectoryIsAnErrorWithThePath() throws {
        let base = temporaryDirectory(self)
        XCTAssertTrue(FileManager.default.createFile(atPath: base + "/file", contents: Data()))
        XCTAssertThrowsError(try TensorBoardWriter(directory: base + "/file/tb")) { error in
            XCTAssertTrue("\(error)".contains(base + "/file/tb"), "\(error)")
        }
        let w = try TensorBoardWriter(directory: base + "/tb")
        try w.close()
        w.scalar("x", 1, step: 1)
        XCTAssertThrowsError(try w.flush()) { XCTAssertTrue("\($0)".contains(w.path), "\($0)") }
    }

    // MARK: Helpers

    func metrics(epoch: Int, step: Int, value v: Double) -> EpochMetrics {
        EpochMetrics(epoch: epoch, globalStep: step, trainLoss: v, trainAccuracy: v / 10, valLoss: v + 0.5,
                     valAccuracy: v / 5, testLoss: v + 1, testAccuracy: v * 0.3, learningRate: 1e-3, seconds: 1)
    }

    func assertScalars(_ got: [(step: Int, value: Double)]?, _ want: [(Int, Double)],
                       file: StaticString = #filePath, line: UInt = #line) {
        guard let got else { return XCTFail("tag missing", file: file, line: line) }
        XCTAssertEqual(got.map(\.step), want.map(\.0), file: file, line: line)
        for (g, w) in zip(got, want) {
            // simple_value is a float32 (compared as such: Foundation's JSON parser may be 1 ulp off in Double).
            XCTAssertEqual(Float(g.value), Float(w.1), "step \(w.0)", file: file, line: line)
        }
    }

    struct PythonFailed: Error, CustomStringConvertible { var description: String { "see the failure above" } }

    struct RunRead {
        var files: [String]; var records: [Int]; var scalars: [String: [(step: Int, value: Double)]]
        /// Histograms: tag → [(step, min, max, num, sum of the bucket counts)].
        var histograms: [String: [[Double]]] = [:]
        /// The hparams plugin's session start (name → value) and end status, as the plugin parses them.
        var hparams: [String: Any] = [:]
        var endStatus: Int?
    }

    /// Reads each folder twice with the `tensorboard` package: every record through its TFRecord
    /// reader (which checks both CRCs and raises on a mismatch) and as protobuf Events (the
    /// first must carry file_version), then the scalars through EventAccumulator, as
    /// TensorBoard's UI loads them.
    func readWithTensorBoard(_ dirs: [String]) throws -> [String: RunRead] {
        let script = """
            import json, os, sys
            try:
                from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
                from tensorboard.compat.proto import event_pb2
                from tensorboard.compat.tensorflow_stub import errors
                from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
            except ImportError as e:
                sys.exit("MISSING-TENSORBOARD: %s" % e)
            out = {}
            for d in sys.argv[1:]:
                files = sorted(f for f in os.listdir(d) if "tfevents" in f)
                records = []
                for f in files:
                    reader, n = PyRecordReader_New(os.path.join(d, f).encode()), 0
                    while True:
                        try:
                            reader.GetNext()
                        except errors.OutOfRangeError:
                            break
                        event = event_pb2.Event.FromString(reader.record())
                        if n == 0 and event.file_version != "brain.Event:2":
                            sys.exit("%s: first event is not file_version brain.Event:2: %s" % (f, event))
                        n += 1
                    records.append(n)
                acc = EventAccumulator(d, size_guidance={"scalars": 0, "histograms": 0})
                acc.Reload()
                scalars = {t: [[s.step, s.value] for s in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
                histograms = {t: [[h.step, h.histogram_value.min, h.histogram_value.max, h.histogram_value.num,
                                   sum(h.histogram_value.bucket)] for h in acc.Histograms(t)] for t in acc.Tags()["histograms"]}
                hparams, end = {}, None
                from tensorboard.plugins.hparams import metadata
                from google.protobuf import json_format
                try:
                    contents = acc.PluginTagToContent("hparams")
                except KeyError:
                    contents = {}
                for tag, data in contents.items():
                    if tag == metadata.SESSION_START_INFO_TAG:
                        info = metadata.parse_session_start_info_plugin_data(data)
                        hparams = {k: json_format.MessageToDict(v) for k, v in info.hparams.items()}
                    elif tag == metadata.SESSION_END_INFO_TAG:
                        end = metadata.parse_session_end_info_plugin_data(data).status
                out[d] = {"files": files, "records": records, "scalars": scalars, "histograms": histograms,
                          "hparams": hparams, "end": end}
            print(json.dumps(out))
            """
        let r = try runProcess("/usr/bin/env", ["python3", "-c", script] + dirs, timeout: 120)
        if r.status != 0 {
            let hint = r.stderr.contains("MISSING-TENSORBOARD") || r.stderr.contains("No such file")
                ? " — these tests need python3 with the tensorboard package: run them with scripts/test, which installs it in .build/python"
                : ""
            XCTFail("reading the event files with tensorboard failed (exit \(r.status))\(hint): \(r.stderr.suffix(2000))")
            throw PythonFailed()
        }
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard let json = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: [String: Any]] else {
            XCTFail("unexpected output from python: \(r.stdout)")
            throw PythonFailed()
        }
        return json.mapValues { run in
            let scalars = (run["scalars"] as? [String: [[NSNumber]]] ?? [:]).mapValues { list in
                list.map { (step: $0[0].intValue, value: $0[1].doubleValue) }
            }
            return RunRead(files: run["files"] as? [String] ?? [], records: (run["records"] as? [NSNumber] ?? []).map(\.intValue),
                           scalars: scalars,
                           histograms: (run["histograms"] as? [String: [[NSNumber]]] ?? [:]).mapValues { $0.map { $0.map(\.doubleValue) } },
                           hparams: run["hparams"] as? [String: Any] ?? [:], endStatus: (run["end"] as? NSNumber)?.intValue)
        }
    }
}
