import Hashing
import XCTest

/// SHA-256 against the FIPS 180-4 / NIST example vectors and Python's `hashlib`.
final class SHA256Tests: XCTestCase {
    private func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        SHA256.hex(SHA256.hash(bytes))
    }

    func testNISTVectors() {
        XCTAssertEqual(hex([UInt8]()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(hex(Array(("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                                  + "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu").utf8)),
                       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    }

    func testOneMillionA() {
        let message = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        XCTAssertEqual(hex(message), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // The same million bytes fed one byte at a time exercise the partial-block path.
        var hasher = SHA256()
        for byte in message { hasher.update(CollectionOfOne(byte)) }
        XCTAssertEqual(SHA256.hex(hasher.finalize()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    /// Lengths around the padding boundaries (55/56 bytes fit the length in one block or not).
    func testPaddingBoundaries() {
        let expected = [
            55: "463eb28e72f82e0a96c0a4cc53690c571281131f672aa229e0d45ae59b598b59",
            56: "da2ae4d6b36748f2a318f23e7ab1dfdf45acdc9d049bd80e59de82a60895f562",
            57: "2fe741af801cc238602ac0ec6a7b0c3a8a87c7fc7d7f02a3fe03d1c12eac4d8f",
            63: "29af2686fd53374a36b0846694cc342177e428d1647515f078784d69cdb9e488",
            64: "fdeab9acf3710362bd2658cdc9a29e8f9c757fcf9811603a8c447cd1d9151108",
            65: "4bfd2c8b6f1eec7a2afeb48b934ee4b2694182027e6d0fc075074f2fabb31781",
            119: "da18797ed7c3a777f0847f429724a2d8cd5138e6ed2895c3fa1a6d39d18f7ec6",
            120: "f52b23db1fbb6ded89ef42a23ce0c8922c45f25c50b568a93bf1c075420bbb7c",
            128: "471fb943aa23c511f6f72f8d1652d9c880cfa392ad80503120547703e56a2be5",
        ]
        for (length, digest) in expected {
            let message = (0..<length).map { UInt8($0 % 251) }
            XCTAssertEqual(hex(message), digest, "length \(length)")
            // Non-contiguous collection path.
            XCTAssertEqual(hex((0..<length).lazy.map { UInt8($0 % 251) }), digest, "lazy, length \(length)")
            // Raw-buffer path.
            let raw = message.withUnsafeBytes { SHA256.hex(SHA256.hash($0)) }
            XCTAssertEqual(raw, digest, "raw, length \(length)")
        }
    }

    /// Splitting a message anywhere must not change its digest: runs of lengths around the
    /// 64-byte block and the 56-byte padding limit (and empty ones), in every rotation.
    func testIncrementalEqualsOneShot() {
        let message = (0..<5000).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
        let whole = SHA256.hash(message)
        let runs = [0, 1, 2, 55, 56, 57, 63, 64, 65, 119, 120, 128, 200, 1000]
        for rotation in runs.indices {
            let pattern = Array(runs[rotation...] + runs[..<rotation])
            var hasher = SHA256()
            var start = 0, i = 0
            while start < message.count {
                let end = min(message.count, start + pattern[i % pattern.count])
                message[start..<end].withUnsafeBytes { hasher.update($0) }
                start = end
                i += 1
            }
            XCTAssertEqual(hasher.finalize(), whole, "runs \(pattern.prefix(4))…")
        }
    }

    func testHex() {
        XCTAssertEqual(SHA256.hex([0x00, 0x0f, 0xa0, 0xff]), "000fa0ff")
    }
}
