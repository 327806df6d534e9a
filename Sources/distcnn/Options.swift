import ArgumentParser
import DatasetDownload
import Training

/// `--model`: `seed`, `ref`, or a JSON model file.
struct ModelOption: ParsableArguments {
    @Option(name: .long, help: "Model: a preset (seed, ref) or a JSON model file.")
    var model: String = "ref"
}

/// The training step's flags, shared by `train` and `bench`.
struct StepOptions: ParsableArguments {
    @OptionGroup var modelOption: ModelOption
    @Option(help: "Global batch size, split across ranks (default: the model's).") var batchSize: Int?
    @Option(help: "Engine threads per rank (default: cores on the node / ranks on the node, or the cores this rank is bound to).")
    var threads: Int?
    @Option(help: "Augmentation of the training images: none, seed (the notebook's: rotation ±20°, shear ±3°) or standard (rotation ±10°, shift ±0.1, zoom ±0.1, shear ±5°).")
    var augment: AugmentPreset = .none
    @Option(help: "Batch norm statistics: global (synchronised across ranks, as SyncBatchNorm) or local (per rank).")
    var bnSync: TrainConfig.BatchNormSync = .global
    @Option(help: "MiB of finished gradients that start their reduce-scatter while backward goes on; 0 is one exchange after backward.")
    var bucketMib = RunOptions().bucketMiB

    var model: String { modelOption.model }

    /// `--batch-size`, or the model's own.
    func batchSize(for spec: ModelSpec) -> Int { batchSize ?? spec.batchSize ?? 128 }

    func validate() throws {
        if let b = batchSize, !(1...65536).contains(b) { throw ValidationError("--batch-size must be in 1...65536") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        guard bucketMib >= 0 && bucketMib <= 4096 else { throw ValidationError("--bucket-mib must be in 0...4096") }
    }
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
