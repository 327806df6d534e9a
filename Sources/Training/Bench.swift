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
    public var allReduceShare: Double
    public var stepMilliseconds: [Double]
    /// What was measured: "train" (forward, backward, all-reduce, Adam) or "eval" (inference).
    public var mode: String
    /// Largest resident set of any rank, MiB.
    public var peakRSSMiB: Double
    /// Per layer (and phase) milliseconds per step, when profiled.
    public var profile: [ProfileRow]?

    enum CodingKeys: String, CodingKey {
        case model, worldSize = "world_size", threadsPerRank = "threads_per_rank", batchSize = "batch_size", steps, seconds
        case imagesPerSecond = "images_per_second", gflops, sgemmPeakGflops = "sgemm_peak_gflops", peakShare = "peak_share"
        case allReduceShare = "all_reduce_share", stepMilliseconds = "step_milliseconds", profile, mode
        case peakRSSMiB = "peak_rss_mib"
    }
}

public struct ProfileRow: Codable, Sendable {
    public var name: String
    public var forwardMs: Double
    public var backwardMs: Double
    enum CodingKeys: String, CodingKey { case name, forwardMs = "forward_ms", backwardMs = "backward_ms" }
}

extension Tool {
    public static func bench(model name: String, batchSize: Int?, steps: Int, warmup: Int, threads: Int?, profile: Bool,
                             eval: Bool = false, convolution: ConvolutionAlgorithm = .auto, json: Bool) -> Int32 {
        let comm: Communicator
        do { comm = try makeCommunicator() } catch { Console.error("cannot start MPI: \(error)"); return 1 }
        defer { comm.finalize() }
        do {
            let r = try runBench(model: name, batchSize: batchSize, steps: steps, warmup: warmup, threads: threads, profile: profile,
                                 eval: eval, convolution: convolution, comm: comm)
            guard comm.rank == 0 else { return 0 }
            if json {
                let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(r), as: UTF8.self))
            } else {
                print(String(format: "%@ %@: %d rank(s) × %d thread(s), batch %d: %.0f images/s, %.1f GFLOP/s (%.0f%% of sgemm peak %.1f), all-reduce %.1f%% of step, peak RSS %.0f MiB",
                             r.model, r.mode, r.worldSize, r.threadsPerRank, r.batchSize, r.imagesPerSecond, r.gflops,
                             r.peakShare * 100, r.sgemmPeakGflops, r.allReduceShare * 100, r.peakRSSMiB))
                for row in r.profile ?? [] {
                    print(String(format: "  %-22@ forward %7.2f ms  backward %7.2f ms", row.name, row.forwardMs, row.backwardMs))
                }
            }
            return 0
        } catch {
            return fail(error, comm: comm)
        }
    }

    static func runBench(model name: String, batchSize: Int?, steps: Int, warmup: Int, threads: Int?, profile: Bool,
                         eval: Bool, convolution: ConvolutionAlgorithm = .auto, comm: Communicator) throws -> BenchResult {
        let spec = try ModelSpec.load(name)
        let threads = threads ?? defaultThreads(ranksOnNode: comm.localSize)
        Parallel.configure(threads: threads)
        let batch = batchSize ?? spec.batchSize ?? 128
        let model = try Model(spec: spec, reductionScalars: TrainingStep.extraFixed)
        try requireClassifier(model)
        for case let conv as Conv2D in model.layers { conv.algorithm = convolution }
        model.initialize(seed: 1)
        let adam = Adam(parameterCount: model.parameterCount, config: AdamConfig())
        let step = TrainingStep(model: model, adam: adam, comm: comm, bnSync: .global, seed: 1)
        if eval { model.reserveInference(batch: (batch + comm.size - 1) / comm.size) } else {
            step.reserve(batch: (batch + comm.size - 1) / comm.size)
        }
        let data = syntheticDataset(count: batch, shape: model.inputShape, classes: model.classes)
        let mine = shard(batch, rank: comm.rank, size: comm.size)
        let indices = Array(0..<batch)
        var times: [Double] = [], allReduce = 0.0
        for s in 0..<(warmup + steps) {
            if profile && s == warmup { model.profile = LayerProfile(layers: model.layers.count) }
            step.reducer.seconds = 0
            let t0 = DispatchTime.now().uptimeNanoseconds
            if eval {
                // Inference as `evaluate` runs it: fill, forward in inference mode, no caches for backward.
                Normalizer.unit.fill(model.input.pointer, from: data, indices: indices[mine])
                try model.forward(batch: mine.count, context: PassContext(training: false))
            } else {
                _ = try step.run(dataset: data, normalizer: .unit, indices: indices[mine], offset: mine.lowerBound,
                                 globalBatch: batch, globalStep: s, learningRate: 1e-4, stopRequested: false)
            }
            if s >= warmup {
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
                allReduce += step.reducer.seconds
            }
        }
        // The job is as fast as its slowest rank.
        var worst = [times.reduce(0, +), allReduce, peakResidentMiB()]
        comm.phase = "bench results"
        try comm.allReduceMax(&worst)
        let seconds = worst[0]
        BLAS.setThreads(threads)
        let peak = sgemmPeak()
        BLAS.setThreads(1)
        let images = Double(batch * steps)
        let flops = eval ? 2 * model.forwardFlopsPerExample : model.trainingFlopsPerExample
        let gflops = images * Double(flops) / seconds * 1e-9
        let rows = model.profile.map { p in
            model.layers.indices.map { i in
                ProfileRow(name: "\(i) \(model.layers[i].kind)", forwardMs: p.forward[i] * 1000 / Double(steps),
                           backwardMs: p.backward[i] * 1000 / Double(steps))
            } + [ProfileRow(name: "all-reduce + rest", forwardMs: 0,
                            backwardMs: (times.reduce(0, +) - p.forward.reduce(0, +) - p.backward.reduce(0, +)) * 1000 / Double(steps))]
        }
        return BenchResult(model: spec.name, worldSize: comm.size, threadsPerRank: threads, batchSize: batch, steps: steps,
                           seconds: seconds, imagesPerSecond: images / seconds, gflops: gflops,
                           sgemmPeakGflops: peak * Double(comm.size), peakShare: gflops / (peak * Double(comm.size)),
                           allReduceShare: worst[1] / seconds, stepMilliseconds: times.map { $0 * 1000 },
                           mode: eval ? "eval" : "train", peakRSSMiB: worst[2], profile: rows)
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
            let t0 = DispatchTime.now().uptimeNanoseconds
            BLAS.gemm(m: n, n: n, k: n, a.pointer, lda: n, b.pointer, ldb: n, beta: 0, c.pointer, ldc: n)
            rates.append(2 * Double(n * n * n) / (Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) * 1e-9)
        }
        return rates.dropFirst().sorted()[2]
    }
}
