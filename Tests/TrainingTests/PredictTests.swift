import CPNG
import Data
import Foundation
import XCTest

extension Repo {
    /// The `distcnn` built with this test bundle (same build folder, whatever the scratch path),
    /// else `Repo.binary`.
    static var builtBinary: String {
        let sibling = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("distcnn").path
        return FileManager.default.isExecutableFile(atPath: sibling) ? sibling : binary
    }
}

/// `distcnn predict` on real MNIST digits written as PGM and PNG files, with a quickly trained
/// `seed` model.
final class PredictTests: XCTestCase {
    /// A checkpoint trained once for the whole class: 600 steps of `seed` (about 90% accurate,
    /// a few seconds), so the probabilities have margins a small change to training keeps.
    static var checkpoint: String?
    static var runDirectory = NSTemporaryDirectory() + "distcnn-predict-" + UUID().uuidString

    override class func tearDown() { try? FileManager.default.removeItem(atPath: runDirectory) }

    func trainedCheckpoint() throws -> String {
        if let c = Self.checkpoint { return c }
        let r = try runProcess(Repo.builtBinary, ["train", "--model", "seed", "--data", Repo.mnist, "--max-steps", "600",
                                                  "--train-limit", "20000", "--validation-split", "1000", "--test-limit", "500",
                                                  "--run-dir", Self.runDirectory])
        XCTAssertEqual(r.status, 0, r.stderr)
        Self.checkpoint = Self.runDirectory + "/checkpoints/final.safetensors"
        return Self.checkpoint!
    }

    /// The first five test digits (7, 2, 1, 0, 4) as 28×28 PGM, 28×28 PNG, and enlarged to
    /// 100×80, dark on white, as PNG: most are read right, and the JSON is well formed.
    func testPredictsRealDigits() throws {
        let checkpoint = try trainedCheckpoint()
        let dir = temporaryDirectory(self)
        let (_, test) = try MNISTFiles.load(directory: Repo.mnist)
        var files: [(path: String, label: Int)] = []
        for i in 0..<5 {
            let pixels = Array(test.image(i)), label = Int(test.labels[i])
            let pgm = dir + "/digit\(i).pgm"
            try Data(Array("P5\n28 28\n255\n".utf8) + pixels).write(to: URL(fileURLWithPath: pgm))
            let png = dir + "/digit\(i).png"
            try writePNG(pixels, width: 28, height: 28, to: png)
            let big = dir + "/digit\(i)-big.png"
            try writePNG(enlarge(pixels, width: 80, height: 100).map { 255 - $0 }, width: 80, height: 100, to: big)
            files += [(pgm, label), (png, label), (big, label)]
        }

        let r = try runProcess(Repo.builtBinary, ["predict", "--checkpoint", checkpoint, "--json"] + files.map(\.path))
        XCTAssertEqual(r.status, 0, r.stderr)
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(entries.count, files.count)
        var right: [String: Int] = [:]
        for (entry, (path, label)) in zip(entries, files) {
            XCTAssertEqual(entry["file"] as? String, path)
            let probabilities = try XCTUnwrap(entry["probabilities"] as? [Double])
            XCTAssertEqual(probabilities.count, 10)
            XCTAssertEqual(probabilities.reduce(0, +), 1, accuracy: 1e-6)
            let prediction = try XCTUnwrap(entry["prediction"] as? Int)
            XCTAssertEqual(prediction, probabilities.indices.max { probabilities[$0] < probabilities[$1] })
            let top = try XCTUnwrap(entry["top"] as? [[String: Any]])
            XCTAssertEqual(top.count, 3)
            XCTAssertEqual(top.first?["class"] as? Int, prediction)
            let kind = path.hasSuffix("-big.png") ? "big" : String(path.suffix(3))
            if prediction == label { right[kind, default: 0] += 1 }
        }
        for kind in ["pgm", "png", "big"] {
            XCTAssertGreaterThanOrEqual(right[kind] ?? 0, 4, "\(kind): \(right); \(r.stdout)")
        }
        // PGM and PNG of the same pixels give the same probabilities.
        for i in 0..<5 {
            XCTAssertEqual(entries[3 * i]["probabilities"] as? [Double], entries[3 * i + 1]["probabilities"] as? [Double])
        }

        // The text form: one line per image, top K with percentages.
        let t = try runProcess(Repo.builtBinary, ["predict", "--checkpoint", checkpoint, "--top", "2", files[0].path])
        XCTAssertEqual(t.status, 0, t.stderr)
        let line = t.stdout.trimmingCharacters(in: .newlines)
        XCTAssertTrue(line.hasPrefix(files[0].path + ": 7 ("), line)
        XCTAssertEqual(line.components(separatedBy: "%)").count - 1, 2, line)
        XCTAssertFalse(line.contains("\n"))
    }

