import Collective
import Data
import Dispatch
import Engine
import Foundation

/// Training throughput through the same step the trainer runs, on synthetic data; under mpirun
/// the global batch is sharded and the figures are the job's aggregate.
public struct BenchResult: Codable, Sendable {
    public var model: String
    public var worldSize: Int
    public var threadsPerRank: Int
    public var batchSize: Int
    public var steps: Int
    public var seconds: Double
    public var imagesPerSecond: Double
    public var gflops: Double
    public var sgemmPeakGflops: Double
    public var peakShare: Double
    /// Share of the step the rank that spent longest in collectives spent there (waiting for
    /// slower ranks included).
    public var allReduceShare: Double
    /// The same for the rank that spent least there: the slowest rank, which seldom waits, so
    /// about what the exchanges themselves cost.
    public var allReduceShareLeast: Double
    public var stepMilliseconds: [Double]
    /// What was measured: "train" (forward, backward, all-reduce, Adam) or "eval" (inference).
    public var mode: String
    /// Batch-norm statistics over the global batch ("global") or per rank ("local").
    public var bnSync: String
    /// `--micro-batch`.
    public var microBatch: Int
    /// Largest resident set of any rank, MiB.
    public var peakRSSMiB: Double
    /// Per layer milliseconds per step (convolutions followed by their data-layout share),
    /// when profiled.
    public var profile: [ProfileRow]?
    /// The step's parts outside the layers, milliseconds per step, when profiled.
    public var phases: [PhaseRow]?

    enum CodingKeys: String, CodingKey {
        case model, worldSize = "world_size", threadsPerRank = "threads_per_rank", batchSize = "batch_size", steps, seconds
        case imagesPerSecond = "images_per_second", gflops, sgemmPeakGflops = "sgemm_peak_gflops", peakShare = "peak_share"
        case allReduceShare = "all_reduce_share", allReduceShareLeast = "all_reduce_share_least", stepMilliseconds = "step_milliseconds", profile, phases, mode, bnSync = "bn_sync", microBatch = "micro_batch"
        case peakRSSMiB = "peak_rss_mib"
    }
}

public struct ProfileRow: Codable, Sendable {
    public var name: String
    public var forwardMs: Double
    public var backwardMs: Double
    enum CodingKeys: String, CodingKey { case name, forwardMs = "forward_ms", backwardMs = "backward_ms" }
}

public struct PhaseRow: Codable, Sendable {
    public var name: String
    public var ms: Double
}

/// What `distcnn bench` measures.
public struct BenchOptions: Sendable {
    public var model = "ref"
    public var batchSize: Int?
    public var steps = 50, warmup = 5
    public var threads: Int?
    public var profile = false
    /// Inference instead of training.
    public var eval = false
    public var convolution: ConvolutionAlgorithm = .auto
    /// Applied to the synthetic training images each step, as `train --augment` does.
    public var augmentation: AugmentationConfig = .none
    /// Batch norm statistics over the global batch (`train`'s default) or per rank.
    public var bnSync: TrainConfig.BatchNormSync = .global
    /// As `train --micro-batch`.
    public var microBatch = Model.defaultMicroBatch
    public init() {}
}

extension Tool {
    /// `distcnn bench`: every rank measures; rank 0 hands the job's figures to `show`.
    /// Returns the process exit code.
    public static func bench(_ options: BenchOptions, show: (BenchResult) throws -> Void) -> Int32 {
        onEveryRank { comm in
            let r = try runBench(options, comm: comm)
            if comm.rank == 0 { try show(r) }
        }
    }

