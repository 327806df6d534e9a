import Data
import Foundation
import XCTest

/// Files that are not what they claim: a FIFO, a device, a folder, headers that promise more
/// than the file holds. Each is refused with one line, quickly, before any large allocation.
final class FileKindTests: XCTestCase {
    private var folder: TemporaryDirectory!

    override func setUpWithError() throws { folder = try TemporaryDirectory() }
    override func tearDown() { folder.remove() }

    /// Runs `body` on another thread and fails if it takes more than `seconds` (a FIFO open
    /// that blocks would otherwise hang the whole test run).
    func withinSeconds<T>(_ seconds: Double, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                          _ body: @escaping () throws -> T) -> Result<T, Error>? {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Thread.detachNewThread { box.result = Result { try body() }; done.signal() }
        guard done.wait(timeout: .now() + seconds) == .success else {
            XCTFail("\(what) did not return within \(seconds) s", file: file, line: line)
            return nil
        }
        return box.result
    }

    func makeFIFO() throws -> String {
        let path = folder.path + "/pipe"
        XCTAssertEqual(mkfifo(path, 0o600), 0, String(cString: strerror(errno)))
        addTeardownBlock {
            // Releases a reader that blocked despite the fix, so the run can end.
            let fd = open(path, O_WRONLY | O_NONBLOCK)
            if fd >= 0 { close(fd) }
        }
        return path
    }

    func assertOneLine(_ r: Result<some Any, Error>?, _ needles: [String], file: StaticString = #filePath, line: UInt = #line) {
        guard let r else { return }
        guard case .failure(let e) = r else { return XCTFail("accepted", file: file, line: line) }
        let m = "\(e)"
        XCTAssertFalse(m.contains("\n"), m, file: file, line: line)
        for n in needles { XCTAssertTrue(m.contains(n), "\(m) lacks \(n)", file: file, line: line) }
    }

    func testFIFODeviceAndFolderAreRefusedWithoutReading() throws {
        let fifo = try makeFIFO()
        for (path, reason) in [(fifo, "not a regular file"), ("/dev/zero", "not a regular file"), (folder.path, "it is a folder")] {
            assertOneLine(withinSeconds(5, path) { try FileReader(path: path) }, [path, reason])
            assertOneLine(withinSeconds(5, path) { try FileReader.contents(of: path, limit: 1 << 20, what: "metrics") }, [path, reason])
            assertOneLine(withinSeconds(5, path) { try IDXReader.readLabels(path: path) }, [path, reason])
            assertOneLine(withinSeconds(5, path) { try ImageFiles.read(path: path) }, [path, reason])
        }
    }

    func testSizeLimitIsCheckedBeforeReading() throws {
        let path = try folder.write("big", [UInt8](repeating: 7, count: 4096))
        assertOneLine(withinSeconds(5, path) { try FileReader.contents(of: path, limit: 1000, what: "metrics") },
                      [path, "the metrics is 4096 bytes, more than the 1000 accepted"])
        XCTAssertEqual(try FileReader.contents(of: path, limit: 4096, what: "metrics").count, 4096)
    }

    /// Peak resident memory of this process, in MB.
    func peakMB() -> Int {
        var usage = rusage()
        getrusage(0, &usage)  // RUSAGE_SELF
        return usage.ru_maxrss / 1024
    }

    /// 1.5 MB of incompressible bytes, gzipped, behind an image header that claims 2 million
    /// 28×28 images (1.57 GB): the reproduction that made every rank allocate 1.56 GB.
    func liarImages() -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        let body = (0..<1_500_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return gzip(idxFile(dimensions: [2_000_000, 28, 28], payload: body), level: 1)
    }

    func testMismatchedPairIsRefusedFromTheHeadersAlone() throws {
        let images = try folder.write("images.gz", liarImages())
        let labels = try folder.write("labels.gz", gzip(idxFile(dimensions: [60_000], payload: [UInt8](repeating: 1, count: 60_000))))
        let before = peakMB()
        let start = Date()
        assertOneLine(withinSeconds(10, "pair") { try MNISTFiles.loadPair(images: images, labels: labels) },
                      ["60000 labels", "2000000 images"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertLessThan(peakMB() - before, 200, "the header check came after a large allocation")
    }

    /// Headers that agree with each other but not with the data: gzip's trailer gives the lie
    /// away, and the data read grows only with what is there.
    func testLyingHeaderIsCaughtByTheGzipTrailer() throws {
        let images = try folder.write("images.gz", liarImages())
        let labels = try folder.write("labels.gz", gzip(idxFile(dimensions: [2_000_000], payload: [UInt8](repeating: 1, count: 2_000_000))))
        let before = peakMB()
        assertOneLine(withinSeconds(20, "pair") { try MNISTFiles.loadPair(images: images, labels: labels) },
                      [images, "truncated", "1568000000"])
        XCTAssertLessThan(peakMB() - before, 200, "the images were allocated as the header claimed")
    }

    /// The four headers of a folder are checked against each other before any data is read.
    func testFolderHeadersAreCrossChecked() throws {
        let train = syntheticIDX(count: 30, seed: 1), test = syntheticIDX(count: 10, height: 14, width: 14, seed: 2)
        try folder.write(MNISTFiles.trainImages, train.images)
        try folder.write(MNISTFiles.trainLabels, train.labels)
        try folder.write(MNISTFiles.testImages, test.images)
        try folder.write(MNISTFiles.testLabels, test.labels)
        assertDataError(try MNISTFiles.load(directory: folder.path)) {
            if case .shapeMismatch(_, [14, 14, 1], [28, 28, 1]) = $0 { return true }; return false
        }
        try folder.write(MNISTFiles.testImages, syntheticIDX(count: 10, seed: 2).images)
        try folder.write(MNISTFiles.testLabels, syntheticIDX(count: 11, seed: 2).labels)
        assertDataError(try MNISTFiles.load(directory: folder.path)) {
            if case .countMismatch(_, 10, _, 11) = $0 { return true }; return false
        }
    }

    /// A gzip file of two members (what `cat a.gz b.gz` makes) still reads: its trailer states
    /// only the last member's size.
    func testMultiMemberGzipStillReads() throws {
        let data = syntheticIDX(count: 20, seed: 3)
        let whole = data.images
        let path = try folder.write("images.gz", gzip(Array(whole[..<1000])) + gzip(Array(whole[1000...])))
        let images = try IDXReader.readImages(path: path)
        XCTAssertEqual(images.count, 20)
        XCTAssertEqual(images.pixels, Array(whole[16...]))
    }

    /// A 260 KB PNG declaring 16384×16384 used 1.08 GB: the pixel count is bounded first.
    func testHugePNGIsRefusedFromItsHeader() throws {
        let png = pngFile(width: 16384, height: 16384, colorType: 0, bitDepth: 8, samples: [], rawIDAT: [UInt8](repeating: 0, count: 1000))
        let path = try folder.write("huge.png", png)
        let before = peakMB()
        assertOneLine(withinSeconds(5, path) { try ImageFiles.read(path: path) }, [path, "16384×16384", "pixels in all"])
        XCTAssertLessThan(peakMB() - before, 100)
        let pgm = try folder.write("huge.pgm", Array("P5 16384 16384 255\n".utf8))
        assertOneLine(withinSeconds(5, pgm) { try ImageFiles.read(path: pgm) }, [pgm, "16384×16384"])
    }
}

final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error>?
}
