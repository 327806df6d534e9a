import Foundation

/// Keras-style `model.summary()` figures: per layer output shape and parameter count, totals,
/// and memory estimates (fp32). Its JSON keys are snake_case, as every JSON file distcnn writes.
public struct ModelSummary: Codable, Sendable {
    public struct Row: Codable, Sendable {
        public var index: Int
        public var name: String
        public var type: String
        public var outputShape: [Int]     // Keras order: [H, W, C] or [F]
        public var parameters: Int        // trainable + non-trainable, as Keras's Param # column
        public var trainable: Int

        enum CodingKeys: String, CodingKey {
            case index, name, type, parameters, trainable
            case outputShape = "output_shape"
        }
    }
    public var model: String
    public var input: [Int]
    public var rows: [Row]
    public var trainableParameters: Int
    public var nonTrainableParameters: Int
    public var batchSize: Int
    /// Bytes of parameters and running statistics.
    public var parameterBytes: Int
    /// Peak bytes of activations alive at once for one prediction: a layer's input and output
    /// (earlier activations can be freed), plus its convolution workspace.
    public var predictionActivationBytes: Int
    /// Bytes for training one batch: every layer's output kept for backward, two gradient
    /// buffers of the widest activation, the column matrices im2col convolutions keep,
    /// parameters, gradients and two Adam moments.
    public var trainingBytes: Int
    public var forwardFlopsPerExample: Int

    enum CodingKeys: String, CodingKey {
        case model, input, rows
        case trainableParameters = "trainable_parameters"
        case nonTrainableParameters = "non_trainable_parameters"
        case batchSize = "batch_size"
        case parameterBytes = "parameter_bytes"
        case predictionActivationBytes = "prediction_activation_bytes"
        case trainingBytes = "training_bytes"
        case forwardFlopsPerExample = "forward_flops_per_example"
    }

    /// Each layer's name in the table, as Keras names them: its kind, then `_1`, `_2`… for
    /// the second and later of a kind (`conv2d`, `conv2d_1`). Checkpoint tensors are named by
    /// index instead (`layers.3.weight`).
    public static func layerNames(_ spec: ModelSpec) -> [String] {
        var counters: [LayerSpec.Kind: Int] = [:]
        return spec.layers.map { layer in
            let n = counters[layer.type, default: 0]
            counters[layer.type] = n + 1
            return n == 0 ? layer.type.rawValue : "\(layer.type.rawValue)_\(n)"
        }
    }

    public init(model: Model, batchSize: Int) {
        let spec = model.spec
        var rows: [Row] = []
        let names = Self.layerNames(spec)
        for (i, layer) in model.layers.enumerated() {
            let s = layer.outputShape, kind = layer.kind.rawValue
            rows.append(Row(index: i, name: names[i], type: kind,
                            outputShape: s.isFlat ? [s.c] : [s.h, s.w, s.c],
                            parameters: layer.parameterCount + layer.stateCount, trainable: layer.parameterCount))
        }
        self.model = spec.name; input = spec.input; self.rows = rows
        trainableParameters = model.parameterCount; nonTrainableParameters = model.stateCount
        self.batchSize = batchSize
        parameterBytes = 4 * (model.parameterCount + model.stateCount)
        var peak = 0
        var previous = model.inputShape.count
        for layer in model.layers {
            peak = max(peak, previous + layer.outputShape.count + layer.inferenceWorkspace)
            previous = layer.outputShape.count
        }
        predictionActivationBytes = 4 * peak
        // Overflow-checked (Engine is built -Ounchecked: a wrapped product would print negative).
        trainingBytes = model.trainingBytes(batch: batchSize) ?? .max
        forwardFlopsPerExample = 2 * model.forwardFlopsPerExample
    }

    /// The table as Keras prints it, followed by totals and memory.
    public func table() -> String {
        func group(_ n: Int) -> String {
            let s = String(n)
            var out = ""
            for (i, ch) in s.reversed().enumerated() { if i > 0 && i % 3 == 0 { out.append(",") }; out.append(ch) }
            return String(out.reversed())
        }
        func shape(_ s: [Int]) -> String { "(None, " + s.map(String.init).joined(separator: ", ") + ")" }
        func mib(_ b: Int) -> String { String(format: "%.2f MiB", Double(b) / 1_048_576) }
        let rule = String(repeating: "─", count: 64)
        var out = "Model: \"\(model)\"\n\(rule)\n"
        out += "Layer (type)".padding(toLength: 30, withPad: " ", startingAt: 0)
            + "Output Shape".padding(toLength: 22, withPad: " ", startingAt: 0) + "Param #\n"
        out += String(repeating: "═", count: 64) + "\n"
        out += "input".padding(toLength: 30, withPad: " ", startingAt: 0)
            + shape(input).padding(toLength: 22, withPad: " ", startingAt: 0) + "0\n"
        for r in rows {
            out += "\(r.name) (\(r.type))".padding(toLength: 30, withPad: " ", startingAt: 0)
                + shape(r.outputShape).padding(toLength: 22, withPad: " ", startingAt: 0) + group(r.parameters) + "\n"
        }
        out += String(repeating: "═", count: 64) + "\n"
        out += "Total params: \(group(trainableParameters + nonTrainableParameters))\n"
        out += "Trainable params: \(group(trainableParameters))\n"
        out += "Non-trainable params: \(group(nonTrainableParameters))\n"
        out += "\(rule)\n"
        out += "Parameter memory: \(mib(parameterBytes)) (fp32)\n"
        out += "One prediction: \(mib(predictionActivationBytes)) of activations at peak, \(mib(parameterBytes + predictionActivationBytes)) with parameters\n"
        out += "Training a batch of \(batchSize): \(mib(trainingBytes)) (activations and column matrices kept for backward, parameters, gradients, Adam moments)\n"
        out += "Forward FLOPs per example: \(group(forwardFlopsPerExample))\n"
        return out
    }
}
