import Foundation
import Training
import XCTest

/// Hand-edited run files that trapped or hung `distcnn report`: each number read has a range,
/// and the chart ends whatever the values.
final class ReportHostileTests: XCTestCase {
    let header = "epoch,global_step,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,learning_rate,seconds\n"

    /// A run folder with a good metrics.csv, summary.json and report.json, `edit` applied.
    func runDirectory(metrics: String? = nil, summary: String? = nil, report: String? = nil) throws -> String {
        let dir = temporaryDirectory(self) + "/run"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try (metrics ?? header + "1,430,0.41,0.88,,,0.11,0.965,0.001,31.5\n2,860,0.09,0.972,0.08,0.975,0.07,0.978,0.001,30.25\n")
            .write(toFile: dir + "/metrics.csv", atomically: true, encoding: .utf8)
        try (summary ?? #"{"model": "ref", "world_size": 2, "epochs_run": 2, "global_steps": 860, "test_accuracy": 0.978}"#)
            .write(toFile: dir + "/summary.json", atomically: true, encoding: .utf8)
        try (report ?? #"{"confusion": [[97, 3], [2, 98]], "mistakes": [], "data": "none", "title": "t"}"#)
            .write(toFile: dir + "/report.json", atomically: true, encoding: .utf8)
        return dir
    }

    func assertRefused(_ dir: String, _ file: String, _ needle: String, line: UInt = #line) {
        XCTAssertThrowsError(try RunReport.write(runDirectory: dir), line: line) { error in
            let m = "\(error)"
            XCTAssertTrue(m.hasPrefix(dir + "/" + file + ": ") && m.contains(needle), m, line: line)
            XCTAssertFalse(m.contains("\n"), m, line: line)
        }
    }

    func testGoodFolderStillWrites() throws {
        XCTAssertNoThrow(try RunReport.write(runDirectory: try runDirectory()))
    }

    func testHostileEpochsInMetricsAreRefused() throws {
        for bad in ["nan", "inf", "-inf", "1e300", "-1", "1.5", "9223372036854775807"] {
            let dir = try runDirectory(metrics: header + "\(bad),430,0.41,0.88,,,0.11,0.965,0.001,31.5\n")
            assertRefused(dir, "metrics.csv", "line 2: epoch is ")
        }
        let dir = try runDirectory(metrics: header + "1,1e300,0.41,0.88,,,0.11,0.965,0.001,31.5\n")
        assertRefused(dir, "metrics.csv", "line 2: global_step is 1e+300, not a whole number in 0...281474976710656")
    }

    func testHostileSummaryNumbersAreRefused() throws {
        let cases = [(#"{"world_size": 1e300}"#, "world_size is 1e+300, not a whole number in 1...1048576"),
                     (#"{"world_size": 9223372036854775807}"#, "world_size is"),
                     (#"{"epochs_run": -3}"#, "epochs_run is -3.0"),
                     (#"{"best_epoch": 1e20}"#, "best_epoch is"),
                     (#"{"train_seconds": 1e300}"#, "train_seconds is 1e+300, outside 0.0...1000000000.0"),
                     (#"{"test_accuracy": 7}"#, "test_accuracy is 7.0, outside 0.0...1.0"),
                     ("[1, 2]", "not a JSON object")]
        for (json, needle) in cases {
            assertRefused(try runDirectory(summary: json), "summary.json", needle)
        }
    }

    func testHostileConfusionMatrixIsRefused() throws {
        let cases = [(#"[[9223372036854775807, 1], [1, 1]]"#, "confusion[0][0] is 9223372036854775807, outside 0...1099511627776"),
                     (#"[[1, -1], [1, 1]]"#, "confusion[0][1] is -1"),
                     ("[" + Array(repeating: "[1]", count: 300).joined(separator: ",") + "]", "300×1, more than the 256×256")]
        for (matrix, needle) in cases {
            let dir = try runDirectory(report: #"{"confusion": "# + matrix + #", "mistakes": [], "data": "none", "title": "t"}"#)
            assertRefused(dir, "report.json", needle)
        }
        let mistake = #"{"confusion": [[1]], "mistakes": [{"index": 0, "label": 3, "predicted": 4, "confidence": 1e300}], "data": "none", "title": "t"}"#
        assertRefused(try runDirectory(report: mistake), "report.json", "confidence 1e+300")
    }

    /// Losses of ±1e308 looped forever in the tick computation; now they are left out of the
    /// chart like nan, and the page is written at once.
    func testHugeLossesDoNotHangTheChart() throws {
        let metrics = header + "1,10,1e308,0.5,-1e308,0.5,1e308,0.5,0.001,1\n2,20,0.5,0.6,0.4,0.6,0.3,0.6,0.001,1\n3,30,-1.7e308,0.7,inf,0.7,nan,0.7,0.001,1\n"
        let dir = try runDirectory(metrics: metrics)
        let start = Date()
        let page = try String(contentsOfFile: try RunReport.write(runDirectory: dir), encoding: .utf8)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertEqual(page.components(separatedBy: "<svg").count - 1, 2)
        XCTAssertFalse(page.contains("e+308"), "a ±1e308 value was drawn")
        XCTAssertTrue(page.contains("<title>train, epoch 2: 0.5000</title>"), "the finite values are still drawn")
        // All values out of range: "no values", still no hang.
        let allHuge = try runDirectory(metrics: header + "1,10,1e308,1e308,1e308,1e308,1e308,1e308,0.001,1\n")
        let page2 = try String(contentsOfFile: try RunReport.write(runDirectory: allHuge), encoding: .utf8)
        XCTAssertTrue(page2.contains("no values"))
    }
}
