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
        // Valid gzip of the right size, wrong content: the test labels with every 1 made a 2.
        let path = served + "/t10k-labels-idx1-ubyte.gz"
        let made = try runProcess("/bin/sh", ["-c", "gzip -dc '\(path)' | tr '\\001' '\\002' | gzip -c > '\(path).new' && mv '\(path).new' '\(path)'"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let server = try HTTPServer(directory: served, test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        try assertTestLabelsRefused(server, dir, saying: "fails its SHA-256 check")
    }

    /// A response longer than any gzip of the file can be (the training labels, 29 KB, under the
    /// test labels' name, which hold 10,008 bytes) is cut off as it arrives, and nothing is kept.
    func testOversizedResponseIsCutOff() throws {
        let served = try servedCopy()
        try FileManager.default.removeItem(atPath: served + "/t10k-labels-idx1-ubyte.gz")
        try FileManager.default.copyItem(atPath: served + "/train-labels-idx1-ubyte.gz", toPath: served + "/t10k-labels-idx1-ubyte.gz")
        let server = try HTTPServer(directory: served, test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        try assertTestLabelsRefused(server, dir, saying: "response is larger than 14260 bytes")
    }

    /// Downloads into `dir` and checks that the test labels (the fourth file) are refused with
    /// one line saying `reason`, fetched once (not again on retry), and that only the three
    /// files before them are left, no part file.
    func assertTestLabelsRefused(_ server: HTTPServer, _ dir: String, saying reason: String,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try download(server, to: dir, retries: 2)
        XCTAssertEqual(r.status, 1, file: file, line: line)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("error: " + dir + "/t10k-labels-idx1-ubyte.gz: download failed"), r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(reason), r.stderr, file: file, line: line)
        XCTAssertEqual(contents(dir), Array(Self.names.prefix(3)).sorted(), "the three valid files only, no part file", file: file, line: line)
        XCTAssertEqual(server.requests().filter { $0.contains("t10k-labels") }.count, 1, "fetched again", file: file, line: line)
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

    /// A mirror serving a gzip bomb under a file's name (35 GB from 34 MB, concatenated members
    /// of 64 MiB of zeros): refused once it decompresses past the file's known size, instead of
    /// hashed for minutes, with one line; nothing is left behind and it is not fetched again.
    func testGzipBombIsRefusedAtTheFilesSize() throws {
        let served = try servedCopy()
        let member = temporaryDirectory(self) + "/member.gz"
        let made = try runProcess("/bin/sh", ["-c", "head -c 67108864 /dev/zero | gzip -9 -c > '\(member)'"])
        XCTAssertEqual(made.status, 0, made.stderr)
        let one = try bytes(member)
        var bomb = Data(capacity: one.count * 530)
        for _ in 0..<530 { bomb.append(one) }
        XCTAssertLessThan(bomb.count, 47_040_016, "small enough to be downloaded whole: the decompressed bound is what refuses it")
        try bomb.write(to: URL(fileURLWithPath: served + "/train-images-idx3-ubyte.gz"))
        let server = try HTTPServer(directory: served, test: self)
        let dir = temporaryDirectory(self) + "/mnist"
        let start = Date()
        let r = try download(server, to: dir, retries: 2)
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix("error: " + dir + "/train-images-idx3-ubyte.gz: download failed"), r.stderr)
        XCTAssertTrue(r.stderr.contains("decompresses to more than 47040016 bytes"), r.stderr)
        XCTAssertFalse(r.stderr.contains("kept"), r.stderr)
        XCTAssertEqual(contents(dir), [], "no part file left")
        XCTAssertEqual(server.requests().count, 1, "a bomb is not fetched again")
        // Hashing all 35 GB takes minutes; the bound stops after 47 MB.
        XCTAssertLessThan(seconds, 60, "refused after \(seconds) s")
    }

    /// A connection cut mid-file: the bytes received stay in the part file (the line says so),
    /// and the next try asks for the rest with a Range request and completes the file.
    func testCutConnectionIsResumedByTheNextTry() throws {
        let server = try HTTPServer(directory: try servedCopy(), test: self, ranges: true, cut: "train-images-idx3-ubyte.gz")
        let dir = temporaryDirectory(self) + "/mnist"
        let images = try bytes(Repo.mnist + "/train-images-idx3-ubyte.gz")
        let part = dir + "/.tmp-train-images-idx3-ubyte.gz.part"
        let first = try download(server, to: dir)
        XCTAssertEqual(first.status, 1, first.stderr)
        XCTAssertEqual(first.stderr.split(separator: "\n").count, 1, first.stderr)
        XCTAssertTrue(first.stderr.contains(dir + "/train-images-idx3-ubyte.gz: download failed"), first.stderr)
        XCTAssertTrue(first.stderr.contains("the \(images.count / 2) bytes received are kept in \(part); run again to resume"), first.stderr)
        XCTAssertEqual(try bytes(part), images.prefix(images.count / 2), "the part is the prefix received")

        let second = try download(server, to: dir)
        XCTAssertEqual(second.status, 0, second.stderr)
        XCTAssertTrue(second.stdout.contains("train-images-idx3-ubyte.gz: downloaded \(images.count) bytes")
                      && second.stdout.contains("resumed after \(images.count / 2) bytes"), second.stdout)
        XCTAssertEqual(contents(dir), Self.names.sorted())
        XCTAssertEqual(try bytes(dir + "/train-images-idx3-ubyte.gz"), images)
        let log = server.requests().filter { $0.contains("/train-images-idx3-ubyte.gz") }
        XCTAssertEqual(log.count, 2, "\(log)")
        XCTAssertTrue(log.first?.contains(" 200 ") == true && log.last?.contains(" 206 ") == true, "cut whole, then resumed: \(log)")
        XCTAssertEqual(server.ranges(), ["bytes=\(images.count / 2)-"], "one Range request, from where the cut left off")
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
/// small subclass that answers `Range: bytes=N-` with 206 (and logs each Range header), and
/// with `cut` too, one that sends only the first half of that file's first whole request and
/// then closes the connection. Stopped when the test ends.
final class HTTPServer {
    /// Fails the test that needed the server (python3 ships http.server, so this is a real fault).
    struct ServerDidNotStart: Error, CustomStringConvertible { var description: String }

    let process = Process()
    let port: Int
    let log: String
    var url: String { "http://127.0.0.1:\(port)/" }

    static let rangeHandler = """
        import functools, http.server, os, re, sys
        cut, cut_done = (sys.argv[2:4] + [None, None])[:2]
        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                if self.headers.get('Range'):
                    sys.stderr.write('range %s\\n' % self.headers.get('Range'))
                if cut and self.path.endswith('/' + cut) and not self.headers.get('Range') and not os.path.exists(cut_done):
                    open(cut_done, 'w').close()
                    with open(self.translate_path(self.path), 'rb') as f:
                        data = f.read()
                    self.send_response(200)
                    self.send_header('Content-Type', 'application/octet-stream')
                    self.send_header('Content-Length', str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()
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

    init(directory: String, test: XCTestCase, ranges: Bool = false, cut: String? = nil) throws {
        log = temporaryDirectory(test) + "/server.log"
        XCTAssertTrue(FileManager.default.createFile(atPath: log, contents: nil), "cannot create \(log)")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let cutArguments = cut.map { [$0, temporaryDirectory(test) + "/cut-done"] } ?? []
        process.arguments = ranges ? ["python3", "-u", "-c", Self.rangeHandler, directory] + cutArguments
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

    /// The Range headers of the requests so far (with `ranges`), e.g. `bytes=100000-`.
    func ranges() -> [String] {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { $0.hasPrefix("range ") }.map { String($0.dropFirst(6)) }
    }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }
}
