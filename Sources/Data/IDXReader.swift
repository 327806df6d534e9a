/// The content of an IDX image file: `count` images of `height × width × channels` bytes.
public struct IDXImages: Sendable {
    public let count: Int
    public let height: Int
    public let width: Int
    public let channels: Int
    /// (N, H, W, C) row-major, one byte per pixel and channel.
    public let pixels: [UInt8]
}

/// Reads IDX files (the MNIST format), raw or gzipped, and refuses any file that is not
/// exactly what its header says.
///
/// An IDX file is a 4-byte magic number (`00 00`, the element type, the number of
/// dimensions), one big-endian `UInt32` per dimension, then the elements, row-major.
/// Gzip is recognised by its magic bytes `1f 8b`, whatever the file is called.
/// The header is checked (kind, element type, dimensions within sane limits) before
/// anything is allocated for the data, and the data must then match it to the byte.
public enum IDXReader {
    /// Magic number of a label file: unsigned bytes, 1 dimension (N).
    public static let labelMagic: UInt32 = 0x0000_0801
    /// Magic number of an image file: unsigned bytes, 3 dimensions (N, H, W).
    public static let imageMagic: UInt32 = 0x0000_0803
    /// Largest image height or width accepted.
    public static let maxSide = 4096
    /// Largest number of channels accepted (a 4-dimensional N×H×W×C image file).
    public static let maxChannels = 4
    /// Largest number of examples accepted.
    public static let maxCount = 100_000_000
    /// Largest data section accepted, in bytes (2 GiB).
    public static let maxBytes = 1 << 31

    /// Reads a label file: one unsigned byte per example.
    public static func readLabels(path: String) throws -> [UInt8] {
        try read(path: path, kind: .labels).payload
    }

    /// Reads an image file: N×H×W (one channel) or N×H×W×C unsigned bytes.
    public static func readImages(path: String) throws -> IDXImages {
        let (dimensions, pixels) = try read(path: path, kind: .images)
        return IDXImages(count: dimensions[0], height: dimensions[1], width: dimensions[2],
                         channels: dimensions.count == 4 ? dimensions[3] : 1, pixels: pixels)
    }

    public enum Kind: Sendable {
        case labels, images
        public var magic: UInt32 { self == .labels ? IDXReader.labelMagic : IDXReader.imageMagic }
    }

    /// The dimensions one IDX file of `kind` declares, validated, reading only its header
    /// (through gzip when compressed): what a pair of files is checked with before either's
    /// data is allocated.
    public static func dimensions(path: String, kind: Kind) throws -> [Int] {
        let file = try FileReader(path: path)
        let isGzip = try file.peek(2) == GzipReader.magic
        let source: ByteSource = isGzip ? try GzipReader(file: file) : file
        return try readDimensions(source, path: path, kind: kind, isGzip: isGzip)
    }

