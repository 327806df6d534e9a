/// Something wrong with the data files a user pointed at: each case prints as one line
/// saying what is wrong, in which file, and what to do about it.
public enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A file or folder that should exist does not.
    case notFound(path: String)
    /// A data folder lacks some of the files a dataset needs (`missing` lists their base names).
    case missingFiles(directory: String, missing: [String])
    /// The operating system refused to open or read the file.
    case unreadable(path: String, reason: String)
    /// The first three bytes are not an IDX magic number (`found` is the whole first word).
    case badMagic(path: String, found: UInt32, expected: UInt32)
    /// An IDX file whose elements are not unsigned bytes (type code 0x08).
    case unsupportedElementType(path: String, typeCode: UInt8)
    /// The IDX header declares the wrong number of dimensions for this kind of file.
    case wrongDimensionCount(path: String, found: Int, expected: String)
    /// The IDX header's dimensions are zero or too large to be real data.
    case badDimensions(path: String, dimensions: [Int], problem: String)
    /// The file ends before the data its header promises (`what`: "IDX header", "pixels", "labels").
    case truncated(path: String, what: String, expected: Int, found: Int, decompressed: Bool)
    /// The file goes on after the data its header promises.
    case trailingBytes(path: String, expected: Int, extra: Int, decompressed: Bool)
    /// zlib refused the gzip stream (bad header, bad deflate data, CRC or length mismatch).
    case corruptGzip(path: String, problem: String)
    /// An image file and a label file that disagree on the number of examples.
    case countMismatch(images: String, imageCount: Int, labels: String, labelCount: Int)
    /// A label that is not one of the dataset's classes.
    case labelOutOfRange(path: String, index: Int, label: Int, classes: Int)
    /// Test images whose shape differs from the training images'.
    case shapeMismatch(path: String, shape: [Int], expected: [Int])
    /// A validation split that is negative or leaves no training examples.
    case badValidationSplit(requested: Int, available: Int)

    public var description: String {
        switch self {
        case let .notFound(path):
            return "\(path): not found (check --data)"
        case let .missingFiles(directory, missing):
            if missing.count == MNISTFiles.baseNames.count {
                return "\(directory): no dataset files (expected \(MNISTFiles.baseNames.joined(separator: ", ")), "
                    + "each raw or gzipped as .gz; check --data)"
            }
            return "\(directory): missing \(missing.joined(separator: ", ")) (each raw or gzipped as .gz; check --data)"
        case let .unreadable(path, reason):
            return "\(path): cannot read: \(reason) (check the path and its permissions, or --data)"
        case let .badMagic(path, found, expected):
            return "\(path): not an IDX \(Self.kindName(magic: expected)) file: magic number is "
                + "\(Self.hex32(found)), expected \(Self.hex32(expected)) (re-download the file or check --data)"
        case let .unsupportedElementType(path, typeCode):
            return "\(path): IDX elements of type 0x\(String(typeCode, radix: 16)) "
                + "(\(Self.typeName(typeCode))) are not supported, only unsigned bytes (0x08) "
                + "(use MNIST-style files or convert them)"
        case let .wrongDimensionCount(path, found, expected):
            var hint = "re-download the file or check --data"
            if found == 1 && expected != "1" { hint = "this looks like a label file: are the image and label files swapped?" }
            if found >= 3 && expected == "1" { hint = "this looks like an image file: are the image and label files swapped?" }
            return "\(path): IDX header declares \(found) dimension\(found == 1 ? "" : "s"), expected \(expected) (\(hint))"
        case let .badDimensions(path, dimensions, problem):
            let shape = dimensions.map(String.init).joined(separator: "×")
            return "\(path): IDX dimensions \(shape) refused: \(problem) (the file is corrupt or not image data; re-download it or check --data)"
        case let .truncated(path, what, expected, found, decompressed):
            let has = decompressed ? "the decompressed file has" : "the file has"
            let promise = what == "IDX header"
                ? "an IDX header needs \(expected) bytes"
                : "header promises \(expected) bytes of \(what)"
            return "\(path): truncated: \(promise), \(has) \(found) (re-download the file or check --data)"
        case let .trailingBytes(path, expected, extra, decompressed):
            let kind = decompressed ? "decompressed bytes" : "bytes"
            return "\(path): \(extra) unexpected \(kind) after the \(expected) the header promises "
                + "(the file is corrupt or not an IDX file; re-download it or check --data)"
        case let .corruptGzip(path, problem):
            return "\(path): corrupt gzip data: \(problem) (re-download the file; `gzip -t` checks it)"
        case let .countMismatch(images, imageCount, labels, labelCount):
            return "\(labels): \(labelCount) labels but \(images) has \(imageCount) images "
                + "(the files come from different datasets; check --data)"
        case let .labelOutOfRange(path, index, label, classes):
            return "\(path): label \(label) at index \(index) is not one of the \(classes) classes 0…\(classes - 1) "
                + "(the labels are corrupt or belong to another dataset; check --data)"
        case let .shapeMismatch(path, shape, expected):
            return "\(path): images are \(Self.shapeText(shape)) but the training images are \(Self.shapeText(expected)) "
                + "(train and test files come from different datasets; check --data)"
        case let .badValidationSplit(requested, available):
            if requested < 0 {
                return "validation split of \(requested) examples is negative (use --validation-split 0 or more)"
            }
            return "validation split of \(requested) examples leaves no training data: the training set has "
                + "\(available) (use a smaller --validation-split)"
        }
    }

    private static func hex32(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    private static func kindName(magic: UInt32) -> String {
        magic == IDXReader.labelMagic ? "label" : "image"
    }

    private static func typeName(_ code: UInt8) -> String {
        switch code {
        case 0x09: return "signed byte"
        case 0x0B: return "short"
        case 0x0C: return "int"
        case 0x0D: return "float"
        case 0x0E: return "double"
        default: return "unknown type"
        }
    }

    private static func shapeText(_ shape: [Int]) -> String {
        shape.map(String.init).joined(separator: "×")
    }
}
