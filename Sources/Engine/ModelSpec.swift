import Foundation

/// A network described as data: input shape and a list of layers, read from JSON model files
/// or built in (`seed`, `ref`). Tensor names in checkpoints follow the layer index here
/// (`layers.3.weight`), so the spec is part of a checkpoint's identity.
public struct ModelSpec: Codable, Equatable, Sendable {
    public var name: String
    /// Input as `[height, width, channels]`, the way Keras and MNIST files say it.
    public var input: [Int]
    public var layers: [LayerSpec]
    /// Training defaults that travel with the model (the command line may override them).
    public var batchSize: Int?
    public var learningRate: Double?

    public init(name: String, input: [Int], layers: [LayerSpec],
                batchSize: Int? = nil, learningRate: Double? = nil) {
        self.name = name; self.input = input; self.layers = layers
        self.batchSize = batchSize; self.learningRate = learningRate
    }

    enum CodingKeys: String, CodingKey {
        case name, input, layers
        case batchSize = "batch_size"
        case learningRate = "learning_rate"
    }

    /// The range a model file's `batch_size` must be in (the command line's `--batch-size` too).
    public static let batchSizeRange = 1...65536
    /// The range a model file's `learning_rate` must be in.
    public static let learningRateRange = 1e-12...1e30

    /// The decoder's `userInfo` key for the name a model without `name` gets (a model file's
    /// base name); without it, `name` is required (a checkpoint's model).
    public static let defaultNameKey = CodingUserInfoKey(rawValue: "distcnn.defaultModelName")!

    /// Decodes, refusing a `batch_size` or `learning_rate` outside its range with the field named.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let fallback = decoder.userInfo[Self.defaultNameKey] as? String, !c.contains(.name) {
            name = fallback
        } else {
            name = try c.decode(String.self, forKey: .name)
        }
        input = try c.decode([Int].self, forKey: .input)
        layers = try c.decode([LayerSpec].self, forKey: .layers)
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize)
        learningRate = try c.decodeIfPresent(Double.self, forKey: .learningRate)
        if let side = input.first(where: { !(1...65536).contains($0) }) {
            throw DecodingError.dataCorruptedError(forKey: .input, in: c,
                debugDescription: "every side of input must be in 1...65536, got \(side)")
        }
        if let b = batchSize, !Self.batchSizeRange.contains(b) {
            throw DecodingError.dataCorruptedError(forKey: .batchSize, in: c,
                debugDescription: "batch_size must be in \(Self.batchSizeRange), got \(b)")
        }
        if let r = learningRate, !Self.learningRateRange.contains(r) {
            throw DecodingError.dataCorruptedError(forKey: .learningRate, in: c,
                debugDescription: "learning_rate must be in \(Self.learningRateRange), got \(r)")
        }
    }
}

public enum Activation: String, Codable, Sendable {
    case linear, relu, elu
}

public enum Padding: String, Codable, Sendable {
    case same, valid
}

/// One layer. `type` selects the kind; the other fields apply to the kinds named beside them.
public struct LayerSpec: Codable, Equatable, Sendable {
    /// The kinds of layer, spelled as a model file's `type` names them (the one list of them).
    public enum Kind: String, Codable, CaseIterable, Sendable, CustomStringConvertible {
        case conv2d, dense, batchnorm, maxpool2d, flatten, dropout, relu, elu, lrn

        public var description: String { rawValue }

