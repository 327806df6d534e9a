import CZlib
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The decompressed bytes of a gzip file, streamed through zlib's `inflate` 64 KiB of
/// input at a time, so memory use is what the caller asks for and no more.
///
/// zlib checks each member's CRC-32 and length when it reaches the member's end.
/// Concatenated members (what `cat a.gz b.gz` makes, and gzip reads) follow one another;
/// anything else after the last member is refused.
public final class GzipReader: ByteSource {
    /// The first two bytes of every gzip member (RFC 1952).
    static let magic: [UInt8] = [0x1f, 0x8b]
    /// Deflate cannot expand more than 1032:1; with headroom this bounds what `size`
    /// compressed bytes can decompress to, before anything is inflated.
    static let maxExpansion = 1100

    private let file: FileReader
    /// zlib keeps a pointer back to its stream, so the stream lives on the heap, unmoved.
    private let stream: UnsafeMutablePointer<z_stream>
    /// Compressed bytes read ahead of `inflate` (`stream.next_in` points inside).
    private let input: UnsafeMutableRawBufferPointer
    private var state = State.inflating

    private enum State {
        case inflating      // inside a member
        case memberEnded    // a member's trailer checked out; another may follow
        case finished       // the file ended right after a member
        case truncated      // the file ended inside a member
    }

    /// Starts decompressing `file` from its current position (its first byte, in practice).
    public init(file: FileReader) throws {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let code = czlib_inflate_init_gzip(stream)
        guard code == Z_OK else {
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw DataError.unreadable(path: file.path, reason: "zlib could not start (error \(code))")
        }
        self.file = file
        self.stream = stream
        self.input = .allocate(byteCount: 64 * 1024, alignment: 16)
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
        input.deallocate()
    }

    /// The size of the compressed file.
    var compressedSize: Int { file.size }

    public var remainingIfKnown: Int? { nil }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var produced = 0
        while produced < buffer.count {
            switch state {
            case .finished, .truncated:
                return produced
            case .memberEnded:
                try startNextMember()
                continue
            case .inflating:
                break
            }
            if stream.pointee.avail_in == 0, try refill() == 0 {
                state = .truncated
                return produced
            }
            let want = min(buffer.count - produced, Int(UInt32.max))
            stream.pointee.next_out = (buffer.baseAddress! + produced).assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = uInt(want)
            let inputBefore = stream.pointee.avail_in
            let code = inflate(stream, Z_NO_FLUSH)
            let written = want - Int(stream.pointee.avail_out)
            produced += written
            switch code {
            case Z_OK:
                continue
            case Z_STREAM_END:
                state = .memberEnded
            case Z_BUF_ERROR:
                // No progress: fine when input ran out (refilled above next time round).
                if written == 0 && stream.pointee.avail_in > 0 && stream.pointee.avail_in == inputBefore {
                    throw DataError.corruptGzip(path: file.path, problem: "zlib cannot make progress")
                }
            case Z_NEED_DICT:
                throw DataError.corruptGzip(path: file.path, problem: "the stream asks for a preset dictionary, which gzip files never use")
            case Z_DATA_ERROR:
                throw DataError.corruptGzip(path: file.path, problem: zlibProblem())
            case Z_MEM_ERROR:
                throw DataError.unreadable(path: file.path, reason: "out of memory while decompressing")
            default:
                throw DataError.corruptGzip(path: file.path, problem: "zlib error \(code)")
            }
        }
        return produced
    }

    public func checkEnd() throws {
        if state == .inflating || state == .memberEnded { _ = try countRemaining() }
        if state == .truncated {
            throw DataError.corruptGzip(
                path: file.path,
                problem: "the compressed stream stops before its end marker and checksum (truncated download?)")
        }
    }

    /// Reads more compressed bytes after the unconsumed ones; returns how many were new.
    private func refill() throws -> Int {
        let kept = Int(stream.pointee.avail_in)
        if kept > 0 { memmove(input.baseAddress!, stream.pointee.next_in, kept) }
        let fresh = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: input[kept...]))
        stream.pointee.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_in = uInt(kept + fresh)
        return fresh
    }

    /// After a member's end: the file must end, or another gzip member must begin.
    private func startNextMember() throws {
        if stream.pointee.avail_in < 2 { _ = try refill() }
        let available = Int(stream.pointee.avail_in)
        if available == 0 {
            state = .finished
            return
        }
        let next = stream.pointee.next_in!
        if available >= 2 && next[0] == Self.magic[0] && next[1] == Self.magic[1] {
            inflateReset(stream)
            state = .inflating
            return
        }
        let extra = available + (file.remainingIfKnown ?? 0)
        throw DataError.corruptGzip(path: file.path, problem: "\(extra) byte\(extra == 1 ? "" : "s") of non-gzip data after the end of the compressed stream")
    }

    /// zlib's own words for a data error, with the checksum ones spelled out.
    private func zlibProblem() -> String {
        let message = stream.pointee.msg.map { String(cString: $0) } ?? "invalid compressed data"
        switch message {
        case "incorrect data check": return "CRC-32 mismatch (incorrect data check): the data is damaged"
        case "incorrect length check": return "length mismatch (incorrect length check): the data is damaged"
        default: return message
        }
    }
}
