import Data
import Engine
import Foundation

/// One image's class probabilities.
public struct Prediction: Sendable {
    public var file: String
    /// (classes) softmax of the logits.
    public var probabilities: [Double]

    public init(file: String, probabilities: [Double]) {
        self.file = file
        self.probabilities = probabilities
    }

    /// The most probable class.
    public var predicted: Int { probabilities.indices.max { probabilities[$0] < probabilities[$1] } ?? 0 }

    /// The `k` most probable classes, most probable first (ties: lower class first).
    public func top(_ k: Int) -> [(class: Int, probability: Double)] {
        probabilities.enumerated().sorted { $0.element != $1.element ? $0.element > $1.element : $0.offset < $1.offset }
            .prefix(k).map { ($0.offset, $0.element) }
    }
}

/// A checkpoint's model ready to classify digit images (PNG or PGM), prepared as MNIST's
/// digits were: `distcnn predict`.
public struct DigitClassifier {
    let model: Model
    let normalizer: Normalizer

    /// Loads `path`; throws unless its model is a classifier of one-channel images.
    public init(checkpoint path: String) throws {
        let ckpt = try Checkpoint.read(path: path)
        model = try Model(spec: ckpt.spec)
        try requireClassifier(model)
        try model.checkInferenceMemory(batch: Self.chunk, hint: "the model is too large for this machine")
        try ckpt.restore(into: model, source: path)
        normalizer = ckpt.state.normalizer
        let input = ckpt.spec.input
        guard input[2] == 1 else {
            throw CheckpointError.mismatch(path, "model '\(ckpt.spec.name)' takes \(input[2])-channel images; predict reads grayscale digits (one channel)")
        }
    }

    /// The image at `file` as the model's input ((height, width) bytes in `pixels`), with the
    /// doubts its preparation raised.
    public func prepare(imageAt file: String) throws -> PreparedDigit {
        let (height, width) = (model.spec.input[0], model.spec.input[1])
        let side = min(height, width), box = max(1, (side * 20 + 14) / 28)
        var digit = try DigitPreparation.prepare(ImageFiles.read(path: file), source: file, side: side, box: box)
        digit.pixels = Self.pad(digit.pixels, side: side, height: height, width: width)
        return digit
    }

    /// The model's input size: (height, width).
    public var inputSize: (height: Int, width: Int) { (model.spec.input[0], model.spec.input[1]) }

    /// Images per inference pass.
    static let chunk = 256

    /// Each prepared image's class probabilities, in inference mode, 256 images per pass.
    public func classify(_ images: [[UInt8]]) throws -> [[Double]] {
        let chunk = Self.chunk
        return try stride(from: 0, to: images.count, by: chunk).flatMap { start in
            try Self.classify(Array(images[start..<min(start + chunk, images.count)]), model: model,
                              normalizer: normalizer, height: model.spec.input[0], width: model.spec.input[1])
        }
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

extension Model {
    /// Bytes inference on batches of `batch` holds: the input and the two ping-pong buffers of
    /// the widest activation per example, and the parameters, their gradients and the state
    /// allocated with the model; nil when the count overflows `Int`.
    func inferenceBytes(batch: Int) -> Int? {
        let widest = max(inputShape.count, layers.map { $0.outputShape.count }.max() ?? 0)
        let (perExample, o1) = (2 * widest).addingReportingOverflow(inputShape.count)
        let (activations, o2) = batch.multipliedReportingOverflow(by: perExample)
        let (floats, o3) = activations.addingReportingOverflow(2 * parameterCount + stateCount)
        let (bytes, o4) = floats.multipliedReportingOverflow(by: 4)
        return o1 || o2 || o3 || o4 || batch < 0 ? nil : bytes
    }

    /// Refuses, before the inference buffers are allocated, batches of `batch` (times `copies`:
    /// the ranks on this node) that would need more than the machine's physical memory, with
    /// one line ending in `hint`.
    func checkInferenceMemory(batch: Int, copies: Int = 1, hint: String) throws {
        let total = Model.physicalMemoryBytes
        let needed = inferenceBytes(batch: batch).flatMap { b in
            let (r, o) = b.multipliedReportingOverflow(by: max(copies, 1)); return o ? nil : r
        }
        guard let needed, needed <= total else {
            func gib(_ b: Int) -> String { String(format: "%.1f GiB", Double(b) / Double(1 << 30)) }
            let what = copies > 1 ? "\(copies) ranks evaluating batches of \(batch)" : "evaluating a batch of \(batch)"
            throw ModelError.spec("model '\(spec.name)': \(what) needs \(needed.map(gib) ?? "more than Int.max bytes"), more than this machine's \(gib(total)) of memory; \(hint)")
        }
    }
}