    /// Bad images: one line each naming the file, a non-zero exit, the good ones still predicted.
    func testBadImagesAreNamed() throws {
        let checkpoint = try trainedCheckpoint()
        let dir = temporaryDirectory(self)
        let good = dir + "/good.pgm"
        try Data(Array("P5 28 28 255\n".utf8) + Array(try MNISTFiles.load(directory: Repo.mnist).test.image(0)))
            .write(to: URL(fileURLWithPath: good))
        let cases: [(name: String, bytes: [UInt8], message: String)] = [
            ("notes.txt", Array("hello".utf8), "not a PNG or PGM image"),
            ("cut.pgm", Array("P5 28 28 255\n".utf8) + [UInt8](repeating: 9, count: 100), "corrupt PGM image: truncated"),
            ("cut.png", Array(try pngBytes([UInt8](repeating: 0, count: 64), width: 8, height: 8).prefix(40)), "corrupt PNG image"),
            ("blank.pgm", Array("P5 4 4 255\n".utf8) + [UInt8](repeating: 255, count: 16), "the image is blank"),
        ]
        for c in cases {
            let path = dir + "/" + c.name
            try Data(c.bytes).write(to: URL(fileURLWithPath: path))
            let r = try runProcess(Repo.builtBinary, ["predict", "--checkpoint", checkpoint, good, path])
            XCTAssertEqual(r.status, 1, c.name)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.hasPrefix("error: " + path + ": "), r.stderr)
            XCTAssertTrue(r.stderr.contains(c.message), "\(c.name): \(r.stderr)")
            XCTAssertTrue(r.stdout.hasPrefix(good + ": "), "the good image is still predicted: \(r.stdout)")
        }
        let missing = try runProcess(Repo.builtBinary, ["predict", "--checkpoint", checkpoint, dir + "/nosuch.png", "--json"])
        XCTAssertEqual(missing.status, 1)
        XCTAssertTrue(missing.stderr.contains(dir + "/nosuch.png: no such image file"), missing.stderr)
        let entries = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(missing.stdout.utf8)) as? [[String: Any]])
        XCTAssertNotNil(entries.first?["error"] as? String)

        // A file that is not a checkpoint: one line naming it.
        let notCheckpoint = try runProcess(Repo.builtBinary, ["predict", "--checkpoint", good, good])
        XCTAssertEqual(notCheckpoint.status, 1)
        XCTAssertTrue(notCheckpoint.stderr.hasPrefix("error: " + good + ": "), notCheckpoint.stderr)
        XCTAssertEqual(notCheckpoint.stderr.split(separator: "\n").count, 1, notCheckpoint.stderr)
    }

    // MARK: Helpers

    /// Bilinear enlargement of a 28×28 digit to `width × height` (stretching it, as a user's scan might).
    func enlarge(_ pixels: [UInt8], width: Int, height: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                let fy = min(max((Double(y) + 0.5) * 28 / Double(height) - 0.5, 0), 27)
                let fx = min(max((Double(x) + 0.5) * 28 / Double(width) - 0.5, 0), 27)
                let y0 = Int(fy), x0 = Int(fx), y1 = min(y0 + 1, 27), x1 = min(x0 + 1, 27)
                let ay = fy - Double(y0), ax = fx - Double(x0)
                func p(_ yy: Int, _ xx: Int) -> Double { Double(pixels[yy * 28 + xx]) }
                let v = p(y0, x0) * (1 - ay) * (1 - ax) + p(y0, x1) * (1 - ay) * ax + p(y1, x0) * ay * (1 - ax) + p(y1, x1) * ay * ax
                out[y * width + x] = UInt8(v.rounded())
            }
        }
        return out
    }

    /// An 8-bit gray PNG, written by libpng.
    func pngBytes(_ pixels: [UInt8], width: Int, height: Int) throws -> [UInt8] {
        var image = png_image()
        cpng_image_init(&image)
        image.width = png_uint_32(width); image.height = png_uint_32(height)
        image.format = cpng_format_gray()
        var size = 0
        guard png_image_write_to_memory(&image, nil, &size, 0, pixels, 0, nil) != 0 else {
            throw NSError(domain: String(cString: cpng_image_message(&image)), code: 1)
        }
        var bytes = [UInt8](repeating: 0, count: size)
        guard png_image_write_to_memory(&image, &bytes, &size, 0, pixels, 0, nil) != 0 else {
            throw NSError(domain: String(cString: cpng_image_message(&image)), code: 1)
        }
        return Array(bytes.prefix(size))
    }

    func writePNG(_ pixels: [UInt8], width: Int, height: Int, to path: String) throws {
        try Data(try pngBytes(pixels, width: width, height: height)).write(to: URL(fileURLWithPath: path))
    }
}
