import Data
import Dispatch
import Engine
import Foundation
import Hashing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A dataset that `distcnn download` knows: where it is published and what its four files
/// decompress to.
public struct DownloadableDataset: Sendable {
    public var name: String
    /// Base URLs (ending in `/`) that serve `NAME.gz` for each of the four files, tried in order.
    public var mirrors: [String]
    /// SHA-256 of each file's decompressed content, by base name (`train-images-idx3-ubyte`).
    /// The decompressed bytes are pinned, not the `.gz`, because mirrors recompress.
    public var sha256: [String: String]

    public static let mnist = DownloadableDataset(
        name: "mnist",
        mirrors: ["https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        sha256: [  // data/mnist/SHA256SUMS.raw
            MNISTFiles.trainImages: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            MNISTFiles.trainLabels: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            MNISTFiles.testImages: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            MNISTFiles.testLabels: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ])

    public static let fashionMNIST = DownloadableDataset(
        name: "fashion-mnist",
        mirrors: ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        sha256: [  // computed from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
            MNISTFiles.trainImages: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            MNISTFiles.trainLabels: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            MNISTFiles.testImages: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            MNISTFiles.testLabels: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ])

    public static let all = [mnist, fashionMNIST]

    public static func named(_ name: String) -> DownloadableDataset? { all.first { $0.name == name } }
}

/// Why a download failed; one line each, naming the file.
public enum DownloadError: Error, CustomStringConvertible {
    case unknownDataset(String)
    /// Every mirror was tried; `attempts` says what each one did.
    case failed(file: String, attempts: [String])
    case io(String)

    public var description: String {
        switch self {
        case let .unknownDataset(name):
            return "unknown dataset '\(name)' (known: \(DownloadableDataset.all.map(\.name).joined(separator: ", ")))"
        case let .failed(file, attempts):
            return "\(file): download failed: " + attempts.joined(separator: "; ")
        case let .io(message):
            return message
        }
    }
}

extension Tool {
    /// `distcnn download --dataset NAME --to DIR`: fetches the four `.gz` files, each verified by
    /// the SHA-256 of its decompressed content before it is renamed into place. Files already
    /// present and valid (raw or `.gz`) are kept. `mirror` is tried first, and alone with
    /// `mirrorOnly`; each mirror `retries` more times after a network error, with backoff.
    /// Stops at the first file that cannot be had, with one error line naming it.
    public static func download(dataset name: String, to directory: String, mirror: String?, mirrorOnly: Bool = false,
                                retries: Int, timeout: Double = 60) -> Int32 {
        precondition(retries >= 0 && timeout > 0)
        guard let dataset = DownloadableDataset.named(name) else {
            Console.error(DownloadError.unknownDataset(name).description); return 1
        }
        let mirrors = (mirror.map { [$0.hasSuffix("/") ? $0 : $0 + "/"] } ?? []) + (mirrorOnly ? [] : dataset.mirrors)
        let existed = FileManager.default.fileExists(atPath: directory)
        do { try AtomicFile.makeDirectory(directory) } catch { Console.error("\(error)"); return 1 }
        for base in MNISTFiles.baseNames {
            do {
                let line = try Downloader(directory: directory, base: base, sha256: dataset.sha256[base]!,
                                          mirrors: mirrors, retries: retries, timeout: timeout).run()
                print(line)
                fflush(stdout)
            } catch {
                // Stop at the first failure: the others would most likely fail the same way.
                Console.error("\(error)")
                if !existed, (try? FileManager.default.contentsOfDirectory(atPath: directory))?.isEmpty == true {
                    rmdir(directory)
                }
                return 1
            }
        }
        return 0
    }
}

/// Fetches one file into place: `DIR/.tmp-NAME.gz.part` first (resumed by an HTTP Range
/// request when a part is there and the server supports it), verified, fsynced, renamed.
struct Downloader {
    let directory: String, base: String, sha256: String, mirrors: [String], retries: Int, timeout: Double
    /// Larger responses are refused: the real files are at most ~30 MB.
    static let maxBytes = 256 << 20

    var name: String { base + ".gz" }
    var finalPath: String { directory + "/" + name }
    var partPath: String { directory + "/" + AtomicFile.temporaryPrefix + name + ".part" }

    /// Returns the line to print on success.
    func run() throws -> String {
        let raw = directory + "/" + base
        if FileManager.default.fileExists(atPath: raw) {
            if (try? Downloader.decompressedSHA256(raw, gzip: false)) == sha256 { return "\(base): already present, SHA-256 verified" }
            Console.warning("\(raw) fails its SHA-256 check and is read before \(name); remove it")
        }
        if FileManager.default.fileExists(atPath: finalPath) {
            if (try? Downloader.decompressedSHA256(finalPath)) == sha256 { return "\(name): already present, SHA-256 verified" }
            Console.warning("\(finalPath) is present but fails its SHA-256 check; downloading it again")
        }
        var attempts: [String] = []
        for mirror in mirrors {
            let url = mirror + name
            guard let remote = URL(string: url), remote.scheme == "http" || remote.scheme == "https" else {
                attempts.append("\(url): not an http(s) URL"); continue
            }
            var problem = ""
            var failures = 0
            while failures <= retries {
                let resumed = partSize()
                switch fetch(remote) {
                case .failure(let f):
                    problem = f.message
                    if f.restart { continue }
                    failures += 1
                    guard f.retryable, failures <= retries else { failures = retries + 1; continue }
                    Thread.sleep(forTimeInterval: min(30, 0.5 * Double(1 << min(failures - 1, 6))))
                case .success(let bytes):
                    do {
                        let digest = try Downloader.decompressedSHA256(partPath)
                        if digest == sha256 {
                            let how = bytes < partSize() ? " (resumed after \(resumed) bytes)" : ""
                            try install()
                            return "\(name): downloaded \(fileSize(finalPath)) bytes from \(url)\(how), SHA-256 verified"
                        }
                        problem = "content fails its SHA-256 check (\(digest.prefix(16))…, expected \(sha256.prefix(16))…)"
                    } catch let DataError.corruptGzip(_, reason) {
                        problem = "not valid gzip: \(reason)"
                    } catch {
                        problem = "\(error)"
                    }
                    unlink(partPath)
                    // Stale bytes from an earlier try may be to blame: once more from scratch.
                    // A whole download that fails the check is this mirror's fault: next mirror.
                    if resumed == 0 { failures = retries + 1 }
                }
            }
            attempts.append("\(url): \(problem)")
        }
        unlink(partPath)
        throw DownloadError.failed(file: finalPath, attempts: attempts.isEmpty ? ["no mirrors"] : attempts)
    }

