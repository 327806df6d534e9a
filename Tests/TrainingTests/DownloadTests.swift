import Foundation
import XCTest

/// `distcnn download` against a local HTTP server (Python's) serving a copy of data/mnist.
final class DownloadTests: XCTestCase {
    static let names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    /// A folder holding a copy of the four MNIST files, to serve (and to tamper with).
    func servedCopy() throws -> String {
        let dir = temporaryDirectory(self) + "/served"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in Self.names { try FileManager.default.copyItem(atPath: Repo.mnist + "/" + name, toPath: dir + "/" + name) }
        return dir
    }

    func download(_ server: HTTPServer, to dir: String, retries: Int = 0) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(Repo.builtBinary, ["download", "--dataset", "mnist", "--to", dir, "--mirror", server.url,
                                          "--mirror-only", "--retries", "\(retries)"], timeout: 300)
    }

    func contents(_ dir: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() }

    func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    func testDownloadsAndVerifiesThenSkips() throws {
        let server = try HTTPServer(directory: try servedCopy(), test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        let r = try download(server, to: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(contents(dir), Self.names.sorted(), "the four files and nothing else")
        for name in Self.names {
            XCTAssertEqual(try bytes(dir + "/" + name), try bytes(Repo.mnist + "/" + name), name)
            XCTAssertTrue(r.stdout.contains("\(name): downloaded"), r.stdout)
        }
        XCTAssertEqual(r.stdout.components(separatedBy: "SHA-256 verified").count - 1, 4, r.stdout)
        XCTAssertEqual(server.requests().count, 4)

        // Again: every file is present and valid, nothing is fetched.
        let again = try download(server, to: dir)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(again.stdout.components(separatedBy: "already present, SHA-256 verified").count - 1, 4, again.stdout)
        XCTAssertEqual(server.requests().count, 4)

        // A damaged file in place is fetched again, with a warning.
        try Data("not gzip".utf8).write(to: URL(fileURLWithPath: dir + "/t10k-labels-idx1-ubyte.gz"))
        let repair = try download(server, to: dir)
        XCTAssertEqual(repair.status, 0, repair.stderr)
        XCTAssertTrue(repair.stderr.contains("t10k-labels-idx1-ubyte.gz is present but fails its SHA-256 check"), repair.stderr)
        XCTAssertEqual(try bytes(dir + "/t10k-labels-idx1-ubyte.gz"), try bytes(Repo.mnist + "/t10k-labels-idx1-ubyte.gz"))
        XCTAssertEqual(contents(dir), Self.names.sorted())
    }

    /// A mirror serving a wrong file: one line naming it, not retried, and only the valid
    /// files before it are left in the folder.
    func testWrongContentIsRefused() throws {
        let served = try servedCopy()
        // Valid gzip, wrong content: the training labels under the test labels' name.
        try FileManager.default.removeItem(atPath: served + "/t10k-labels-idx1-ubyte.gz")
        try FileManager.default.copyItem(atPath: served + "/train-labels-idx1-ubyte.gz", toPath: served + "/t10k-labels-idx1-ubyte.gz")
        let server = try HTTPServer(directory: served, test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        let r = try download(server, to: dir, retries: 2)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix("error: " + dir + "/t10k-labels-idx1-ubyte.gz: download failed"), r.stderr)
        XCTAssertTrue(r.stderr.contains("fails its SHA-256 check"), r.stderr)
        XCTAssertEqual(contents(dir), Array(Self.names.prefix(3)).sorted(), "the three valid files only, no part file")
        XCTAssertEqual(server.requests().filter { $0.contains("t10k-labels") }.count, 1, "a wrong file is not fetched again")
    }

    func testTruncatedGzipIsRefused() throws {
        let served = try servedCopy()
        let path = served + "/train-labels-idx1-ubyte.gz"
        try bytes(path).prefix(10_000).write(to: URL(fileURLWithPath: path))
        let server = try HTTPServer(directory: served, test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        let r = try download(server, to: dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(dir + "/train-labels-idx1-ubyte.gz: download failed"), r.stderr)
        XCTAssertEqual(contents(dir), ["train-images-idx3-ubyte.gz"])
    }

    /// Python's http.server ignores Range and answers 200: a stale part is overwritten.
    func testStalePartIsReplacedWithoutRangeSupport() throws {
        let server = try HTTPServer(directory: try servedCopy(), test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(repeating: 0x42, count: 3000).write(to: URL(fileURLWithPath: dir + "/.tmp-t10k-labels-idx1-ubyte.gz.part"))
        let r = try download(server, to: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(contents(dir), Self.names.sorted())
        XCTAssertEqual(try bytes(dir + "/t10k-labels-idx1-ubyte.gz"), try bytes(Repo.mnist + "/t10k-labels-idx1-ubyte.gz"))
    }

    /// With a server that honours Range, a partial download continues where it stopped; a
    /// part that is not a prefix of the file fails the check and is fetched again whole.
    func testPartIsResumedWithRangeSupport() throws {
        let server = try HTTPServer(directory: try servedCopy(), test: self, ranges: true)
        let dir = temporaryDirectory(self) + "/mnist"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let images = try bytes(Repo.mnist + "/t10k-images-idx3-ubyte.gz")
        try images.prefix(100_000).write(to: URL(fileURLWithPath: dir + "/.tmp-t10k-images-idx3-ubyte.gz.part"))
        try Data(repeating: 0x42, count: 1000).write(to: URL(fileURLWithPath: dir + "/.tmp-t10k-labels-idx1-ubyte.gz.part"))
        let r = try download(server, to: dir)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(contents(dir), Self.names.sorted())
        XCTAssertEqual(try bytes(dir + "/t10k-images-idx3-ubyte.gz"), images)
        XCTAssertEqual(try bytes(dir + "/t10k-labels-idx1-ubyte.gz"), try bytes(Repo.mnist + "/t10k-labels-idx1-ubyte.gz"))
        XCTAssertTrue(r.stdout.contains("t10k-images-idx3-ubyte.gz: downloaded 1616508 bytes") && r.stdout.contains("resumed after 100000 bytes"), r.stdout)
        let log = server.requests()
        XCTAssertTrue(log.contains { $0.contains("/t10k-images-idx3-ubyte.gz") && $0.contains(" 206 ") }, "\(log)")
        XCTAssertEqual(log.filter { $0.contains("/t10k-images-idx3-ubyte.gz") }.count, 1, "\(log)")
        // The stale labels part: resumed (206), refused by the check, fetched whole (200).
        let labels = log.filter { $0.contains("/t10k-labels-idx1-ubyte.gz") }
        XCTAssertEqual(labels.count, 2, "\(log)")
        XCTAssertTrue(labels.first?.contains(" 206 ") == true && labels.last?.contains(" 200 ") == true, "\(labels)")
    }

    func testUnreachableMirrorFailsCleanly() throws {
        // A port that was free a moment ago: connection refused.
        let server = try HTTPServer(directory: try servedCopy(), test: self)
        let url = server.url
        server.stop()
        let dir = temporaryDirectory(self) + "/never"
        let r = try runProcess(Repo.builtBinary, ["download", "--dataset", "mnist", "--to", dir, "--mirror", url,
                                                  "--mirror-only", "--retries", "1"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix("error: " + dir + "/train-images-idx3-ubyte.gz: download failed: " + url), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir), "a folder made for nothing is removed")
    }

    func testBadFlags() throws {
        for (args, needle) in [(["--dataset", "cifar", "--to", "x"], "The value 'cifar' is invalid for '--dataset <dataset>'. Please provide one of 'mnist' and 'fashion-mnist'."),
                               (["--dataset", "mnist", "--to", "x", "--retries=-1"], "--retries must be in 0...100, got -1"),
                               (["--dataset", "mnist", "--to", "x", "--mirror-only"], "--mirror-only needs --mirror")] {
            let r = try runProcess(Repo.builtBinary, ["download"] + args)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains(needle), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
    }
}

/// Python's HTTP server on 127.0.0.1 and a free port, serving `directory`; with `ranges`, a
/// small subclass that answers `Range: bytes=N-` with 206. Stopped when the test ends.
final class HTTPServer {
    /// Fails the test that needed the server (python3 ships http.server, so this is a real fault).
    struct ServerDidNotStart: Error, CustomStringConvertible { var description: String }

    let process = Process()
    let port: Int
    let log: String
    var url: String { "http://127.0.0.1:\(port)/" }

    static let rangeHandler = """
        import functools, http.server, os, re, sys
        class Handler(http.server.SimpleHTTPRequestHandler):
            def send_head(self):
                path = self.translate_path(self.path)
                m = re.fullmatch(r'bytes=(\\d+)-', self.headers.get('Range') or '')
                if not m or not os.path.isfile(path):
                    return super().send_head()
                size, start = os.path.getsize(path), int(m.group(1))
                if start >= size:
                    self.send_error(416)
                    return None
                f = open(path, 'rb')
                f.seek(start)
                self.send_response(206)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, size - 1, size))
                self.send_header('Content-Length', str(size - start))
                self.end_headers()
                return f
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Handler, directory=sys.argv[1]))
        print('Serving HTTP on 127.0.0.1 port', server.server_address[1], flush=True)
        server.serve_forever()
        """

    init(directory: String, test: XCTestCase, ranges: Bool = false) throws {
        log = temporaryDirectory(test) + "/server.log"
        XCTAssertTrue(FileManager.default.createFile(atPath: log, contents: nil), "cannot create \(log)")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ranges ? ["python3", "-u", "-c", Self.rangeHandler, directory]
            : ["python3", "-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory", directory]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try process.run()
        // The server prints its port once it is listening.
        var text = "", found: Int?
        let deadline = Date().addingTimeInterval(30)
        while found == nil && Date() < deadline && process.isRunning {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { usleep(20_000); continue }
            text += String(decoding: chunk, as: UTF8.self)
            if let r = text.range(of: #"port (\d+)"#, options: .regularExpression) {
                found = Int(text[r].dropFirst(5))
            }
        }
        guard let found else {
            if process.isRunning { process.terminate() }
            throw ServerDidNotStart(description: "python3 HTTP server did not start: \(text) \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        port = found
        test.addTeardownBlock { [self] in stop() }
    }

    /// Request lines the server logged so far, e.g. `"GET /x.gz HTTP/1.1" 206 -`.
    func requests() -> [String] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map(String.init).filter { $0.contains("\"GET ") }
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
