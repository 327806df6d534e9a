import Data
import Foundation
import Hashing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `distcnn download --dataset NAME --to DIR`: fetches the four `.gz` files, each verified by
/// the SHA-256 of its decompressed content before it is renamed into place. Files already
/// present and valid (raw or `.gz`) are kept. `mirror` is tried first, and alone with
/// `mirrorOnly`; each mirror `retries` more times after a network error, with backoff.
/// `fileDone` receives one line per file as it is in place, `warning` a line for a file that is
/// present but fails its check. Stops at the first file that cannot be had, throwing one error
/// that names it (and removes the folder if it made it and it is still empty).
public func downloadDataset(_ name: String, to directory: String, mirror: String?, mirrorOnly: Bool = false,
                            retries: Int, timeout: Double = 60,
                            warning: (String) -> Void, fileDone: (String) -> Void) throws {
    precondition(retries >= 0 && timeout > 0)
    guard let dataset = DownloadableDataset.named(name) else { throw DownloadError.unknownDataset(name) }
    let mirrors = (mirror.map { [$0.hasSuffix("/") ? $0 : $0 + "/"] } ?? []) + (mirrorOnly ? [] : dataset.mirrors)
    let existed = FileManager.default.fileExists(atPath: directory)
    do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
        throw DownloadError.io("\(directory): cannot create folder: \((error as NSError).localizedDescription)")
    }
    for base in MNISTFiles.baseNames {
        do {
            fileDone(try Downloader(directory: directory, base: base, sha256: dataset.sha256[base]!, size: dataset.sizes[base]!,
                                    mirrors: mirrors, retries: retries, timeout: timeout).run(warning: warning))
        } catch {
            // Stop at the first failure: the others would most likely fail the same way.
            if !existed, (try? FileManager.default.contentsOfDirectory(atPath: directory))?.isEmpty == true {
                rmdir(directory)
            }
            throw error
        }
    }
}

/// Fetches one file into place: `DIR/.tmp-NAME.gz.part` first (resumed by an HTTP Range
/// request when a part is there and the server supports it), verified, fsynced, renamed. A part
/// left by a network failure stays for the next try to resume, as one left by a kill does.
struct Downloader {
    let directory: String, base: String, sha256: String
    /// Bytes the file decompresses to: no more are decompressed, so a gzip bomb costs a
    /// fraction of a second instead of minutes of hashing.
    let size: Int
    let mirrors: [String], retries: Int, timeout: Double

    /// Largest download accepted: gzip never grows data by more than a few bytes per 64 KiB
    /// block and a header, so a longer response is not this file.
    var maxDownload: Int { size + size / 64 + 4096 }

    var name: String { base + ".gz" }
    var finalPath: String { directory + "/" + name }
    /// Named like the trainer's temporary files (`.tmp-`), which nothing reads as data.
    var partPath: String { directory + "/.tmp-" + name + ".part" }

    /// Returns the line to print on success; `warning` hears of files present but invalid.
    func run(warning: (String) -> Void) throws -> String {
        let raw = directory + "/" + base
        if FileManager.default.fileExists(atPath: raw) {
            if (try? Downloader.decompressedSHA256(raw, gzip: false, size: size)) == sha256 { return "\(base): already present, SHA-256 verified" }
            warning("\(raw) fails its SHA-256 check and is read before \(name); remove it")
        }
        if FileManager.default.fileExists(atPath: finalPath) {
            if (try? Downloader.decompressedSHA256(finalPath, size: size)) == sha256 { return "\(name): already present, SHA-256 verified" }
            warning("\(finalPath) is present but fails its SHA-256 check; downloading it again")
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
                        let digest = try Downloader.decompressedSHA256(partPath, size: size)
                        if digest == sha256 {
                            let how = bytes < partSize() ? " (resumed after \(resumed) bytes)" : ""
                            try install()
                            return "\(name): downloaded \(fileSize(finalPath)) bytes from \(url)\(how), SHA-256 verified"
                        }
                        problem = "content fails its SHA-256 check (\(digest.prefix(16))…, expected \(sha256.prefix(16))…)"
                    } catch let DataError.corruptGzip(_, reason) {
                        problem = "not valid gzip: \(reason)"
                    } catch let tooLarge as TooLarge {
                        problem = tooLarge.description
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
        // What a network failure left is a prefix of the file: kept, the next try asks for the rest.
        let kept = partSize()
        if kept > 0 { attempts.append("the \(kept) bytes received are kept in \(partPath); run again to resume") }
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
        guard fd >= 0 else { throw DownloadError.system(path: partPath, action: "open") }
        let synced = fsync(fd) == 0
        close(fd)
        guard synced else { throw DownloadError.system(path: partPath, action: "fsync") }
        guard rename(partPath, finalPath) == 0 else { throw DownloadError.system(path: finalPath, action: "rename \(partPath) to") }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw DownloadError.system(path: directory, action: "open folder") }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw DownloadError.system(path: directory, action: "fsync folder") }
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
        let sink = PartSink(path: partPath, have: have, limit: maxDownload)
        let config = URLSessionConfiguration.ephemeral
        config.timeoutIntervalForRequest = timeout
        let session = URLSession(configuration: config, delegate: sink, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        session.dataTask(with: request).resume()
        sink.done.wait()
        return sink.result
    }

    /// A file that decompresses to more than the dataset's file holds.
    struct TooLarge: Error, CustomStringConvertible {
        var size: Int
        var description: String { "decompresses to more than \(size) bytes, the size of this file (a gzip bomb?)" }
    }

    /// SHA-256 of a gzip file's decompressed content, or of a raw file's bytes (no `.gz` in its
    /// name); throws `TooLarge` as soon as it passes `size` bytes.
    static func decompressedSHA256(_ path: String, gzip: Bool = true, size: Int) throws -> String {
        let file = try FileReader(path: path)
        let source: ByteSource = gzip ? try GzipReader(file: file) : file
        var hasher = SHA256()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var total = 0
        while true {
            let n = try chunk.withUnsafeMutableBytes { try source.read(into: $0) }
            total += n
            if total > size { throw TooLarge(size: size) }
            chunk.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            if n < chunk.count { break }
        }
        try source.checkEnd()
        return SHA256.hex(hasher.finalize())
    }
}

