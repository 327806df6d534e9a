import ArgumentParser
import DatasetDownload
import Foundation
import Training

/// `--model`: `seed`, `ref`, or a JSON model file.
struct ModelOption: ParsableArguments {
    @Option(name: .long, help: "Model: a preset (seed, ref) or a JSON model file.")
    var model: String = "ref"
}

/// The training step's flags, shared by `train` and `bench`.
struct StepOptions: ParsableArguments {
    @OptionGroup var modelOption: ModelOption
    @Option(parsing: .unconditional, help: "Global batch size, split across ranks (default: the model's).") var batchSize: Int?
    @Option(parsing: .unconditional, help: "Engine threads per rank (default: cores on the node / ranks on the node, or the cores this rank is bound to).")
    var threads: Int?
    @Option(help: "Augmentation of the training images: none, seed (the notebook's: rotation ±20°, shear ±3°) or standard (rotation ±10°, shift ±0.1, zoom ±0.1, shear ±5°).")
    var augment: AugmentPreset = .none
    @Option(help: "Batch norm statistics: global (synchronised across ranks, as SyncBatchNorm) or local (per rank).")
    var bnSync: TrainConfig.BatchNormSync = .global
    @Option(parsing: .unconditional, help: "Examples per micro-batch: ranks and threads take whole micro-batches, whose gradients and batch-norm sums are added exactly, so the weights are the same bits on any number of ranks and threads.")
    var microBatch = TrainConfig.defaultMicroBatch

    var model: String { modelOption.model }

    /// `--batch-size`, or the model's own.
    func batchSize(for spec: ModelSpec) -> Int { batchSize ?? spec.batchSize ?? 128 }

    func validate() throws {
        try check(batchSize, "batch-size", in: Limits.batchSize)
        try check(threads, "threads", in: Limits.threads)
        try check(microBatch, "micro-batch", in: 1...65536)
    }
}

/// The ranges of numeric flags that more than one command has.
enum Limits {
    static let batchSize = ModelSpec.batchSizeRange
    static let threads = 1...1024
}

/// The one range check of numeric flags: a value outside `range` (nan among them) is refused
/// with one line naming the flag, the range and the value.
func check<T: Comparable>(_ value: T?, _ flag: String, in range: ClosedRange<T>) throws {
    guard let value, !range.contains(value) else { return }
    throw ValidationError("--\(flag) must be in \(range), got \(value)")
}

/// `check` for a half-open range (fractions in [0, 1)).
func check<T: Comparable>(_ value: T?, _ flag: String, in range: Range<T>) throws {
    guard let value, !range.contains(value) else { return }
    throw ValidationError("--\(flag) must be in \(range), got \(value)")
}

/// `--augment`: the augmentation presets by their command-line names.
enum AugmentPreset: String, CaseIterable, ExpressibleByArgument {
    case none, seed, standard

    var config: AugmentationConfig {
        switch self {
        case .none: AugmentationConfig.none
        case .seed: AugmentationConfig.seed
        case .standard: AugmentationConfig.standard
        }
    }
}

extension ConvolutionAlgorithm: ExpressibleByArgument {
    // Not CaseIterable in Engine: listed here for the help and the error for a wrong value.
    public static var allValueStrings: [String] { ["auto", "im2col", "shifted", "winograd"] }
}
extension TrainConfig.BatchNormSync: ExpressibleByArgument {}
extension TrainConfig.Monitor: ExpressibleByArgument {}
extension Console.Progress: ExpressibleByArgument {}

extension DownloadableDataset: ExpressibleByArgument {
    public init?(argument: String) {
        guard let dataset = DownloadableDataset.named(argument) else { return nil }
        self = dataset
    }
    public static var allValueStrings: [String] { all.map(\.name) }
}
