import ArgumentParser
import Training

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Score a checkpoint on the test set: loss, accuracy, confusion matrix.")
    @Option(help: "Checkpoint file (safetensors).") var checkpoint: String
    @Option(help: "Data folder (default: the one the checkpoint was trained on).") var data: String?
    @Option(help: "Images per forward pass.") var batchSize = 500
    @Flag(help: "Print JSON.") var json = false
    func validate() throws { guard (1...65536).contains(batchSize) else { throw ValidationError("--batch-size must be in 1...65536") } }
    func run() throws { try finish(Tool.evaluate(checkpoint: checkpoint, data: data, batchSize: batchSize, json: json)) }
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Keras-style model table: output shapes, parameters, memory.")
    @OptionGroup var modelOption: ModelOption
    @Option(help: "Input as HxWxC (e.g. 200x300x3), replacing the model's.") var input: String?
    @Option(help: "Batch size for the training-memory estimate.") var batchSize = 32
    @Flag(help: "Print JSON.") var json = false

    var parsedInput: [Int]? {
        input.map { $0.lowercased().split(separator: "x").compactMap { Int($0) } }
    }
    func validate() throws {
        if let p = parsedInput, p.count != 3 || p.contains(where: { $0 < 1 }) {
            throw ValidationError("--input must look like 28x28x1 (height x width x channels)")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    }
    func run() throws { try finish(Tool.summary(model: modelOption.model, input: parsedInput, batchSize: batchSize, json: json)) }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tell what a checkpoint holds and whether it is valid.")
    @Argument(help: "Checkpoint file.") var file: String
    @Flag(help: "Print JSON.") var json = false
    func run() throws { try finish(Tool.inspect(path: file, json: json)) }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training throughput (images/s, GFLOP/s); works under mpirun.")
    @OptionGroup var modelOption: ModelOption
    @Option(help: "Global batch size (default: the model's).") var batchSize: Int?
    @Option(help: "Timed steps.") var steps = 50
    @Option(help: "Untimed warm-up steps.") var warmup = 5
    @Option(help: "Engine threads per rank (default: cores on the node / ranks on the node).") var threads: Int?
    @Flag(help: "Time each layer's forward and backward.") var profile = false
    @Flag(help: "Measure inference (evaluation) instead of training.") var eval = false
    @Option(help: "Convolution algorithm: auto, im2col, shifted (stride-1 `same` layers) or winograd (3×3 stride-1 `same` layers); layers the choice does not fit use im2col.")
    var convolution: ConvolutionAlgorithm = .auto
    @Option(help: "Augment the synthetic training images each step: none, seed or standard.")
    var augment = "none"
    @Option(help: "Batch norm statistics: global (synchronised across ranks, as train's default) or local (per rank).")
    var bnSync = "global"
    @Option(help: ArgumentHelp(bucketHelp)) var bucketMib = RunOptions().bucketMiB
    @Flag(help: "Print JSON.") var json = false
    func validate() throws {
        guard steps >= 1, warmup >= 0 else { throw ValidationError("--steps must be at least 1 and --warmup 0 or more") }
        if let b = batchSize, b < 1 { throw ValidationError("--batch-size must be at least 1") }
        try validateBucket(bucketMib)
        try validateBatchNormSync(bnSync)
        guard AugmentationConfig.named(augment) != nil else {
            throw ValidationError("--augment must be one of \(AugmentationConfig.presetNames.joined(separator: ", "))")
        }
    }
    func run() throws {
        var o = BenchOptions()
        o.model = modelOption.model; o.batchSize = batchSize; o.steps = steps; o.warmup = warmup
        o.threads = threads; o.profile = profile; o.eval = eval; o.convolution = convolution
        o.augmentation = AugmentationConfig.named(augment) ?? .none; o.bnSync = TrainConfig.BatchNormSync(rawValue: bnSync)!; o.bucketMiB = bucketMib; o.json = json
        try finish(Tool.bench(o))
    }
}

/// `--bucket-mib` of train and bench.
let bucketHelp = "MiB of finished gradients that start their reduce-scatter while backward goes on (default 0: one exchange after backward)."

func validateBucket(_ mib: Double) throws {
    guard mib >= 0 && mib <= 4096 else { throw ValidationError("--bucket-mib must be in 0...4096") }
}

func validateBatchNormSync(_ value: String) throws {
    guard TrainConfig.BatchNormSync(rawValue: value) != nil else { throw ValidationError("--bn-sync must be global or local") }
}

extension ConvolutionAlgorithm: ExpressibleByArgument {}
