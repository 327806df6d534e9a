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
    /// Examples per micro-batch: the unit the global batch is cut into, whose sums are formed
    /// apart and added exactly (`TrainingStep`); the result depends on it, not on ranks or threads.
    public var microBatch: Int = TrainConfig.defaultMicroBatch
    public static let defaultMicroBatch = Model.defaultMicroBatch
    /// Passes each step runs its global batch in (gradient accumulation): activations are held
    /// for one pass only; gradients are summed exactly over all of them.
    public var accumulate: Int = 1
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
    /// Learning-rate schedule (`LearningRatePolicy.parse` forms) and linear warm-up steps.
    /// `distcnn train` defaults to `cosine`; "constant" stays the default here because it is also
    /// what a stored configuration without the key (an older checkpoint) was trained with.
    public var lrSchedule: String = "constant"
    public var warmupSteps: Int = 0
    /// Label smoothing ε of the training loss (evaluation reports plain cross-entropy).
    public var labelSmoothing: Double = 0
    /// Decay of the exponential moving average of the weights used for evaluation; 0 is off.
    public var emaDecay: Double = 0

    public init(model: ModelSpec) { self.model = model }

    enum CodingKeys: String, CodingKey {
        case model, dataDirectory, epochs, batchSize, microBatch, accumulate, learningRate, adam, seed, validationSplit, standardize, augment
        case augmentation, bnSync, patience, minDelta, monitor, restoreBestWeights, maxSteps, trainLimit, testLimit
        case evalBatchSize, lrSchedule, warmupSteps, labelSmoothing, emaDecay
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        model = try c.decode(ModelSpec.self, forKey: .model)
        let d = TrainConfig(model: model)
        func get<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T { try c.decodeIfPresent(T.self, forKey: key) ?? fallback }
        dataDirectory = try get(.dataDirectory, d.dataDirectory); epochs = try get(.epochs, d.epochs)
        batchSize = try get(.batchSize, d.batchSize); microBatch = try get(.microBatch, d.microBatch); accumulate = try get(.accumulate, d.accumulate); learningRate = try get(.learningRate, d.learningRate)
        adam = try get(.adam, d.adam); seed = try get(.seed, d.seed); validationSplit = try get(.validationSplit, d.validationSplit)
        standardize = try get(.standardize, d.standardize); augment = try get(.augment, d.augment)
        augmentation = try get(.augmentation, d.augmentation); bnSync = try get(.bnSync, d.bnSync)
        patience = try get(.patience, d.patience); minDelta = try get(.minDelta, d.minDelta); monitor = try get(.monitor, d.monitor)
        restoreBestWeights = try get(.restoreBestWeights, d.restoreBestWeights)
        maxSteps = try c.decodeIfPresent(Int.self, forKey: .maxSteps); trainLimit = try c.decodeIfPresent(Int.self, forKey: .trainLimit)
        testLimit = try c.decodeIfPresent(Int.self, forKey: .testLimit); evalBatchSize = try get(.evalBatchSize, d.evalBatchSize)
        lrSchedule = try get(.lrSchedule, d.lrSchedule); warmupSteps = try get(.warmupSteps, d.warmupSteps)
        labelSmoothing = try get(.labelSmoothing, d.labelSmoothing); emaDecay = try get(.emaDecay, d.emaDecay)
    }

    public enum BatchNormSync: String, Codable, Sendable, CaseIterable { case global, local }
    public enum Monitor: String, Codable, Sendable, CaseIterable {
        case valLoss = "val_loss", valAccuracy = "val_accuracy"
    }

    /// The fields a resumed run must share with the checkpoint (everything that changes which
    /// examples meet which weights), as name → value for a one-line diff.
    public var scheduleFields: [String: String] {
        var fields = [
            "model": model.canonicalJSON(), "batch-size": "\(batchSize)", "micro-batch": "\(microBatch)", "accumulate": "\(accumulate)", "seed": "\(seed)",
            "validation-split": "\(validationSplit)", "standardize": "\(standardize)",
            "augment": String(decoding: try! JSONEncoder.sorted.encode(augmentation), as: UTF8.self),
            "bn-sync": bnSync.rawValue, "lr": "\(learningRate)", "train-limit": "\(trainLimit.map(String.init) ?? "all")",
            "lr-schedule": lrSchedule, "warmup-steps": "\(warmupSteps)", "label-smoothing": "\(labelSmoothing)",
            "ema-decay": "\(emaDecay)", "weight-decay": "\(adam.weightDecay)",
        ]
        // A decaying schedule spans epochs × steps per epoch, so the epoch count shapes it too.
        if lrSchedule != "constant" { fields["epochs"] = "\(epochs)" }
        return fields
    }

    public func canonicalJSON() -> String {
        String(decoding: try! JSONEncoder.sorted.encode(self), as: UTF8.self)
    }
}

