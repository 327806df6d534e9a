import CPNG
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A grayscale picture as read from a file: one sample per pixel, `0 ... maxValue`
/// (255 for 8-bit, up to 65535 for 16-bit PGM).
public struct GrayImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let maxValue: Int
    /// (H, W) row-major samples, each `0 ... maxValue`.
    public let pixels: [UInt16]

    public init(width: Int, height: Int, maxValue: Int = 255, pixels: [UInt16]) {
        precondition(width > 0 && height > 0, "image dimensions must be positive")
        precondition((1...65535).contains(maxValue), "maxValue must be 1...65535")
        precondition(pixels.count == width * height, "\(pixels.count) pixels do not make \(width)×\(height)")
        self.width = width
        self.height = height
        self.maxValue = maxValue
        self.pixels = pixels
    }
}

/// Why an image file was refused; one line each, naming the file.
public enum ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    case notFound(path: String)
    case unreadable(path: String, reason: String)
    /// Neither a PNG nor a PGM (`start` describes the first bytes).
    case unknownFormat(path: String, start: String)
    /// A PNG or PGM whose content does not hold together (`format`: "PNG", "PGM").
    case corrupt(path: String, format: String, problem: String)
    case tooLarge(path: String, width: Int, height: Int)
    /// Nothing on the page: every pixel has the same value (or nearly).
    case blank(path: String)

    public var description: String {
        switch self {
        case let .notFound(path):
            return "\(path): no such image file"
        case let .unreadable(path, reason):
            return "\(path): cannot read image: \(reason)"
        case let .unknownFormat(path, start):
            return "\(path): not a PNG or PGM image (it starts with \(start)); convert it, e.g. `convert IN -colorspace gray OUT.png`"
        case let .corrupt(path, format, problem):
            return "\(path): corrupt \(format) image: \(problem)"
        case let .tooLarge(path, width, height):
            return "\(path): image is \(width)×\(height), larger than the \(ImageFiles.maxSide) pixels a side and \(ImageFiles.maxPixels) pixels in all accepted (scale it down first)"
        case let .blank(path):
            return "\(path): the image is blank (one uniform tone, no digit to read)"
        }
    }
}

/// Reads single pictures (PNG through libpng, PGM P2/P5 by hand) and prepares them the way
/// MNIST's digits were prepared, so a model trained on MNIST can read them.
public enum ImageFiles {
    /// Largest width or height accepted.
    public static let maxSide = 16384
    /// Largest pixel count accepted (a 48-megapixel photo; 8192×8192), checked from the
    /// header before anything is decoded: decoding takes a few bytes per pixel.
    public static let maxPixels = 1 << 26

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Reads a PNG or PGM file, recognised by its first bytes whatever its name.
    public static func read(path: String) throws -> GrayImage {
        let file = try open(path)
        let start = try file.peek(8)
        if start == pngSignature { return try readPNG(path: path) }
        if start.count >= 2 && start[0] == UInt8(ascii: "P") && (start[1] == UInt8(ascii: "2") || start[1] == UInt8(ascii: "5")) {
            return try readPGM(file)
        }
        throw ImageError.unknownFormat(path: path, start: describe(start))
    }

    /// Opens `path` for reading, with image-flavoured errors.
    private static func open(_ path: String) throws -> FileReader {
        do { return try FileReader(path: path) } catch DataError.notFound {
            throw ImageError.notFound(path: path)
        } catch let DataError.unreadable(_, reason) {
            throw ImageError.unreadable(path: path, reason: reason)
        }
    }

    /// `"the bytes 47 49 46 38"` or `"'GIF8'"`, for an unknown-format message.
    private static func describe(_ bytes: [UInt8]) -> String {
        if bytes.isEmpty { return "nothing: the file is empty" }
        let head = bytes.prefix(4)
        if head.allSatisfy({ (0x20..<0x7F).contains($0) }) { return "'" + String(decoding: head, as: UTF8.self) + "'" }
        return "the bytes " + head.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined(separator: " ")
    }

    // MARK: PNG

    /// Any PNG (1–16 bits, gray, RGB, palette, with or without alpha) as 8-bit gray (16-bit
    /// samples without a gamma chunk count as sRGB, as in most image tools). Alpha
    /// is composited onto whichever of black or white contrasts with the opaque pixels, so a
    /// dark digit on a transparent page reads as dark on white.
    static func readPNG(path: String) throws -> GrayImage {
        var image = png_image()
        cpng_image_init(&image)
        guard png_image_begin_read_from_file(&image, path) != 0 else { throw pngProblem(path, image) }
        let width = Int(image.width), height = Int(image.height)
        guard width <= maxSide, height <= maxSide, width * height <= maxPixels else {
            png_image_free(&image)
            throw ImageError.tooLarge(path: path, width: width, height: height)
        }
        image.format = cpng_format_gray_alpha()
        image.flags |= cpng_flag_16bit_srgb()
        var ga = [UInt8](repeating: 0, count: width * height * 2)  // (H, W, [gray, alpha])
        let ok = ga.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
        guard ok != 0 else { throw pngProblem(path, image) }
        return GrayImage(width: width, height: height, pixels: flattenAlpha(ga))
    }

