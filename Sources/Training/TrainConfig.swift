import Data
import Engine
import Foundation

/// Everything that decides what a run trains. Hashed and compared across ranks at start and
/// stored in checkpoints; a resume must match it in the fields that change the schedule.
public struct TrainConfig: Codable, Equatable, Sendable {
    public var model: ModelSpec
    public var dataDirectory: String = "data/mnist"
    public var epochs: Int = 3
    /// Global batch size, split across ranks.
    public var batchSize: Int = 128
    public var learningRate: Double = 1e-3
    public var adam = AdamConfig()
    public var seed: UInt64 = 1
    public var validationSplit: Int = 5000
    public var standardize: Bool = false
    /// Preset name the augmentation started from (none, seed, standard) and what it resolved to.
    public var augment: String = "none"
    public var augmentation: AugmentationConfig = .none
    public var bnSync: BatchNormSync = .global
    public var patience: Int = 0
    public var minDelta: Double = 0
    public var monitor: Monitor = .valLoss
    public var restoreBestWeights: Bool = true
    public var maxSteps: Int?
    /// Train on only the first N training examples (tests, quick looks).
    public var trainLimit: Int?
    /// Evaluate on only the first N test examples (tests, quick looks).
    public var testLimit: Int?
    public var evalBatchSize: Int = 128

    public init(model: ModelSpec) { self.model = model }

    public enum BatchNormSync: String, Codable, Sendable, CaseIterable { case global, local }
    public enum Monitor: String, Codable, Sendable, CaseIterable {
        case valLoss = "val_loss", valAccuracy = "val_accuracy"
    }

    /// The fields a resumed run must share with the checkpoint (everything that changes which
    /// examples meet which weights), as name → value for a one-line diff.
    public var scheduleFields: [String: String] {
        [
            "model": model.canonicalJSON(), "batch-size": "\(batchSize)", "seed": "\(seed)",
            "validation-split": "\(validationSplit)", "standardize": "\(standardize)",
            "augment": String(decoding: try! JSONEncoder.sorted.encode(augmentation), as: UTF8.self),
            "bn-sync": bnSync.rawValue, "lr": "\(learningRate)", "train-limit": "\(trainLimit.map(String.init) ?? "all")",
        ]
    }

    public func canonicalJSON() -> String {
        String(decoding: try! JSONEncoder.sorted.encode(self), as: UTF8.self)
    }
}

/// Metrics of one finished epoch.
public struct EpochMetrics: Codable, Equatable, Sendable {
    public var epoch: Int            // 1-based, as printed
    public var globalStep: Int
    public var trainLoss: Double, trainAccuracy: Double
    public var valLoss: Double?, valAccuracy: Double?
    public var testLoss: Double, testAccuracy: Double
    public var learningRate: Double
    public var seconds: Double

    public init(epoch: Int, globalStep: Int, trainLoss: Double, trainAccuracy: Double, valLoss: Double?, valAccuracy: Double?,
                testLoss: Double, testAccuracy: Double, learningRate: Double, seconds: Double) {
        self.epoch = epoch; self.globalStep = globalStep; self.trainLoss = trainLoss; self.trainAccuracy = trainAccuracy
        self.valLoss = valLoss; self.valAccuracy = valAccuracy; self.testLoss = testLoss; self.testAccuracy = testAccuracy
        self.learningRate = learningRate; self.seconds = seconds
    }
}

/// Keras's EarlyStopping state: the best monitored value, when it was seen, and how many
/// epochs have passed without an improvement of more than `min_delta`.
public struct EarlyStoppingState: Codable, Equatable, Sendable {
    public var best: Double?
    public var bestEpoch: Int = 0
    public var wait: Int = 0
    public var stopped: Bool = false
}

/// Where a run is: everything besides tensors that a checkpoint must hold to resume exactly.
public struct TrainingState: Codable, Equatable, Sendable {
    /// The epoch (0-based) and step within it that run next.
    public var epoch: Int = 0
    public var stepInEpoch: Int = 0
    public var globalStep: Int = 0
    public var adamStep: Int = 0
    public var earlyStopping = EarlyStoppingState()
    public var history: [EpochMetrics] = []
    /// Running sums of the current epoch's training metrics, so a mid-epoch resume reports
    /// the same epoch averages.
    public var epochLossSum: Double = 0
    public var epochCorrect: Double = 0
    public var epochSeen: Double = 0
    public var trainSeconds: Double = 0
    /// How inputs were scaled, so evaluation and prediction see what training saw.
    public var normalizer: Normalizer = .unit
    public var config: TrainConfig

    public init(config: TrainConfig) { self.config = config }
}

extension JSONEncoder {
    /// Sorted keys: the same value always encodes to the same bytes (hashes, comparisons).
    static var sorted: JSONEncoder {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return enc
    }
}
