#if canImport(Glibc)
import Glibc
private let posixRead = Glibc.read
#elseif canImport(Darwin)
import Darwin
private let posixRead = Darwin.read
#endif

/// A forward-only stream of a file's bytes: the raw file, or its decompressed content.
public protocol ByteSource: AnyObject {
    /// Fills `buffer` from the stream, stopping early only where the stream ends;
    /// returns the number of bytes written.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// How many bytes are left, when known without reading them (raw files, not gzip).
    var remainingIfKnown: Int? { get }
    /// Throws if the stream did not end cleanly (for gzip: no end marker and checksum).
    func checkEnd() throws
}

extension ByteSource {
    /// Reads to the end, keeping nothing, and returns how many bytes there were.
    func countRemaining() throws -> Int {
        try withUnsafeTemporaryAllocation(byteCount: 64 * 1024, alignment: 16) { scratch in
            var total = 0
            while true {
                let n = try read(into: scratch)
                total += n
                if n < scratch.count { return total }
            }
        }
    }
}

/// A file opened read-only, read sequentially with POSIX `read`.
public final class FileReader: ByteSource {
    let path: String
    /// The file's size when it was opened.
    public let size: Int
    private let descriptor: Int32
    private var offset = 0

    /// Opens `path`, refusing missing files, folders and anything that is not a regular file.
    /// The open does not block (a FIFO with no writer would wait forever), and the type is
    /// checked with `fstat` on what was opened, before anything is read.
    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw DataError.notFound(path: path) }
            throw DataError.unreadable(path: path, reason: String(cString: strerror(code)))
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw DataError.unreadable(path: path, reason: String(cString: strerror(code)))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            let reason = (info.st_mode & S_IFMT) == S_IFDIR ? "it is a folder, not a file" : "not a regular file"
            throw DataError.unreadable(path: path, reason: reason)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        descriptor = fd
        size = Int(info.st_size)
    }

    /// Opens `path` and checks that its size (from `fstat`) is at most `limit` bytes; `what`
    /// names the file in the message ("checkpoint", "metrics").
    public convenience init(path: String, limit: Int, what: String) throws {
        try self.init(path: path)
        guard size <= limit else {
            throw DataError.unreadable(path: path, reason: "the \(what) is \(size) bytes, more than the \(limit) accepted")
        }
    }

    /// Reads the next `count` bytes (fewer only where the file ends).
    public func read(count: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialized = 0
            initialized = try read(into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// The whole of a regular file of at most `limit` bytes: the size `fstat` gave, no more
    /// (a file that grows meanwhile is read to that size; one that shrinks is refused).
    public static func contents(of path: String, limit: Int, what: String) throws -> [UInt8] {
        let file = try FileReader(path: path, limit: limit, what: what)
        let bytes = try file.read(count: file.size)
        guard bytes.count == file.size else {
            throw DataError.unreadable(path: path, reason: "the \(what) shrank from \(file.size) to \(bytes.count) bytes while it was read")
        }
        return bytes
    }

    deinit { close(descriptor) }

    /// The first `count` bytes of the file (fewer if it is shorter), without moving the read position.
    func peek(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, 0) }
        guard n >= 0 else { throw DataError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        return Array(bytes[0..<n])
    }

    /// The last 4 bytes as a little-endian number: a gzip file's ISIZE, its (last member's)
    /// decompressed size mod 2^32. Nil for a file shorter than that.
    func trailerSize() throws -> UInt32? {
        guard size >= 4 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 4)
        let n = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, 4, off_t(size - 4)) }
        guard n == 4 else { return nil }
        return bytes.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            // Linux moves at most ~2 GiB per call; ask for 1 GiB at a time.
            let want = min(buffer.count - filled, 1 << 30)
            let n = posixRead(descriptor, buffer.baseAddress! + filled, want)
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            if n == 0 { break }
            filled += n
        }
        offset += filled
        return filled
    }

    public var remainingIfKnown: Int? { max(0, size - offset) }

    public func checkEnd() throws {}
}