    /// libpng's reason for a failed read, as a corrupt-PNG error.
    private static func pngProblem(_ path: String, _ image: png_image) -> ImageError {
        var image = image
        let message = String(cString: cpng_image_message(&image))
        return .corrupt(path: path, format: "PNG", problem: message == "Read Error" ? "the file ends early (\(message))" : message)
    }

    /// Gray + alpha pairs composited onto black or white, whichever the opaque pixels are not.
    static func flattenAlpha(_ ga: [UInt8]) -> [UInt16] {
        let count = ga.count / 2
        var opaqueSum = 0, opaqueCount = 0, translucent = false
        for i in 0..<count {
            let alpha = ga[2 * i + 1]
            if alpha < 255 { translucent = true }
            if alpha >= 128 { opaqueSum += Int(ga[2 * i]); opaqueCount += 1 }
        }
        guard translucent else { return (0..<count).map { UInt16(ga[2 * $0]) } }
        let background = opaqueCount > 0 && opaqueSum < 128 * opaqueCount ? 255 : 0
        return (0..<count).map { i in
            let g = Int(ga[2 * i]), a = Int(ga[2 * i + 1])
            return UInt16((g * a + background * (255 - a) + 127) / 255)
        }
    }

    // MARK: PGM

    /// PGM, plain (P2, decimal samples) or raw (P5, 1 or 2 big-endian bytes per sample).
    /// The header is checked, and the file's size against it, before pixels are allocated.
    static func readPGM(_ file: FileReader) throws -> GrayImage {
        let path = file.path
        func corrupt(_ problem: String) -> ImageError { .corrupt(path: path, format: "PGM", problem: problem) }
        // Header: magic, width, height, maxval, separated by whitespace and # comments.
        let head = try file.peek(4096)
        var at = 2
        func field(_ name: String) throws -> Int {
            while at < head.count {
                if head[at] == UInt8(ascii: "#") {
                    while at < head.count && head[at] != 0x0A && head[at] != 0x0D { at += 1 }
                } else if isSpace(head[at]) {
                    at += 1
                } else { break }
            }
            var value = 0, digits = 0
            while at < head.count, let d = digit(head[at]) {
                value = min(value * 10 + d, Int(Int32.max)); digits += 1; at += 1
            }
            guard digits > 0 else {
                throw corrupt(at >= head.count ? "the header ends before its \(name)" : "the header's \(name) is not a number")
            }
            return value
        }
        let width = try field("width"), height = try field("height"), maxValue = try field("maximum value")
        guard width > 0, height > 0 else { throw corrupt("the header declares a \(width)×\(height) image") }
        guard width <= maxSide, height <= maxSide, width * height <= maxPixels else {
            throw ImageError.tooLarge(path: path, width: width, height: height)
        }
        guard (1...65535).contains(maxValue) else { throw corrupt("maximum value \(maxValue) is outside 1...65535") }
        guard at < head.count, isSpace(head[at]) else { throw corrupt("no whitespace after the header's maximum value") }
        at += 1   // exactly one whitespace byte before a P5 raster
        let count = width * height
        let raw = head[1] == UInt8(ascii: "5")
        let bytesPerSample = maxValue > 255 ? 2 : 1
        // A P5 raster is exactly count × bytesPerSample; a P2 sample takes at least 2 bytes
        // (a digit and a separator) but the last.
        let needed = raw ? count * bytesPerSample : 2 * count - 1
        guard file.size - at >= needed else {
            throw corrupt(raw ? "truncated: the header promises \(needed) bytes of pixels, the file has \(max(0, file.size - at))"
                              : "truncated: \(count) samples cannot fit in the \(max(0, file.size - at)) bytes after the header")
        }
        var bytes = [UInt8](repeating: 0, count: file.size)
        let n = try bytes.withUnsafeMutableBytes { try file.read(into: $0) }
        guard n == file.size else { throw corrupt("the file shrank while it was read") }

        var pixels = [UInt16](repeating: 0, count: count)
        if raw {
            for i in 0..<count {
                let v = bytesPerSample == 1 ? Int(bytes[at + i]) : Int(bytes[at + 2 * i]) << 8 | Int(bytes[at + 2 * i + 1])
                guard v <= maxValue else { throw corrupt("sample \(i) is \(v), above the maximum value \(maxValue)") }
                pixels[i] = UInt16(v)
            }
        } else {
            for i in 0..<count {
                while at < bytes.count && isSpace(bytes[at]) { at += 1 }
                var v = 0, digits = 0
                while at < bytes.count, let d = digit(bytes[at]) { v = min(v * 10 + d, 1 << 20); digits += 1; at += 1 }
                guard digits > 0 else {
                    throw corrupt(at >= bytes.count ? "truncated: \(i) of \(count) samples" : "sample \(i) is not a number")
                }
                guard v <= maxValue else { throw corrupt("sample \(i) is \(v), above the maximum value \(maxValue)") }
                pixels[i] = UInt16(v)
            }
        }
        return GrayImage(width: width, height: height, maxValue: maxValue, pixels: pixels)
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (0x09...0x0D).contains(b) }
    private static func digit(_ b: UInt8) -> Int? { (0x30...0x39).contains(b) ? Int(b - 0x30) : nil }

