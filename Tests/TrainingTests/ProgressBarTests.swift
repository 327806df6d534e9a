import Training
import XCTest

/// The live progress line: a pure function of the terminal's width and the run's figures,
/// and a redraw rate limit.
final class ProgressBarTests: XCTestCase {
    let frame = ProgressFrame(epoch: 2, epochs: 3, step: 215, steps: 430, elapsed: 15.5, epochETA: 15.5, runETA: 47.2,
                              imagesPerSecond: 1720, loss: 0.1234, accuracy: 0.9612)

    func testWideTerminalShowsEveryFieldAndAProportionalBar() throws {
        let line = frame.line(columns: 120)
        XCTAssertLessThan(line.count, 120)
        for field in ["2/3", "215/430", "15.5s", "eta 15.5s", "run eta 47.2s", "loss 0.1234", "acc 0.9612", "1720 img/s"] {
            XCTAssertTrue(line.contains(field), "\(field) missing from \(line)")
        }
        let bar = try XCTUnwrap(line.split(separator: " ").first { $0.hasPrefix("[") })
        XCTAssertEqual(bar.count, 32)
        // Half the steps: half the inside filled, then the head.
        XCTAssertEqual(bar.filter { $0 == "=" }.count, 15)
        XCTAssertTrue(bar.contains(">"))
    }

    func testNeverWiderThanTheTerminalAndDropsTheLeastNeededFirst() {
        for columns in 1...200 {
            XCTAssertLessThan(frame.line(columns: columns).count, max(columns, 2), "at \(columns) columns")
        }
        let sixty = frame.line(columns: 60)
        XCTAssertTrue(sixty.contains("["), sixty)
        XCTAssertTrue(sixty.contains("eta 15.5s") && sixty.contains("run eta 47.2s") && sixty.contains("loss 0.1234"), sixty)
        XCTAssertFalse(sixty.contains("img/s"), sixty)
        // Narrower still: the run's ETA goes before the loss, the bar before the epoch's ETA.
        let forty = frame.line(columns: 40)
        XCTAssertTrue(forty.contains("eta 15.5s"), forty)
        XCTAssertFalse(forty.contains("run eta"), forty)
        XCTAssertTrue(frame.line(columns: 24).hasPrefix("2/3 215/430"))
    }

    func testBarEnds() {
        XCTAssertEqual(ProgressFrame.bar(done: 0, of: 10, width: 12), "[>.........]")
        XCTAssertEqual(ProgressFrame.bar(done: 10, of: 10, width: 12), "[==========]")
        XCTAssertEqual(ProgressFrame.bar(done: 5, of: 10, width: 12), "[=====>....]")
        XCTAssertEqual(ProgressFrame.bar(done: 3, of: 0, width: 6), "[>...]")
    }

    func testOneEpochRunHasNoRunETA() {
        var f = frame
        f.runETA = nil
        XCTAssertFalse(f.line(columns: 120).contains("run eta"))
    }

    func testRedrawsAtMostTenTimesASecond() {
        var limiter = RedrawLimiter()
        // A step every millisecond for two seconds.
        let drawn = (0..<2000).filter { limiter.due(at: Double($0) * 0.001) }.count
        XCTAssert((19...20).contains(drawn), "\(drawn) redraws")
        XCTAssertTrue(limiter.due(at: 10))
        XCTAssertFalse(limiter.due(at: 10.0625))
        XCTAssertTrue(limiter.due(at: 10.125))
        // After a line that ended the live one, the next redraw is due at once.
        limiter.reset()
        XCTAssertTrue(limiter.due(at: 10.1875))
    }
}
