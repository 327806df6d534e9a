import Collective
import Engine
import Foundation
import Training
import XCTest

/// report.html: one self-contained page with curves, confusion matrix and mistakes.
final class ReportTests: XCTestCase {
    let history: [EpochMetrics] = [
        EpochMetrics(epoch: 1, globalStep: 430, trainLoss: 0.41, trainAccuracy: 0.88, valLoss: 0.12, valAccuracy: 0.962,
                     testLoss: 0.11, testAccuracy: 0.965, learningRate: 1e-3, seconds: 31),
        EpochMetrics(epoch: 2, globalStep: 860, trainLoss: 0.09, trainAccuracy: 0.972, valLoss: nil, valAccuracy: nil,
                     testLoss: 0.07, testAccuracy: 0.978, learningRate: 1e-3, seconds: 30),
        EpochMetrics(epoch: 3, globalStep: 1290, trainLoss: 0.06, trainAccuracy: 0.981, valLoss: 0.05, valAccuracy: 0.984,
                     testLoss: 0.048, testAccuracy: 0.9851, learningRate: 1e-3, seconds: 30),
    ]
    let confusion = [[1234, 5, 0], [17, 987, 3], [0, 29, 1111]]

    func testPageIsSelfContainedWithChartsCountsAndImages() {
        let digit = (0..<(28 * 28)).map { UInt8(($0 * 7) % 256) }
        let mistakes: [RunReport.Mistake] = [
            (digit, 28, 28, 1, 0, 0.8712), (digit, 28, 28, 2, 1, 0.51), ([UInt8](repeating: 200, count: 4 * 5 * 3), 4, 5, 0, 2, 0.999),
        ]
        let page = RunReport.html(history: history, confusion: confusion, mistakes: mistakes,
                                  title: "ref <run> & \"co\"", summary: [("model", "ref"), ("test accuracy", "98.51%")])
        XCTAssertTrue(page.hasPrefix("<!DOCTYPE html>"))
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, 2, "loss and accuracy charts")
        XCTAssertEqual(page.components(separatedBy: "</svg>").count - 1, 2)
        XCTAssertTrue(page.contains("<polyline"), "lines drawn")
        for name in ["train", "validation", "test"] { XCTAssertTrue(page.contains(">\(name)</text>"), "legend \(name)") }
        for count in confusion.joined() { XCTAssertTrue(page.contains(">\(count)</td>"), "confusion count \(count)") }
        XCTAssertEqual(page.components(separatedBy: "<img src=\"data:image/png;base64,").count - 1, mistakes.count)
        XCTAssertTrue(page.contains("1 → 0 <span class=\"p\">(p=0.87)</span>"))
        XCTAssertTrue(page.contains("0 → 2 <span class=\"p\">(p=1.00)</span>"))
        XCTAssertTrue(page.contains("<title>ref &lt;run&gt; &amp; &quot;co&quot;</title>"))
        XCTAssertTrue(page.contains("<td>98.51%</td>"))
        for banned in ["http://", "https://", "<script", "src=\"//", "@import", "url("] {
            XCTAssertFalse(page.contains(banned), "self-contained: found \(banned)")
        }
    }

    func testEmptyRunStillMakesAPage() {
        let page = RunReport.html(history: [], confusion: [], mistakes: [], title: "t", summary: [])
        XCTAssertTrue(page.contains("No epoch has finished yet"))
        XCTAssertTrue(page.hasSuffix("</html>\n"))
        // One epoch: single points, no line.
        let one = RunReport.html(history: [history[0]], confusion: [], mistakes: [], title: "t", summary: [])
        XCTAssertEqual(one.components(separatedBy: "<circle").count - 1, 6, "3 losses + 3 accuracies")
    }

    /// The mistakes of an (untrained) model: each wrong, most confident first, and the same
    /// list whether one rank scores all images or three ranks score a shard each.
    func testMistakesAreTheSameForAnyWorldSize() throws {
        let test = try RunReport.loadTestSet(directory: Repo.mnist, reportPath: "report.json").subset(0..<301)
        func mistakes(ranks: Int) throws -> [Misclassification] {
            let comms = ranks == 1 ? [SingleProcessCommunicator()] : ThreadedCommunicator.makeGroup(size: ranks)
            let results = onRanks(comms, limit: 120) { comm -> [Misclassification] in
                let model = try Model(spec: try ModelSpec.load("seed"))
                model.initialize(seed: 3)
                return try evaluate(model: model, dataset: test, normalizer: .unit, batchSize: 64, comm: comm, mistakes: 25).mistakes
            }
            let lists = try results.map { try $0.get() }
            for list in lists.dropFirst() { XCTAssertEqual(list, lists[0], "every rank gets the same list") }
            return lists[0]
        }
        let one = try mistakes(ranks: 1)
        XCTAssertEqual(one.count, 25, "an untrained model gets more than 25 of 301 wrong")
        for m in one {
            XCTAssertNotEqual(m.label, m.predicted)
            XCTAssertEqual(m.label, Int(test.labels[m.index]))
            XCTAssertTrue(m.confidence > 0.1 && m.confidence <= 1, "softmax of the arg-max of 10 classes: \(m.confidence)")
        }
        XCTAssertEqual(one.map(\.confidence), one.map(\.confidence).sorted(by: >))
        let three = try mistakes(ranks: 3)
        XCTAssertEqual(three.map(\.index), one.map(\.index))
        for (a, b) in zip(three, one) { XCTAssertEqual(a.confidence, b.confidence, accuracy: 1e-6) }
    }

    // MARK: From a run folder

    /// A run folder as the trainer leaves it: metrics.csv, summary.json, report.json naming
    /// the repository's MNIST, whose first test labels are 7, 2, 1, 0, 4.
    func makeRunDirectory(mistakes: [Misclassification]? = nil) throws -> String {
        let dir = temporaryDirectory(self) + "/run"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            epoch,global_step,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,learning_rate,seconds
            1,430,0.41,0.88,,,0.11,0.965,0.001,31.5
            2,860,0.09,0.972,0.08,0.975,0.07,0.978,0.001,30.25

            """.write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        try """
            {"model": "ref", "world_size": 2, "epochs_run": 2, "global_steps": 860, "stopped_early": false,
             "test_accuracy": 0.978, "test_loss": 0.07, "train_seconds": 61.75, "images_per_second": 1890.5,
             "weights_sha256": "0123456789abcdef0123456789abcdef", "ended_by": "epochs"}
            """.write(toFile: dir + "/summary.json", atomically: true, encoding: .utf8)
        let data = RunReportData(confusion: [[97, 3], [2, 98]],
                                 mistakes: mistakes ?? [.init(index: 0, label: 7, predicted: 9, confidence: 0.61),
                                                        .init(index: 4, label: 4, predicted: 9, confidence: 0.55)],
                                 data: Repo.mnist, title: "ref on MNIST, 2 ranks")
        try JSONEncoder().encode(data).write(to: URL(fileURLWithPath: dir + "/report.json"))
        return dir
    }

    func testWriteFromRunDirectory() throws {
        let dir = try makeRunDirectory()
        let path = try RunReport.write(runDirectory: dir)
        XCTAssertEqual(path, dir + "/report.html")
        let page = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(page.contains("<h1>ref on MNIST, 2 ranks</h1>"))
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, 2)
        XCTAssertEqual(page.components(separatedBy: "<img src=\"data:image/png;base64,").count - 1, 2)
        XCTAssertTrue(page.contains("7 → 9") && page.contains("4 → 9"))
        XCTAssertTrue(page.contains(">97</td>") && page.contains(">98</td>"))
        XCTAssertTrue(page.contains("<td>97.80%</td>"), "test accuracy from summary.json")
        XCTAssertTrue(page.contains("<td>1m01s</td>"), "training time from summary.json")
        XCTAssertFalse(page.contains("http://") || page.contains("https://"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".tmp") }, [])

        // The history read back from metrics.csv, an empty validation cell as nil.
        let h = try RunReport.readMetrics(path: dir + "/metrics.csv")
        XCTAssertEqual(h.count, 2)
        XCTAssertNil(h[0].valLoss)
        XCTAssertEqual(h[1].valAccuracy, 0.975)
        XCTAssertEqual(h[1].globalStep, 860)
        XCTAssertEqual(h[1].seconds, 30.25)

        // The command.
        let r = try runProcess(Repo.builtBinary, ["report", dir, "--data", Repo.mnist])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "wrote \(dir)/report.html\n")
    }

    func testSaveWritesReportJSONAndPage() throws {
        let dir = try makeRunDirectory()
        try FileManager.default.removeItem(atPath: dir + "/report.json")
        let data = RunReportData(confusion: [[5, 1], [0, 6]], mistakes: [.init(index: 2, label: 1, predicted: 0, confidence: 0.7)],
                                 data: "/nonexistent", title: "saved")
        // The test set handed over is used instead of reading `data`.
        let test = try RunReport.loadTestSet(directory: Repo.mnist, reportPath: "report.json")
        try RunReport.save(data, runDirectory: dir, testSet: test)
        let back = try JSONDecoder().decode(RunReportData.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/report.json")))
        XCTAssertEqual(back, data)
        let page = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        XCTAssertTrue(page.contains("1 → 0") && page.contains("<h1>saved</h1>"))
    }

    /// The command, version, dates, hosts, every setting and where the time went; throughput
    /// per epoch as a median with its range, not one epoch's value.
    func testRunFactsAndThroughputAreLabelled() throws {
        let dir = try makeRunDirectory()
        let facts = RunFacts(commandLine: ["distcnn", "train", "--model", "ref", "--run-dir", "runs/it's"], version: "1.2.3",
                             started: Date(timeIntervalSince1970: 1_800_000_000), ended: Date(timeIntervalSince1970: 1_800_000_100),
                             resumed: false, hosts: RunFacts.ranksPerHost(["a", "b", "a"]),
                             configuration: [["batch-size", "128"], ["lr-schedule", "cosine"]],
                             wallSeconds: 100, startUpSeconds: 4, trainingSeconds: 80, evaluationSeconds: 10)
        let data = RunReportData(confusion: [[5, 1], [0, 6]], mistakes: [], data: Repo.mnist, title: "facts", run: facts)
        var rows = history
        rows[0].imagesPerSecond = 1811; rows[1].imagesPerSecond = 1094; rows[2].imagesPerSecond = 1700
        try RunReport.save(data, runDirectory: dir, history: rows)
        let back = try JSONDecoder().decode(RunReportData.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/report.json")))
        XCTAssertEqual(back.run, facts)
        let page = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        for text in ["<code>distcnn train --model ref --run-dir &#39;runs/it&#39;\\&#39;&#39;s&#39;</code>", "<td>1.2.3</td>",
                     "<td>2027-01-15T08:00:00Z</td>", "<td>2027-01-15T08:01:40Z</td>", "<td>a (2 ranks), b (1 rank)</td>",
                     "1m40s: start-up 4.0s, training steps 1m20s, evaluation 10.0s, checkpoints and files 6.0s",
                     "<span class=\"k\">batch-size</span> 128", "<span class=\"k\">lr-schedule</span> cosine",
                     "<th>training images/s per epoch</th><td>median 1700, range 1094–1811 over 3 epochs</td>",
                     "<th>training images/s, all steps</th>"] {
            XCTAssertTrue(page.contains(text), "\(text) not in the page")
        }
        XCTAssertFalse(page.contains(">throughput<"), "no unlabelled throughput")

        // A report.json with an impossible time is refused in one line.
        var bad = data
        bad.run?.trainingSeconds = -1
        try JSONEncoder().encode(bad).write(to: URL(fileURLWithPath: dir + "/report.json"))
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir)) {
            XCTAssertTrue("\($0)".contains("run.training_seconds is -1.0, outside 0...1e9"), "\($0)")
        }
    }

    func testRunWithoutReportJSONGetsCurvesOnly() throws {
        let dir = try makeRunDirectory()
        try FileManager.default.removeItem(atPath: dir + "/report.json")
        try FileManager.default.removeItem(atPath: dir + "/summary.json")
        let page = try String(contentsOfFile: try RunReport.write(runDirectory: dir), encoding: .utf8)
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, 2)
        XCTAssertTrue(page.contains("has not written report.json"))
        XCTAssertTrue(page.contains("in progress or interrupted"))
        XCTAssertTrue(page.contains("<h1>run</h1>"), "titled after the folder")
    }

    func testClearErrors() throws {
        let empty = temporaryDirectory(self)
        XCTAssertThrowsError(try RunReport.write(runDirectory: empty + "/missing")) {
            XCTAssertTrue("\($0)".contains("no such run folder"), "\($0)")
        }
        XCTAssertThrowsError(try RunReport.write(runDirectory: empty)) {
            XCTAssertTrue("\($0)".contains("metrics.csv: not found"), "\($0)")
        }
        // A label that does not match the data: the wrong data folder.
        var dir = try makeRunDirectory(mistakes: [.init(index: 1, label: 7, predicted: 2, confidence: 0.9)])
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir)) {
            XCTAssertTrue("\($0)".contains("test image 1 has label 2") && "\($0)".contains("--data"), "\($0)")
        }
        dir = try makeRunDirectory(mistakes: [.init(index: 10_000, label: 7, predicted: 2, confidence: 0.9)])
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir)) {
            XCTAssertTrue("\($0)".contains("outside the 10000 test images"), "\($0)")
        }
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir, dataDirectory: empty)) {
            XCTAssertTrue("\($0)".contains("cannot load the test images") && "\($0)".contains(empty), "\($0)")
        }
        try "epoch,train_loss\n1,0.5\n".write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir)) {
            XCTAssertTrue("\($0)".contains("metrics.csv: the header lacks train_accuracy"), "\($0)")
        }
        try "epoch,train_loss,train_accuracy,test_loss,test_accuracy\n1,0.5,x,1,1\n".write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir)) {
            XCTAssertTrue("\($0)".contains("line 2: train_accuracy is 'x', not a number"), "\($0)")
        }
        try "{\"confusion\": 3}".write(toFile: dir + "/report.json", atomically: true, encoding: .utf8)
        try "epoch,train_loss,train_accuracy,test_loss,test_accuracy\n".write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir)) {
            XCTAssertTrue("\($0)".contains("report.json: not a distcnn report file"), "\($0)")
        }
        let r = try runProcess(Repo.builtBinary, ["report", empty + "/missing"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "error: \(empty)/missing: no such run folder\n")
    }
}