    // MARK: MNIST-style preparation

    /// The picture of one digit as MNIST's images look (light strokes on black, the digit in a
    /// `box`-pixel square, centred by mass in `side × side`), prepared by `DigitPreparation`
    /// (background removed, Otsu's threshold, the largest ink component). Throws
    /// `ImageError.blank` when there is no ink. Returns (side, side) bytes, row-major.
    public static func mnistStyle(_ image: GrayImage, source: String, side: Int = 28, box: Int = 20) throws -> [UInt8] {
        try DigitPreparation.prepare(image, source: source, side: side, box: box).pixels
    }

    /// The median of the border pixels and whether it is light (so the picture is dark on light).
    static func borderTone(_ image: GrayImage) -> (median: UInt16, light: Bool) {
        let w = image.width, h = image.height
        var border: [UInt16] = []
        border.reserveCapacity(2 * (w + h))
        for x in 0..<w {
            border.append(image.pixels[x])
            if h > 1 { border.append(image.pixels[(h - 1) * w + x]) }
        }
        for y in 1..<max(1, h - 1) {
            border.append(image.pixels[y * w])
            if w > 1 { border.append(image.pixels[y * w + w - 1]) }
        }
        border.sort()
        let median = border[border.count / 2]
        return (median, 2 * Int(median) > image.maxValue)
    }

    /// Separable resampling of a (height, width) plane: area averaging along an axis that
    /// shrinks (every source pixel counts by its overlap, so nothing aliases), bilinear along
    /// one that grows.
    static func resample(_ plane: [Float], width: Int, height: Int, toWidth: Int, toHeight: Int) -> [Float] {
        let across = weights(from: width, to: toWidth), down = weights(from: height, to: toHeight)
        var rows = [Float](repeating: 0, count: height * toWidth)  // (height, toWidth)
        for y in 0..<height {
            for (x, taps) in across.enumerated() {
                var s: Float = 0
                for (i, wt) in taps { s += wt * plane[y * width + i] }
                rows[y * toWidth + x] = s
            }
        }
        var out = [Float](repeating: 0, count: toHeight * toWidth)  // (toHeight, toWidth)
        for (y, taps) in down.enumerated() {
            for x in 0..<toWidth {
                var s: Float = 0
                for (i, wt) in taps { s += wt * rows[i * toWidth + x] }
                out[y * toWidth + x] = s
            }
        }
        return out
    }

    /// For each of `m` output pixels, the source pixels (of `n`) it draws on and their weights.
    static func weights(from n: Int, to m: Int) -> [[(Int, Float)]] {
        let ratio = Double(n) / Double(m)   // source pixels per output pixel
        return (0..<m).map { o in
            if ratio > 1 {
                // Output pixel o covers the source interval [o·ratio, (o+1)·ratio).
                let a = Double(o) * ratio, b = Double(o + 1) * ratio
                var taps: [(Int, Float)] = []
                for i in Int(a.rounded(.down))..<min(n, Int(b.rounded(.up))) {
                    let overlap = min(b, Double(i + 1)) - max(a, Double(i))
                    if overlap > 0 { taps.append((i, Float(overlap / ratio))) }
                }
                return taps
            }
            // Pixel centres line up: output centre o + 0.5 maps to source (o + 0.5)·ratio.
            let x = min(max((Double(o) + 0.5) * ratio - 0.5, 0), Double(n - 1))
            let i = Int(x.rounded(.down)), f = Float(x - Double(i))
            return i + 1 < n && f > 0 ? [(i, 1 - f), (i + 1, f)] : [(i, Float(1))]
        }
    }
}
