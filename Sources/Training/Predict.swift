import Data
import Engine
import Foundation

/// One image's class probabilities.
public struct Prediction: Sendable {
    public var file: String
    /// (classes) softmax of the logits.
    public var probabilities: [Double]
    /// The most probable class.
    public var predicted: Int { probabilities.indices.max { probabilities[$0] < probabilities[$1] } ?? 0 }

    /// The `k` most probable classes, most probable first (ties: lower class first).
    public func top(_ k: Int) -> [(class: Int, probability: Double)] {
        probabilities.enumerated().sorted { $0.element != $1.element ? $0.element > $1.element : $0.offset < $1.offset }
            .prefix(k).map { ($0.offset, $0.element) }
    }
}

extension Tool {
    /// `distcnn predict --checkpoint FILE IMAGE...`: the class probabilities of each image
    /// (PNG or PGM, prepared as MNIST's digits were). An image that cannot be read gets one
    /// error line naming it (and, with `json`, an entry with `error`); the others are still
    /// predicted, and the exit code is 1 if any failed.
    public static func predict(checkpoint path: String, images: [String], top: Int, json: Bool) -> Int32 {
        precondition(top >= 1, "top must be at least 1")
        let model: Model, normalizer: Normalizer
        do {
            let ckpt = try Checkpoint.read(path: path)
            model = try Model(spec: ckpt.spec)
            try requireClassifier(model)
            try ckpt.restore(into: model, source: path)
            normalizer = ckpt.state.normalizer
            let input = ckpt.spec.input
            guard input[2] == 1 else {
                throw CheckpointError.mismatch(path, "model '\(ckpt.spec.name)' takes \(input[2])-channel images; predict reads grayscale digits (one channel)")
            }
        } catch {
            Console.error("\(error)"); return 1
        }

        // Read and prepare every image first; failures are reported, not fatal to the rest.
        let (height, width) = (model.spec.input[0], model.spec.input[1])
        let side = min(height, width), box = max(1, (side * 20 + 14) / 28)
        var prepared: [(file: String, pixels: [UInt8])] = [], failures: [String: String] = [:]
        for file in images {
            do {
                let digit = try ImageFiles.mnistStyle(ImageFiles.read(path: file), source: file, side: side, box: box)
                prepared.append((file, pad(digit, side: side, height: height, width: width)))
            } catch {
                failures[file] = "\(error)"
                Console.error("\(error)")
            }
        }

        var predictions: [String: Prediction] = [:]
        let chunk = 256
        do {
            for start in stride(from: 0, to: prepared.count, by: chunk) {
                let batch = Array(prepared[start..<min(start + chunk, prepared.count)])
                for p in try classify(batch.map(\.pixels), model: model, normalizer: normalizer, height: height, width: width)
                    .enumerated() {
                    predictions[batch[p.offset].file] = Prediction(file: batch[p.offset].file, probabilities: p.element)
                }
            }
        } catch {
            Console.error("\(error)"); return 1
        }

        if json {
            let entries: [[String: Any]] = images.map { file in
                guard let p = predictions[file] else { return ["file": file, "error": failures[file] ?? "not predicted"] }
                return ["file": file, "prediction": p.predicted, "probabilities": p.probabilities,
                        "top": p.top(top).map { ["class": $0.class, "probability": $0.probability] }]
            }
            let data = try! JSONSerialization.data(withJSONObject: entries, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for file in images {
                guard let p = predictions[file] else { continue }
                print("\(file): " + p.top(top).map { String(format: "%d (%.1f%%)", $0.class, $0.probability * 100) }
                    .joined(separator: ", "))
            }
        }
        return failures.isEmpty ? 0 : 1
    }

    /// A `side × side` digit centred in a `height × width` input (they differ only for a
    /// model with non-square input).
    static func pad(_ digit: [UInt8], side: Int, height: Int, width: Int) -> [UInt8] {
        guard height != side || width != side else { return digit }
        var out = [UInt8](repeating: 0, count: height * width)
        let oy = (height - side) / 2, ox = (width - side) / 2
        for y in 0..<side { for x in 0..<side { out[(oy + y) * width + ox + x] = digit[y * side + x] } }
        return out
    }

    /// Softmax probabilities for each image ((height, width) bytes), in inference mode.
    static func classify(_ images: [[UInt8]], model: Model, normalizer: Normalizer,
                         height: Int, width: Int) throws -> [[Double]] {
        let n = images.count, classes = model.classes
        let dataset = Dataset(images: images.flatMap { $0 }, labels: [UInt8](repeating: 0, count: n),
                              height: height, width: width, classes: max(2, min(256, classes)))
        model.reserveInference(batch: n)
        normalizer.fill(model.input.pointer, from: dataset, indices: 0..<n)
        let logits = try model.forward(batch: n, context: PassContext(training: false))  // (N, classes)
        return (0..<n).map { j in
            let row = (0..<classes).map { Double(logits[j * classes + $0]) }
            let top = row.max() ?? 0
            let e = row.map { Foundation.exp($0 - top) }
            let total = e.reduce(0, +)
            return e.map { $0 / total }
        }
    }
}