/// Metrics of one epoch: a finished one, or (`partial`) the steps a run took of an epoch it
/// did not finish (`--max-steps`), evaluated when the run ended.
public struct EpochMetrics: Codable, Equatable, Sendable {
    public var epoch: Int            // 1-based, as printed
    public var globalStep: Int
    public var trainLoss: Double, trainAccuracy: Double
    public var valLoss: Double?, valAccuracy: Double?
    /// Test metrics: evaluated every epoch only with `--test-every-epoch` (else once, at the end).
    public var testLoss: Double?, testAccuracy: Double?
    public var learningRate: Double
    /// Wall time of the epoch: its steps, its evaluation and its checkpoints.
    public var seconds: Double
    /// Training images per second over the epoch's steps (in this attempt, for a resumed epoch);
    /// nil in histories written before it was recorded.
    public var imagesPerSecond: Double?
    /// Wall time of the epoch's evaluation (validation, and test with `--test-every-epoch`).
    public var evaluationSeconds: Double?
    /// The run ended within this epoch; its figures cover the steps taken.
    public var partial: Bool?

    public init(epoch: Int, globalStep: Int, trainLoss: Double, trainAccuracy: Double, valLoss: Double?, valAccuracy: Double?,
                testLoss: Double?, testAccuracy: Double?, learningRate: Double, seconds: Double,
                imagesPerSecond: Double? = nil, evaluationSeconds: Double? = nil, partial: Bool? = nil) {
        self.epoch = epoch; self.globalStep = globalStep; self.trainLoss = trainLoss; self.trainAccuracy = trainAccuracy
        self.valLoss = valLoss; self.valAccuracy = valAccuracy; self.testLoss = testLoss; self.testAccuracy = testAccuracy
        self.learningRate = learningRate; self.seconds = seconds
        self.imagesPerSecond = imagesPerSecond; self.evaluationSeconds = evaluationSeconds; self.partial = partial
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
    /// `--lr-schedule plateau`'s state (nil for the other schedules, and in older checkpoints).
    public var plateau: PlateauState?
    public var history: [EpochMetrics] = []
    /// Running sums of the current epoch's training metrics, so a mid-epoch resume reports
    /// the same epoch averages.
    public var epochLossSum: Double = 0
    public var epochCorrect: Double = 0
    public var epochSeen: Double = 0
    public var trainSeconds: Double = 0
    /// Updates folded into the weight average so far (its warm-up depends on it).
    public var emaUpdates: Int = 0
    /// Engine threads per rank: per-worker partial gradients are summed in worker order, so a
    /// bitwise resume needs the same count (a resume with another count warns).
    public var threads: Int?
    /// How inputs were scaled, so evaluation and prediction see what training saw.
    public var normalizer: Normalizer = .unit
    public var config: TrainConfig

    public init(config: TrainConfig) { self.config = config }
}

/// Non-finite numbers have one encoding in every JSON file and message distcnn writes
/// (summary.json, checkpoints' state, what ranks send each other): the strings "NaN",
/// "Infinity" and "-Infinity". JSON has no such numbers; Python's `json` module writes them as
/// bare words, which other readers reject.
enum NonFinite {
    static let nan = "NaN", infinity = "Infinity", negativeInfinity = "-Infinity"
}

extension JSONEncoder {
    /// Sorted keys: the same value always encodes to the same bytes (hashes, comparisons).
    static var sorted: JSONEncoder {
        let enc = JSONEncoder.distcnn
        enc.outputFormatting = [.sortedKeys]
        return enc
    }

    /// An encoder with distcnn's encoding of non-finite numbers.
    static var distcnn: JSONEncoder {
        let enc = JSONEncoder()
        enc.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: NonFinite.infinity, negativeInfinity: NonFinite.negativeInfinity, nan: NonFinite.nan)
        return enc
    }
}

extension JSONDecoder {
    /// A decoder that reads what `JSONEncoder.distcnn` writes.
    static var distcnn: JSONDecoder {
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: NonFinite.infinity, negativeInfinity: NonFinite.negativeInfinity, nan: NonFinite.nan)
        return dec
    }
}