    /// Reads the magic number and dimensions, refusing anything but `kind` within the limits.
    private static func readDimensions(_ source: ByteSource, path: String, kind: Kind, isGzip: Bool) throws -> [Int] {
        let magic = try readHeader(source, count: 4, path: path, isGzip: isGzip, readSoFar: 0)
        let magicWord = magic.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard magic[0] == 0 && magic[1] == 0 else {
            throw DataError.badMagic(path: path, found: magicWord, expected: kind.magic)
        }
        guard magic[2] == 0x08 else {
            throw DataError.unsupportedElementType(path: path, typeCode: magic[2])
        }
        let dimensionCount = Int(magic[3])
        switch kind {
        case .labels where dimensionCount != 1:
            throw DataError.wrongDimensionCount(path: path, found: dimensionCount, expected: "1")
        case .images where dimensionCount != 3 && dimensionCount != 4:
            throw DataError.wrongDimensionCount(path: path, found: dimensionCount, expected: "3 (N×H×W) or 4 (N×H×W×C)")
        default:
            break
        }

        let sizes = try readHeader(source, count: 4 * dimensionCount, path: path, isGzip: isGzip, readSoFar: 4)
        let dimensions = (0..<dimensionCount).map { d in
            sizes[4 * d ..< 4 * d + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        try validate(dimensions, kind: kind, path: path)
        return dimensions
    }

    /// Reads and validates one IDX file of `kind`; returns its dimensions and data section.
    static func read(path: String, kind: Kind) throws -> (dimensions: [Int], payload: [UInt8]) {
        let file = try FileReader(path: path)
        let isGzip = try file.peek(2) == GzipReader.magic
        let source: ByteSource = isGzip ? try GzipReader(file: file) : file
        let dimensions = try readDimensions(source, path: path, kind: kind, isGzip: isGzip)
        let payloadSize = dimensions.reduce(1, *)
        let what = kind == .labels ? "labels" : "pixels"

        // Refuse data that cannot be there before allocating room for it.
        var allocateUpFront = true
        if let remaining = source.remainingIfKnown {
            if remaining < payloadSize {
                throw DataError.truncated(path: path, what: what, expected: payloadSize, found: remaining, decompressed: false)
            }
            if remaining > payloadSize {
                throw DataError.trailingBytes(path: path, expected: payloadSize, extra: remaining - payloadSize, decompressed: false)
            }
        } else if let gzip = source as? GzipReader {
            if payloadSize / GzipReader.maxExpansion > gzip.compressedSize {
                let found = try source.countRemaining()
                throw DataError.truncated(path: path, what: what, expected: payloadSize, found: found, decompressed: true)
            }
            // gzip's trailer states the (last member's) decompressed size mod 2^32. When it is
            // not what the header needs, the header may lie: grow the buffer with the data
            // actually there instead of trusting it. (A file of several members lands here too,
            // and still reads.)
            let whole = UInt64(4 + 4 * dimensions.count + payloadSize) & 0xFFFF_FFFF
            allocateUpFront = try file.trailerSize() == UInt32(whole)
        }

        let payload: [UInt8]
        if allocateUpFront {
            payload = try [UInt8](unsafeUninitializedCapacity: payloadSize) { buffer, initialized in
                initialized = 0
                initialized = try source.read(into: UnsafeMutableRawBufferPointer(buffer))
            }
        } else {
            var grown = [UInt8]()
            let chunk = 1 << 22
            while grown.count < payloadSize {
                let want = min(chunk, payloadSize - grown.count)
                let part = try [UInt8](unsafeUninitializedCapacity: want) { buffer, initialized in
                    initialized = 0
                    initialized = try source.read(into: UnsafeMutableRawBufferPointer(buffer))
                }
                grown += part
                if part.count < want { break }
            }
            payload = grown
        }
        if payload.count < payloadSize {
            throw DataError.truncated(path: path, what: what, expected: payloadSize, found: payload.count, decompressed: isGzip)
        }
        let extra = try source.countRemaining()
        if extra > 0 {
            throw DataError.trailingBytes(path: path, expected: payloadSize, extra: extra, decompressed: isGzip)
        }
        try source.checkEnd()
        return (dimensions, payload)
    }

    /// Reads `count` header bytes, or says the file ends inside its header.
    private static func readHeader(_ source: ByteSource, count: Int, path: String, isGzip: Bool,
                                   readSoFar: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try source.read(into: $0) }
        guard n == count else {
            throw DataError.truncated(path: path, what: "IDX header", expected: readSoFar + count,
                                      found: readSoFar + n, decompressed: isGzip)
        }
        return bytes
    }

    /// Refuses zero and absurd dimensions; what passes fits in `maxBytes` (and so in an `Int`).
    private static func validate(_ dimensions: [Int], kind: Kind, path: String) throws {
        func refuse(_ problem: String) -> DataError {
            DataError.badDimensions(path: path, dimensions: dimensions, problem: problem)
        }
        if let zero = dimensions.firstIndex(of: 0) {
            throw refuse("dimension \(zero + 1) is zero")
        }
        if dimensions[0] > maxCount {
            throw refuse("\(dimensions[0]) examples is more than the limit of \(maxCount)")
        }
        guard kind == .images else { return }
        if dimensions[1] > maxSide || dimensions[2] > maxSide {
            throw refuse("images larger than \(maxSide)×\(maxSide)")
        }
        if dimensions.count == 4 && dimensions[3] > maxChannels {
            throw refuse("\(dimensions[3]) channels is more than the limit of \(maxChannels)")
        }
        // Each factor is at most 1e8 or 4096 here, so the product cannot overflow an Int.
        let bytes = dimensions.reduce(1, *)
        if bytes > maxBytes {
            throw refuse("\(bytes) bytes of pixels is more than the limit of \(maxBytes) (2 GiB)")
        }
    }
}
