import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes files so that a reader sees the old content or the new, never a mix: the bytes
/// go to a temporary file in the same folder, which is fsynced, renamed over the target,
/// and the folder fsynced. Every system call is checked.
public enum AtomicFile {
    /// Prefix of temporary files; stale ones from a killed run are removed by `cleanStale`.
    public static let temporaryPrefix = ".tmp-"

    public static func write(_ bytes: [UInt8], to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let tmp = dir + "/" + temporaryPrefix + url.lastPathComponent + ".\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw IOFailure(path: tmp, action: "create") }
        var ok = false
        defer { if !ok { unlink(tmp) } }
        var written = 0
        try bytes.withUnsafeBytes { raw in
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    let e = IOFailure(path: tmp, action: "write"); close(fd); throw e
                }
                written += n
            }
        }
        guard fsync(fd) == 0 else { let e = IOFailure(path: tmp, action: "fsync"); close(fd); throw e }
        guard close(fd) == 0 else { throw IOFailure(path: tmp, action: "close") }
        guard rename(tmp, path) == 0 else { throw IOFailure(path: path, action: "rename \(tmp) to") }
        ok = true
        try syncDirectory(dir)
    }

    public static func write(_ text: String, to path: String) throws { try write(Array(text.utf8), to: path) }

    public static func syncDirectory(_ dir: String) throws {
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw IOFailure(path: dir, action: "open folder") }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw IOFailure(path: dir, action: "fsync folder") }
    }

    /// Removes temporary files left in `dir` by a run that was killed mid-write.
    @discardableResult
    public static func cleanStale(in dir: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        let stale = names.filter { $0.hasPrefix(temporaryPrefix) }
        for name in stale { unlink(dir + "/" + name) }
        return stale
    }

    /// Creates a folder and its parents, with a clear error.
    public static func makeDirectory(_ path: String) throws {
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw IOFailure(path: path, action: "create folder", reason: (error as NSError).localizedDescription)
        }
    }
}

/// A failed file-system call: what was tried on which path, and the system's reason.
public struct IOFailure: Error, CustomStringConvertible {
    public var path: String, action: String, reason: String
    public init(path: String, action: String, reason: String? = nil) {
        self.path = path; self.action = action
        self.reason = reason ?? String(cString: strerror(errno))
    }
    public var description: String { "\(path): cannot \(action): \(reason)" }
}