    static func runBench(_ options: BenchOptions, comm: Communicator) throws -> BenchResult {
        try agreeOnSettings(options, comm: comm)
        let spec = try ModelSpec.load(options.model)
        let threads = options.threads ?? defaultThreads(ranksOnNode: comm.localSize)
        Parallel.configure(threads: threads)
        let batch = options.batchSize ?? spec.batchSize ?? 128
        let steps = options.steps, warmup = options.warmup, eval = options.eval
        try checkMemory(spec: spec, batch: batch, microBatch: options.microBatch, eval: eval, comm: comm)
        let model = try Model(spec: spec)
        model.microBatch = options.microBatch
        try requireClassifier(model)
        let convolutions = model.layers.compactMap { $0 as? Conv2D }
        for conv in convolutions { conv.algorithm = options.convolution }
        model.initialize(seed: 1)
        let adam = Adam(parameterCount: model.parameterCount, config: AdamConfig())
        let step = TrainingStep(model: model, adam: adam, comm: comm, bnSync: options.bnSync, seed: 1)
        let mine = microBatchShare(of: batch, microBatch: options.microBatch, part: comm.rank, parts: comm.size)
        let largest = microBatchShare(of: batch, microBatch: options.microBatch, part: 0, parts: comm.size).count
        if eval { model.reserveInference(batch: largest) } else { step.reserve(batch: largest) }
        let data = syntheticDataset(count: batch, shape: model.inputShape, classes: model.classes)
        let indices = Array(0..<batch)
        let augmenter = options.augmentation == .none ? nil : Augmenter(config: options.augmentation, seed: 1)
        var times: [Double] = [], allReduce = 0.0
        for s in 0..<(warmup + steps) {
            if options.profile && s == warmup {
                model.profile = LayerProfile(layers: model.layers.count)
                step.phaseTimes = TrainingStep.PhaseTimes()
                for conv in convolutions { conv.timesLayout = true; conv.layoutSeconds = [0, 0] }
            }
            let watch = Stopwatch()
            var exchange = 0.0
            if eval {
                // Inference as `evaluate` runs it: fill, forward in inference mode, no caches for backward.
                Normalizer.unit.fill(model.input.pointer, from: data, indices: indices[mine])
                try model.forward(batch: mine.count, context: PassContext(training: false))
            } else {
                let globalBatch = GlobalBatch(epoch: 0, step: s, indices: indices[...], microBatch: options.microBatch,
                                              rank: comm.rank, worldSize: comm.size)
                exchange = try step.run(globalBatch, dataset: data, normalizer: .unit, augmenter: augmenter, globalStep: s,
                                        learningRate: 1e-4, stopRequested: false).exchangeSeconds
            }
            if s >= warmup {
                times.append(watch.seconds)
                allReduce += exchange
            }
        }
        // The job is as fast as its slowest rank.
        // [time, collectives, RSS, −collectives]: the maximum of the last is the least time in collectives.
        var worst = [times.reduce(0, +), allReduce, peakResidentMiB(), -allReduce]
        comm.phase = "bench results"
        try comm.allReduceMax(&worst)
        let seconds = worst[0]
        BLAS.setThreads(threads)
        let peak = sgemmPeak()
        BLAS.setThreads(1)
        let images = Double(batch * steps)
        let flops = eval ? 2 * model.forwardFlopsPerExample : model.trainingFlopsPerExample
        let gflops = images * Double(flops) / seconds * 1e-9
        let perStep = 1000 / Double(steps)
        let rows = model.profile.map { p in
            model.layers.indices.flatMap { i -> [ProfileRow] in
                let layer = model.layers[i]
                let folded = eval && model.batchNormsFoldedInInference.contains(i) ? " (folded into \(i - 1))" : ""
                let row = ProfileRow(name: "\(i) \(layer.kind)\(folded)", forwardMs: p.forward[i] * perStep,
                                     backwardMs: p.backward[i] * perStep)
                guard let conv = layer as? Conv2D else { return [row] }
                let work = switch conv.path {
                case .winograd: "Winograd transforms"
                case .shifted: "padded copies"
                case .im2col, .auto: "im2col/col2im"
                }
                let layout = ProfileRow(name: "  of which " + work,
                                        forwardMs: conv.layoutSeconds[0] * perStep, backwardMs: conv.layoutSeconds[1] * perStep)
                return [row, layout]
            }
        }
        let phases = step.phaseTimes.flatMap { t -> [PhaseRow]? in
            guard let p = model.profile, !eval else { return nil }
            let layers = p.forward.reduce(0, +) + p.backward.reduce(0, +)
            // Not timed itself: what the step's own clock leaves after the timed parts.
            let outside = times.reduce(0, +) - layers - t.input - t.loss - t.gradientAllReduce - t.optimizer
            return [PhaseRow(name: "input (fill + augmentation)", ms: t.input * perStep),
                    PhaseRow(name: "loss (softmax cross-entropy)", ms: t.loss * perStep),
                    PhaseRow(name: "batch-norm sync (in its rows)", ms: max(0, allReduce - t.gradientAllReduce) * perStep),
                    PhaseRow(name: "gradient/weight ring exchange", ms: t.gradientAllReduce * perStep),
                    PhaseRow(name: "optimizer (L2 + Adam, own shard)", ms: t.optimizer * perStep),
                    PhaseRow(name: "rest (untimed: zeroing gradients, timers)", ms: max(0, outside) * perStep)]
        }
        return BenchResult(model: spec.name, worldSize: comm.size, threadsPerRank: threads, batchSize: batch, steps: steps,
                           seconds: seconds, imagesPerSecond: images / seconds, gflops: gflops,
                           sgemmPeakGflops: peak * Double(comm.size), peakShare: gflops / (peak * Double(comm.size)),
                           allReduceShare: worst[1] / seconds, allReduceShareLeast: -worst[3] / seconds, stepMilliseconds: times.map { $0 * 1000 },
                           mode: eval ? "eval" : "train", bnSync: options.bnSync.rawValue, microBatch: options.microBatch, peakRSSMiB: worst[2], profile: rows, phases: phases)
    }

