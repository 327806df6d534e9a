import Engine
import Foundation
import XCTest

/// Softmax cross-entropy with label smoothing against a Double computation and PyTorch.
final class LossTests: XCTestCase {
    // (4, 5) logits, labels chosen so that two rows are argmax-correct.
    let logits: [Float] = [
        1.5, -0.3, 0.2, 2.0, -1.0,
        0.1, 0.4, -2.2, 0.0, 3.1,
        -0.5, 2.5, 1.0, 0.3, 0.2,
        0.0, 0.0, 0.7, -0.7, 1.2,
    ]
    let labels: [Int32] = [3, 1, 1, 2]
    let batch = 4, classes = 5

    func run(_ z: [Float], _ y: [Int32], batch: Int, classes: Int, scale: Float,
             smoothing: Float?) -> (loss: Double, correct: Int, d: [Float]) {
        var d = [Float](repeating: .nan, count: z.count)
        let (loss, correct) = z.withUnsafeBufferPointer { zp in
            y.withUnsafeBufferPointer { yp in
                d.withUnsafeMutableBufferPointer { dp in
                    if let smoothing {
                        return SoftmaxCrossEntropy.forwardBackward(logits: zp.baseAddress!, labels: yp.baseAddress!, batch: batch,
                                                                   classes: classes, scale: scale, dlogits: dp.baseAddress!,
                                                                   smoothing: smoothing)
                    }
                    return SoftmaxCrossEntropy.forwardBackward(logits: zp.baseAddress!, labels: yp.baseAddress!, batch: batch,
                                                               classes: classes, scale: scale, dlogits: dp.baseAddress!)
                }
            }
        }
        return (loss, correct, d)
    }

    /// −Σ q·log softmax(z) and its gradient (p − q)·scale, in Double from the definition.
    func reference(smoothing eps: Double, scale: Double) -> (loss: Double, d: [Double]) {
        var loss = 0.0, d = [Double](repeating: 0, count: logits.count)
        for n in 0..<batch {
            let z = (0..<classes).map { Double(logits[n * classes + $0]) }
            let total = z.map { exp($0) }.reduce(0, +)
            for c in 0..<classes {
                let p = exp(z[c]) / total
                let q = (c == Int(labels[n]) ? 1 - eps : 0) + eps / Double(classes)
                loss -= q * log(p)
                d[n * classes + c] = (p - q) * scale
            }
        }
        return (loss, d)
    }

    func testSmoothedLossAndGradientMatchDouble() {
        for eps in [0.0, 0.1, 0.5, 1.0] {
            let got = run(logits, labels, batch: batch, classes: classes, scale: 0.25, smoothing: Float(eps))
            let want = reference(smoothing: eps, scale: 0.25)
            XCTAssertEqual(got.loss, want.loss, accuracy: 1e-5 * want.loss, "loss at ε = \(eps)")
            XCTAssertEqual(got.correct, 2, "argmax == label, whatever ε")
            for (a, b) in zip(got.d, want.d) { XCTAssertEqual(Double(a), b, accuracy: 1e-6, "dlogits at ε = \(eps)") }
        }
    }

    func testZeroSmoothingIsTheOneHotLoss() {
        let plain = run(logits, labels, batch: batch, classes: classes, scale: 0.25, smoothing: nil)
        let zero = run(logits, labels, batch: batch, classes: classes, scale: 0.25, smoothing: 0)
        XCTAssertEqual(plain.loss.bitPattern, zero.loss.bitPattern)
        XCTAssertEqual(plain.d.map(\.bitPattern), zero.d.map(\.bitPattern))
        // Smoothing raises the loss of confident correct rows and changes the gradient.
        let smoothed = run(logits, labels, batch: batch, classes: classes, scale: 0.25, smoothing: 0.1)
        XCTAssertNotEqual(smoothed.loss, plain.loss)
        XCTAssertNotEqual(smoothed.d, plain.d)
    }

    func testSmoothingStaysStableWithExtremeLogits() {
        // −log p = 0, 1000, 2000: loss = 0.9·0 + (0.1/3)·3000 = 100, nothing overflows.
        let got = run([1000, 0, -1000], [0], batch: 1, classes: 3, scale: 1, smoothing: 0.1)
        XCTAssertEqual(got.loss, 100, accuracy: 1e-3)
        XCTAssertTrue(got.d.allSatisfy(\.isFinite))
        XCTAssertEqual(got.d[0], 1 - 0.9 - 0.1 / 3, accuracy: 1e-6)
        XCTAssertEqual(got.d[2], -0.1 / 3, accuracy: 1e-6)
    }

    /// PyTorch `F.cross_entropy(z, y, label_smoothing=ε)` (mean over the batch) and autograd's
    /// dz, against lossSum / B with scale = 1/B.
    func testSmoothedMatchesPyTorch() throws {
        let script = """
        import sys, torch, torch.nn.functional as F
        C = int(sys.argv[2])
        y = torch.tensor([int(v) for v in sys.argv[4].split(',')])
        for eps in sys.argv[1].split(','):
            z = torch.tensor([float(v) for v in sys.argv[3].split(',')], dtype=torch.float64).reshape(-1, C).requires_grad_()
            loss = F.cross_entropy(z, y, label_smoothing=float(eps))
            loss.backward()
            print(repr(loss.item()), *[repr(v) for v in z.grad.flatten().tolist()])
        """
        let smoothings: [Float] = [0, 0.1, 0.3]
        var all = try python(script, [smoothings.map { "\($0)" }.joined(separator: ","), "\(classes)",
                                      logits.map { "\($0)" }.joined(separator: ","), labels.map { "\($0)" }.joined(separator: ",")])[...]
        XCTAssertEqual(all.count, smoothings.count * (1 + logits.count))
        for eps in smoothings {
            let out = Array(all.prefix(1 + logits.count)); all = all.dropFirst(1 + logits.count)
            let got = run(logits, labels, batch: batch, classes: classes, scale: 1 / Float(batch), smoothing: eps)
            XCTAssertEqual(got.loss / Double(batch), out[0], accuracy: 1e-6, "loss at ε = \(eps)")
            for (a, b) in zip(got.d, out.dropFirst()) { XCTAssertEqual(Double(a), b, accuracy: 1e-7, "dlogits at ε = \(eps)") }
        }
    }
}

// MARK: - Running reference computations in Python (PyTorch)

/// Runs `python3 -c script args…` and returns the numbers it prints (whitespace-separated).
/// Fails the test, with a hint, when python3 or torch is missing or the script fails (and throws
/// `PythonFailed`, so the caller stops there).
func python(_ script: String, _ arguments: [String] = [], file: StaticString = #filePath, line: UInt = #line) throws -> [Double] {
    let hint = "run the tests with scripts/test, which installs python3 with torch in .build/python"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script] + arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    do { try p.run() } catch {
        XCTFail("cannot run python3 (\(error)); \(hint)", file: file, line: line)
        throw PythonFailed()
    }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    if p.terminationStatus != 0 {
        if stderr.contains("No module named") || p.terminationStatus == 127 {
            XCTFail("needs python3 with torch (\(stderr.split(separator: "\n").last ?? "")); \(hint)", file: file, line: line)
        } else {
            XCTFail("python3 failed (\(p.terminationStatus)): \(stderr)", file: file, line: line)
        }
        throw PythonFailed()
    }
    return String(decoding: stdout, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
}

/// Thrown after the failure is recorded, so a test stops at a Python reference it could not get.
struct PythonFailed: Error, CustomStringConvertible { var description: String { "see the failure above" } }
