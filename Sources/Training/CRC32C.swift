/// Table-driven reflected CRC-32 checksums: Castagnoli (CRC-32C), which TFRecord files use,
/// and the IEEE polynomial of zlib and PNG.
public struct CRC32: Sendable {
    /// The reflected polynomial.
    public let polynomial: UInt32
    let table: [UInt32]   // (256) the CRC of each byte value

    public init(polynomial: UInt32) {
        self.polynomial = polynomial
        table = (0..<256).map { (n: UInt32) -> UInt32 in
            var c = n
            for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ polynomial : c >> 1 }
            return c
        }
    }

    /// CRC-32C (Castagnoli, reflected 0x82F63B78): check value of "123456789" is 0xE3069283.
    public static let castagnoli = CRC32(polynomial: 0x82F6_3B78)
    /// CRC-32 (IEEE 802.3, reflected 0xEDB88320) as zlib and PNG use it: check value 0xCBF43926.
    public static let ieee = CRC32(polynomial: 0xEDB8_8320)

    /// Continues `crc` (the value returned for the bytes so far; 0 to start) over `bytes`.
    public func update(_ crc: UInt32, _ bytes: some Sequence<UInt8>) -> UInt32 {
        var c = ~crc
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    public func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 { update(0, bytes) }

    /// TFRecord's masked CRC: a CRC stored next to the data it covers is rotated and offset,
    /// so that a CRC of data that itself holds CRCs stays well distributed.
    public static func masked(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}