    /// Every rank must measure the same thing: mpirun gives them one command line, but a launch
    /// with several (`mpirun … : …`) could differ, and another micro-batch size would change the
    /// ring's messages. All ranks see all settings, so all stop together.
    static func agreeOnSettings(_ o: BenchOptions, comm: Communicator) throws {
        let mine = "model \(o.model), batch size \(o.batchSize.map(String.init) ?? "default"), steps \(o.steps), "
            + "warmup \(o.warmup), eval \(o.eval), convolution \(o.convolution), augment \(o.augmentation), "
            + "bn-sync \(o.bnSync.rawValue), micro-batch \(o.microBatch)"
        if let d = try comm.firstRankDiffering(from: Array(mine.utf8), phase: "bench settings check") {
            throw RunError.config("rank \(d.rank) was started with different bench settings than rank 0 ('\(d.all[d.rank])' vs '\(d.all[0])'); start every rank with the same command line")
        }
    }

    /// Refuses, on every rank together and before anything is allocated, a batch whose buffers
    /// would not fit in this node's memory: each rank holds its share of the global batch, and
    /// the node holds its ranks (training buffers, or inference's with `eval`).
    static func checkMemory(spec: ModelSpec, batch: Int, microBatch: Int, eval: Bool, comm: Communicator) throws {
        var message = ""
        do {
            let share = microBatchShare(of: batch, microBatch: microBatch, part: 0, parts: comm.size).count
            if eval {
                try Model(spec: spec).checkInferenceMemory(batch: share, copies: comm.localSize, hint: "use a smaller --batch-size")
            } else {
                try spec.checkMemory(batch: share, copies: comm.localSize, microBatch: microBatch)
            }
        } catch { message = "\(error)" }
        if let d = try comm.firstRankDiffering(from: Array(message.utf8), phase: "memory check"),
           let r = d.all.firstIndex(where: { !$0.isEmpty }) {
            throw RunError.config("rank \(r): \(d.all[r])")
        }
        if !message.isEmpty { throw RunError.config(message) }
    }

    /// This process's peak resident set (getrusage), MiB.
    static func peakResidentMiB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    /// Images of keyed random pixels with keyed random labels.
    static func syntheticDataset(count: Int, shape: Shape, classes: Int) -> Dataset {
        let rng = CounterRNG(seed: 7)
        let pixels = (0..<(count * shape.count)).map { UInt8(truncatingIfNeeded: rng.bits(.augmentation, UInt64($0))) }
        let labels = (0..<count).map { UInt8(rng.bits(.augmentation, 1 << 40, UInt64($0)) % UInt64(classes)) }
        return Dataset(images: pixels, labels: labels, height: shape.h, width: shape.w, channels: shape.c, classes: classes)
    }

    /// GFLOP/s of one large square sgemm with the current BLAS threads (median of 5).
    static func sgemmPeak(size n: Int = 1024) -> Double {
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
        for i in 0..<(n * n) { a.pointer[i] = Float(i % 7) * 0.1; b.pointer[i] = Float(i % 5) * 0.1 }
        var rates: [Double] = []
        for _ in 0..<6 {
            let watch = Stopwatch()
            BLAS.gemm(m: n, n: n, k: n, a.pointer, lda: n, b.pointer, ldb: n, beta: 0, c.pointer, ldc: n)
            rates.append(2 * Double(n * n * n) / watch.seconds * 1e-9)
        }
        return rates.dropFirst().sorted()[2]
    }
}