        /// An unknown name fails with the known ones listed.
        public init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            let name = try container.decode(String.self)
            guard let kind = Kind(rawValue: name) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "unknown type '\(name)' (known: \(Kind.known))")
            }
            self = kind
        }

        /// "conv2d, dense, …", for messages.
        public static var known: String { allCases.map(\.rawValue).joined(separator: ", ") }
    }

    public var type: Kind
    public var filters: Int?             // conv2d
    public var units: Int?               // dense
    public var kernel: Int?              // conv2d (square)
    public var size: Int?                // maxpool2d window; lrn depth
    public var stride: Int?              // conv2d, maxpool2d (default: 1 for conv, size for pool)
    public var padding: Padding?         // conv2d, maxpool2d (default: valid)
    public var activation: Activation?   // conv2d, dense (fused, applied after the bias)
    public var useBias: Bool?            // conv2d, dense (default true)
    public var l2: Double?               // conv2d, dense: Keras kernel_regularizer l2 (loss += l2 * sum(w^2))
    public var momentum: Double?         // batchnorm (Keras meaning, default 0.99)
    public var epsilon: Double?          // batchnorm (default 1e-3)
    public var rate: Double?             // dropout
    public var alpha: Double?            // elu (default 1); lrn
    public var beta: Double?             // lrn
    public var k: Double?                // lrn

    public init(type: Kind) { self.type = type }

    enum CodingKeys: String, CodingKey {
        case type, filters, units, kernel, size, stride, padding, activation
        case useBias = "use_bias"
        case l2, momentum, epsilon, rate, alpha, beta, k
    }

    public static func conv(_ filters: Int, kernel: Int, stride: Int = 1, padding: Padding = .same,
                            activation: Activation = .linear, l2: Double? = nil) -> LayerSpec {
        var s = LayerSpec(type: .conv2d)
        s.filters = filters; s.kernel = kernel; s.stride = stride; s.padding = padding
        s.activation = activation; s.l2 = l2
        return s
    }
    public static func dense(_ units: Int, activation: Activation = .linear, l2: Double? = nil) -> LayerSpec {
        var s = LayerSpec(type: .dense); s.units = units; s.activation = activation; s.l2 = l2
        return s
    }
    public static func batchNorm(momentum: Double = 0.99, epsilon: Double = 1e-3) -> LayerSpec {
        var s = LayerSpec(type: .batchnorm); s.momentum = momentum; s.epsilon = epsilon
        return s
    }
    public static func maxPool(_ size: Int, stride: Int? = nil, padding: Padding = .valid) -> LayerSpec {
        var s = LayerSpec(type: .maxpool2d); s.size = size; s.stride = stride ?? size; s.padding = padding
        return s
    }
    public static func dropout(_ rate: Double) -> LayerSpec {
        var s = LayerSpec(type: .dropout); s.rate = rate
        return s
    }
    public static let flatten = LayerSpec(type: .flatten)
    public static let relu = LayerSpec(type: .relu)
    public static func elu(alpha: Double = 1) -> LayerSpec {
        var s = LayerSpec(type: .elu); s.alpha = alpha
        return s
    }
}

extension ModelSpec {
    /// The network of the exercise this project grew from (a tf.keras notebook).
    public static let seed = ModelSpec(
        name: "seed", input: [28, 28, 1],
        layers: [
            .conv(5, kernel: 3, stride: 2, padding: .same, activation: .elu, l2: 0.02),
            .batchNorm(),
            .maxPool(2),
            .conv(10, kernel: 3, stride: 2, padding: .same, activation: .elu, l2: 0.02),
            .batchNorm(),
            .flatten,
            .dense(50, activation: .elu),
            .dropout(0.5),
            .dense(10),
        ],
        batchSize: 32, learningRate: 1e-3)

    /// The default model: two VGG-style blocks and a dense head. Batch norms use PyTorch's
    /// momentum and epsilon (0.9 and 1e-5 said the Keras way).
    public static let ref = ModelSpec(
        name: "ref", input: [28, 28, 1],
        layers: [
            .conv(32, kernel: 3), .batchNorm(momentum: 0.9, epsilon: 1e-5), .relu,
            .conv(32, kernel: 3), .batchNorm(momentum: 0.9, epsilon: 1e-5), .relu,
            .maxPool(2),
            .conv(64, kernel: 3), .batchNorm(momentum: 0.9, epsilon: 1e-5), .relu,
            .conv(64, kernel: 3), .batchNorm(momentum: 0.9, epsilon: 1e-5), .relu,
            .maxPool(2),
            .flatten,
            .dense(256), .batchNorm(momentum: 0.9, epsilon: 1e-5), .relu,
            .dropout(0.4),
            .dense(10),
        ],
        batchSize: 128, learningRate: 1e-3)

    public static let presets: [String: ModelSpec] = ["seed": .seed, "ref": .ref]
}
