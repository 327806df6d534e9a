import Foundation

/// The safetensors container (https://huggingface.co/docs/safetensors): an 8-byte
/// little-endian header length, a JSON header naming each tensor's dtype, shape and byte
/// range, then the raw little-endian data. Only `F32` tensors are written and read here.
public struct SafeTensorsFile {
    public struct Entry: Equatable {
        public var name: String
        public var shape: [Int]
        public var range: Range<Int>      // byte range within the data section
    }

    public var metadata: [String: String]
    public var entries: [Entry]
    /// The data section (everything after the header).
    public var data: [UInt8]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata; entries = []; data = [] }

    /// Appends a tensor's values (copied, little-endian F32).
    public mutating func append(_ name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
        precondition(shape.reduce(1, *) == values.count, "\(name): shape \(shape) holds \(shape.reduce(1, *)) values, got \(values.count)")
        let start = data.count
        data.append(contentsOf: UnsafeRawBufferPointer(values))   // x86-64 and arm64 are little-endian
        entries.append(Entry(name: name, shape: shape, range: start..<data.count))
    }

    public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// A tensor's values as Floats.
    public func values(_ e: Entry) -> [Float] {
        data[e.range].withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)) }
    }

    /// Copies a tensor's values to `destination` (which must hold the tensor's element count).
    public func copy(_ e: Entry, to destination: UnsafeMutablePointer<Float>) {
        data.withUnsafeBytes { raw in
            _ = memcpy(destination, raw.baseAddress! + e.range.lowerBound, e.range.count)
        }
    }

    /// The whole file: header length, header JSON (padded with spaces to 8 bytes), data.
    public func serialized() -> [UInt8] {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        for e in entries {
            header[e.name] = ["dtype": "F32", "shape": e.shape, "data_offsets": [e.range.lowerBound, e.range.upperBound]]
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count + data.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        out.append(contentsOf: data)
        return out
    }

    /// The header length a file's first 8 bytes state, checked as plausible and within a file
    /// of `fileSize` bytes, before the header is read.
    public static func headerLength(_ first8: [UInt8], fileSize: Int) throws -> Int {
        guard first8.count >= 8 else { throw SafeTensorsError.truncated("file has \(first8.count) bytes, less than the 8-byte header length") }
        let headerLength = first8[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength >= 2, headerLength <= 100 << 20 else {
            throw SafeTensorsError.notSafeTensors("header length \(headerLength) is not plausible")
        }
        guard 8 + Int(headerLength) <= fileSize else {
            throw SafeTensorsError.truncated("header promises \(headerLength) bytes, file has \(fileSize - 8) after the length")
        }
        return Int(headerLength)
    }

    /// Parses the length and header (`prefix`, at least 8 + header length bytes), checking
    /// every tensor's size and offsets against a data section of `dataCount` bytes, which the
    /// tensors must cover exactly. The result has no data.
    public static func parseHeader(_ prefix: [UInt8], dataCount: Int) throws -> SafeTensorsFile {
        let headerLength = try Self.headerLength(prefix, fileSize: prefix.count)
        let headerBytes = Data(prefix[8..<(8 + headerLength)])
        guard let object = try? JSONSerialization.jsonObject(with: headerBytes),
              let header = object as? [String: Any] else {
            throw SafeTensorsError.notSafeTensors("the header is not a JSON object")
        }
        var file = SafeTensorsFile()
        if let meta = header["__metadata__"] {
            guard let m = meta as? [String: String] else {
                throw SafeTensorsError.notSafeTensors("__metadata__ is not a map of strings")
            }
            file.metadata = m
        }
        for (name, value) in header where name != "__metadata__" {
            guard let t = value as? [String: Any], let dtype = t["dtype"] as? String,
                  let shape = t["shape"] as? [Int], let offsets = t["data_offsets"] as? [Int], offsets.count == 2 else {
                throw SafeTensorsError.notSafeTensors("tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard dtype == "F32" else { throw SafeTensorsError.unsupported("tensor '\(name)' has dtype \(dtype); only F32 is read") }
            guard shape.count <= 8, shape.allSatisfy({ $0 >= 0 && $0 <= 1 << 31 }) else {
                throw SafeTensorsError.notSafeTensors("tensor '\(name)' has an absurd shape \(shape)")
            }
            let elements = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
            guard offsets[0] >= 0, offsets[0] <= offsets[1], elements < Int.max / 4,
                  offsets[1] - offsets[0] == elements * 4 else {
                throw SafeTensorsError.notSafeTensors("tensor '\(name)': data_offsets \(offsets) do not match shape \(shape)")
            }
            guard offsets[1] <= dataCount else {
                throw SafeTensorsError.truncated("tensor '\(name)' ends at byte \(offsets[1]) of the data, which has \(dataCount)")
            }
            file.entries.append(Entry(name: name, shape: shape, range: offsets[0]..<offsets[1]))
        }
        file.entries.sort { $0.range.lowerBound < $1.range.lowerBound }
        var end = 0
        for e in file.entries {
            guard e.range.lowerBound == end else {
                throw SafeTensorsError.notSafeTensors("tensor '\(e.name)' overlaps another or leaves a gap at byte \(end)")
            }
            end = e.range.upperBound
        }
        guard end == dataCount else {
            throw SafeTensorsError.notSafeTensors("data section has \(dataCount) bytes but the tensors cover \(end)")
        }
        return file
    }

    /// Parses a whole file, checking every size and offset against the bytes before using it.
    /// Throws `SafeTensorsError` naming what is wrong.
    public static func parse(_ bytes: [UInt8]) throws -> SafeTensorsFile {
        let headerLength = try Self.headerLength(bytes, fileSize: bytes.count)
        var file = try parseHeader(bytes, dataCount: bytes.count - 8 - headerLength)
        file.data = Array(bytes[(8 + headerLength)...])
        return file
    }
}

/// Why a safetensors file cannot be read.
public enum SafeTensorsError: Error, CustomStringConvertible {
    case truncated(String), notSafeTensors(String), unsupported(String)
    public var description: String {
        switch self {
        case .truncated(let m): return "truncated: \(m)"
        case .notSafeTensors(let m): return "not a safetensors file: \(m)"
        case .unsupported(let m): return "unsupported: \(m)"
        }
    }
}
