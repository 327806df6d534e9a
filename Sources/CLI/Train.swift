import ArgumentParser
import Foundation
import Training

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model; data-parallel across the ranks when started by mpirun.",
        discussion: """
            Every rank runs the same command. Rank 0 prints and writes RUN_DIR: summary.json, \
            metrics.csv and checkpoints/ (step-*.safetensors, best.safetensors, final.safetensors). \
            The number of ranks does not change what is trained: -np 1, 2 or 3 give the same \
            weights up to float summation order.

            SIGTERM, SIGINT or SIGUSR1 stop the run with a checkpoint at a step boundary (under \
            mpirun, send mpirun SIGUSR1: it kills its ranks soon after a SIGTERM or SIGINT of its own).
            """)

    @Option(name: .customLong("config"), help: "Take flags from this file: a JSON object of flag names and values, as RUN_DIR/config.json holds, or TOML key = value lines (a .toml name); flags on the command line win.")
    var configFile: String?
    @OptionGroup var step: StepOptions
    @OptionGroup var augmentation: AugmentationOverrides
    @Option(help: "Folder with the four IDX files (gzipped or raw).") var data = "data/mnist"
    @Option(parsing: .unconditional, help: "Epochs to train.") var epochs = 3
    @Option(parsing: .unconditional, help: "Gradient accumulation: run each global batch in N passes, holding one pass's activations; the gradients are summed exactly, so without batch norm the weights are those of the whole batch at once (batch-norm statistics are each pass's).")
    var accumulate = 1
    @Option(parsing: .unconditional, help: "Adam learning rate (default: the model's).") var lr: Double?
    @Option(help: "Learning-rate schedule: cosine[:MIN_FACTOR] (from --lr down to MIN_FACTOR × --lr, default 0, over the run's steps after the warm-up), constant, step:RATE:STEPS, exponential:RATE:STEPS, onecycle[:DIV[:PCT[:FINAL_DIV]]] (PyTorch's OneCycleLR: div_factor, pct_start, final_div_factor) or plateau:FACTOR:PATIENCE (Keras's ReduceLROnPlateau on val_loss, min_delta 1e-4).")
    var lrSchedule = "cosine"
    @Option(parsing: .unconditional, help: "Linear learning-rate warm-up over the first N steps.") var warmupSteps = 0
    @Option(parsing: .unconditional, help: "Decoupled weight decay (AdamW) on conv and dense kernels; 0 is plain Adam.") var weightDecay = 0.0
    @Option(parsing: .unconditional, help: "Label smoothing of the training loss (evaluation reports plain cross-entropy).") var labelSmoothing = 0.0
    @Option(parsing: .unconditional, help: "Evaluate and export an exponential moving average of the weights with this decay (e.g. 0.999); 0 is off.")
    var emaDecay = 0.0
    @Flag(help: "Standardise inputs with the training split's mean and std (Keras featurewise); on with --augment seed, as in the notebook.")
    var standardize = false
    @Option(parsing: .unconditional, help: "Training examples held out (from the end) for validation.") var validationSplit = 5000
    @Option(parsing: .unconditional, help: "Early stopping: epochs without improvement before stopping; 0 turns it off.") var patience = 0
    @Option(parsing: .unconditional, help: "Early stopping: smallest change that counts as an improvement.") var minDelta = 0.0
    @Option(help: "Metric for early stopping and best.safetensors.")
    var monitor: TrainConfig.Monitor = .valLoss
    @Option(name: .customLong("restore-best-weights"), help: "With early stopping, end with the best epoch's weights (true/false).")
    var restoreBestWeights = true
    @Option(parsing: .unconditional, help: "Random seed: initial weights, shuffling, dropout.") var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "Stop after this many global steps (evaluates and writes final files).") var maxSteps: Int?
    @Flag(help: "Evaluate the test set after every epoch too (by default only once, at the end: choose by validation).")
    var testEveryEpoch = false
    @Option(parsing: .unconditional, help: "Train on only the first N training examples.") var trainLimit: Int?
    @Option(parsing: .unconditional, help: "Evaluate on only the first N test examples.") var testLimit: Int?
    @Option(help: "Run folder (rank 0 writes it).") var runDir = "runs/latest"
    @Option(parsing: .unconditional, help: "Also write a checkpoint every N global steps (one is always written at each epoch end).") var checkpointEvery: Int?
    @Option(parsing: .unconditional, help: "Step checkpoints to keep.") var keep = 3
    @Flag(help: "Continue from the newest valid checkpoint in the run dir (starts fresh if there is none).") var resume = false
    @Option(help: "Continue from this checkpoint file.") var resumeFrom: String?
    @Option(parsing: .unconditional, help: "Seconds a collective may make no progress before the rank ends with an error.") var stepTimeout: Double?
    @Option(parsing: .unconditional, help: "Log TensorBoard batch scalars every N steps; without a terminal, also print a progress line.")
    var logEvery = 100
    @Option(help: "Progress display: auto (a bar on a terminal, lines in logs and under mpirun), bar or lines.")
    var progress: Console.Progress = .auto
    @Option(help: .hidden) var restarts = 0   // set by distcnn launch on each relaunch
    @Flag(help: "Print only errors and the final line.") var quiet = false
    @Flag(help: "Print more.") var verbose = false

    func validate() throws {
        try check(epochs, "epochs", in: 1...1_000_000)
        try check(accumulate, "accumulate", in: 1...65536)
        try check(lr, "lr", in: ModelSpec.learningRateRange)
        try check(warmupSteps, "warmup-steps", in: 0...1_000_000_000)
        try check(weightDecay, "weight-decay", in: 0..<1)
        try check(labelSmoothing, "label-smoothing", in: 0..<1)
        try check(emaDecay, "ema-decay", in: 0..<1)
        let policy: LearningRatePolicy
        do { policy = try LearningRatePolicy.parse(lrSchedule, base: lr ?? 1e-3, totalSteps: 1000, warmupSteps: 0) } catch {
            throw ValidationError("\(error)")
        }
        if case .plateau = policy.schedule, validationSplit == 0 {
            throw ValidationError("--lr-schedule plateau watches val_loss and needs a validation set; set --validation-split above 0")
        }
        try check(validationSplit, "validation-split", in: 0...Int(UInt32.max))
        try check(patience, "patience", in: 0...1_000_000)
        try check(minDelta, "min-delta", in: 0...1e6)
        if patience > 0 && validationSplit == 0 { throw ValidationError("--patience needs a validation set; set --validation-split above 0") }
        try check(maxSteps, "max-steps", in: 1...1_000_000_000_000)
        try check(trainLimit, "train-limit", in: 1...Int(UInt32.max))
        try check(testLimit, "test-limit", in: 1...Int(UInt32.max))
        try check(checkpointEvery, "checkpoint-every", in: 1...1_000_000_000_000)
        try check(stepTimeout, "step-timeout", in: 0.001...1_000_000)
        try check(keep, "keep", in: 1...10_000)
        try check(logEvery, "log-every", in: 1...1_000_000_000_000)
        try check(restarts, "restarts", in: 0...1_000_000)
        if resume && resumeFrom != nil { throw ValidationError("--resume and --resume-from do not go together; pick one") }
        if quiet && verbose { throw ValidationError("--quiet and --verbose do not go together") }
    }

    func run() throws {
        let spec: ModelSpec
        do { spec = try ModelSpec.load(step.model) } catch {
            Console.error("\(error)"); throw ExitCode(1)
        }
        let config = try config(model: spec)
        var options = runOptions()
        options.configurationFile = try configurationFile(config)
        try finish(Tool.train(config: config, options: options))
    }

    /// The settings that shape the run, resolved (the model's rate and batch size filled in),
    /// as `--config` reads them: the run dir, resuming and the output are left out, so
    /// `train --config RUN_DIR/config.json --run-dir OTHER` trains the same weights again.
    func configurationFile(_ c: TrainConfig) throws -> String {
        var s: [String: Any] = [
            "model": step.model, "data": data, "epochs": epochs, "lr": c.learningRate, "lr-schedule": lrSchedule,
            "warmup-steps": warmupSteps, "weight-decay": weightDecay, "label-smoothing": labelSmoothing, "ema-decay": emaDecay,
            "standardize": standardize, "validation-split": validationSplit, "patience": patience, "min-delta": minDelta,
            "monitor": monitor.rawValue, "restore-best-weights": restoreBestWeights, "seed": NSNumber(value: seed),
            "batch-size": c.batchSize, "micro-batch": c.microBatch, "accumulate": c.accumulate, "augment": step.augment.rawValue, "bn-sync": c.bnSync.rawValue,
            "test-every-epoch": testEveryEpoch, "keep": keep, "log-every": logEvery,
        ]
        let optional: [String: Any?] = [
            "max-steps": maxSteps, "train-limit": trainLimit, "test-limit": testLimit, "checkpoint-every": checkpointEvery,
            "step-timeout": stepTimeout, "rotation": augmentation.rotation, "shift": augmentation.shift, "zoom": augmentation.zoom,
            "shear": augmentation.shear, "fill": augmentation.fill, "elastic": augmentation.elastic,
        ]
        for case let (key, value?) in optional { s[key] = value }
        let data = try JSONSerialization.data(withJSONObject: s, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    /// What is trained: every flag that reaches `TrainConfig` is read here.
    func config(model spec: ModelSpec) throws -> TrainConfig {
        var c = TrainConfig(model: spec)
        c.dataDirectory = data; c.epochs = epochs
        c.batchSize = step.batchSize(for: spec)
        c.learningRate = lr ?? spec.learningRate ?? 1e-3
        c.adam.learningRate = c.learningRate
        c.adam.weightDecay = weightDecay
        c.lrSchedule = lrSchedule; c.warmupSteps = warmupSteps; c.labelSmoothing = labelSmoothing; c.emaDecay = emaDecay
        c.seed = seed; c.validationSplit = validationSplit
        c.augment = step.augment.rawValue
        c.augmentation = try augmentation.applied(to: step.augment.config)
        // The notebook's ImageDataGenerator standardised featurewise; `--augment seed` does too.
        c.standardize = standardize || step.augment == .seed
        c.bnSync = step.bnSync
        c.microBatch = step.microBatch
        c.accumulate = accumulate
        c.patience = patience; c.minDelta = minDelta; c.monitor = monitor
        c.restoreBestWeights = restoreBestWeights; c.maxSteps = maxSteps; c.trainLimit = trainLimit; c.testLimit = testLimit
        return c
    }

    /// How it runs: every flag that reaches `RunOptions` is read here.
    func runOptions() -> RunOptions {
        var o = RunOptions()
        o.runDirectory = runDir
        o.resume = resumeFrom.map { .file($0) } ?? (resume ? .latest : .none)
        o.checkpointEvery = checkpointEvery; o.keep = keep; o.threads = step.threads; o.stepTimeout = stepTimeout
        o.logEvery = logEvery
        o.testEveryEpoch = testEveryEpoch
        o.restarts = restarts
        o.level = quiet ? .quiet : verbose ? .verbose : .normal
        o.progress = progress
        o.commandLine = CommandLine.arguments
        o.version = Distcnn.configuration.version
        return o
    }
}

/// `train`'s changes to the `--augment` preset.
struct AugmentationOverrides: ParsableArguments {
    @Option(parsing: .unconditional, help: "Override the augmentation's rotation range, degrees.") var rotation: Double?
    @Option(parsing: .unconditional, help: "Override the augmentation's shift range, fraction of the image size.") var shift: Double?
    @Option(parsing: .unconditional, help: "Override the augmentation's zoom range: scale in [1-zoom, 1+zoom].") var zoom: Double?
    @Option(parsing: .unconditional, help: "Override the augmentation's shear range, degrees (Keras's meaning).") var shear: Double?
    @Option(help: "Fill outside the image: nearest, or a pixel value 0...255.") var fill: String?
    @Option(help: "Elastic distortion ALPHA:SIGMA in pixels, e.g. 34:4.") var elastic: String?

    func validate() throws { _ = try applied(to: .none) }

    /// `preset` with the overrides applied.
    func applied(to preset: AugmentationConfig) throws -> AugmentationConfig {
        var a = preset
        for (name, value, limit) in [("rotation", rotation, 180.0), ("shift", shift, 0.9), ("zoom", zoom, 0.9), ("shear", shear, 80.0)] {
            try check(value, name, in: 0...limit)
        }
        if let rotation { a.rotationDegrees = rotation }
        if let shift { a.translate = shift }
        if let zoom { a.zoom = zoom }
        if let shear { a.shearDegrees = shear }
        if let fill {
            if fill == "nearest" { a.fill = .nearest } else if let v = Float(fill), (0...255).contains(v) { a.fill = .constant(v) } else {
                throw ValidationError("--fill must be nearest or a pixel value 0...255")
            }
        }
        if let elastic {
            let parts = elastic.split(separator: ":").compactMap { Double($0) }
            guard parts.count == 2, (0...1000).contains(parts[0]), parts[1] > 0, parts[1] <= 64 else {
                throw ValidationError("--elastic must be ALPHA:SIGMA with ALPHA in 0...1000 and SIGMA in (0, 64], e.g. 34:4")
            }
            a.elastic = ElasticDistortion(alpha: parts[0], sigma: parts[1])
        }
        return a
    }
}