    func partSize() -> Int { fileSize(partPath) }

    func fileSize(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    /// fsync the part, rename it over the final name, fsync the folder.
    func install() throws {
        let fd = open(partPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw IOFailure(path: partPath, action: "open") }
        let synced = fsync(fd) == 0
        close(fd)
        guard synced else { throw IOFailure(path: partPath, action: "fsync") }
        guard rename(partPath, finalPath) == 0 else { throw IOFailure(path: finalPath, action: "rename \(partPath) to") }
        try AtomicFile.syncDirectory(directory)
    }

    struct FetchFailure: Error {
        var message: String
        /// Worth another try on the same mirror (network trouble, 5xx), unlike a 404.
        var retryable: Bool
        /// The stale part was dropped: try again at once from scratch, without counting a failure.
        var restart = false
    }

    /// Downloads `url` into the part file, asking for the rest of it when a part is there.
    /// Returns the number of bytes received.
    func fetch(_ url: URL) -> Result<Int, FetchFailure> {
        let have = partSize()
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalAndRemoteCacheData, timeoutInterval: timeout)
        if have > 0 { request.setValue("bytes=\(have)-", forHTTPHeaderField: "Range") }
        let sink = PartSink(path: partPath, have: have, limit: Downloader.maxBytes)
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        let session = URLSession(configuration: config, delegate: sink, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        session.dataTask(with: request).resume()
        sink.done.wait()
        return sink.result
    }

    /// SHA-256 of a gzip file's decompressed content, or of a raw file's bytes (no `.gz` in its name).
    static func decompressedSHA256(_ path: String, gzip: Bool = true) throws -> String {
        let file = try FileReader(path: path)
        let source: ByteSource = gzip ? try GzipReader(file: file) : file
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try source.read(into: $0) }
            chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            if n < chunk.count { break }
        }
        try source.checkEnd()
        return SHA256.hex(hasher.finalize())
    }
}

/// Receives a response body into the part file: appended after a 206 that continues where the
/// part ends, from the start after a 200.
final class PartSink: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let path: String, have: Int, limit: Int
    let done = DispatchSemaphore(value: 0)
    private var fd: Int32 = -1
    private var received = 0
    private var failure: Downloader.FetchFailure?
    var result: Result<Int, Downloader.FetchFailure> = .failure(.init(message: "no response", retryable: true))

    init(path: String, have: Int, limit: Int) { self.path = path; self.have = have; self.limit = limit }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        guard let http = response as? HTTPURLResponse else {
            failure = .init(message: "not an HTTP response", retryable: false); return completionHandler(.cancel)
        }
        var append = false
        switch http.statusCode {
        case 200:
            break
        case 206:
            // Content-Range: bytes START-END/TOTAL must continue the part exactly.
            let range = http.value(forHTTPHeaderField: "Content-Range") ?? ""
            let start = range.split(whereSeparator: { $0 == " " || $0 == "-" }).dropFirst().first.flatMap { Int($0) }
            guard start == have else {
                unlink(path)
                failure = .init(message: "server answered the range request with '\(range)'", retryable: true, restart: have > 0)
                return completionHandler(.cancel)
            }
            append = true
        case 416:
            unlink(path)   // the part is not a prefix the server knows; start over
            failure = .init(message: "server refused to resume (HTTP 416)", retryable: true, restart: have > 0)
            return completionHandler(.cancel)
        default:
            let retry = http.statusCode >= 500 || http.statusCode == 429 || http.statusCode == 408
            failure = .init(message: "HTTP \(http.statusCode) \(HTTPURLResponse.localizedString(forStatusCode: http.statusCode))",
                            retryable: retry)
            return completionHandler(.cancel)
        }
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0o644)
        guard fd >= 0 else {
            failure = .init(message: IOFailure(path: path, action: "create").description, retryable: false)
            return completionHandler(.cancel)
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard failure == nil, fd >= 0 else { return }
        received += data.count
        if received > limit {
            failure = .init(message: "response is larger than \(limit) bytes", retryable: false)
            dataTask.cancel(); return
        }
        let ok = data.withUnsafeBytes { raw -> Bool in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 { if errno == EINTR { continue }; return false }
                done += n
            }
            return true
        }
        if !ok {
            failure = .init(message: IOFailure(path: path, action: "write").description, retryable: false)
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if fd >= 0 { close(fd); fd = -1 }
        if let failure {
            result = .failure(failure)
        } else if let error {
            // The bytes so far stay in the part file; the next try resumes after them.
            result = .failure(.init(message: error.localizedDescription, retryable: true))
        } else if let expected = (task.response as? HTTPURLResponse)?.expectedContentLength, expected >= 0, Int64(received) != expected {
            result = .failure(.init(message: "connection closed after \(received) of \(expected) bytes", retryable: true))
        } else {
            result = .success(received)
        }
        done.signal()
    }
}
