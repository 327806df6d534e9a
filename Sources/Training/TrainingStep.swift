import Collective
import Data
import Engine

/// What one step gives back, summed over the global batch (the same on every rank).
struct StepTotals {
    var lossSum: Double      // Σ cross-entropy over the global batch
    var correct: Double
    var count: Int           // global batch size
    var stopRequested: Bool
    /// Seconds this rank spent in collectives during the step (batch-norm sums included).
    var exchangeSeconds: Double
}

/// One synchronized training step, shared by `train` and `bench`, whose result does not depend
/// on the number of ranks or threads: the global batch is cut into micro-batches of
/// `model.microBatch` examples and every rank computes whole micro-batches (`GlobalBatch`),
/// each one's gradients in its own slot (the same bits wherever it runs). Then:
/// 1. one all-reduce of maxima: per parameter tensor the largest |g| of any micro-batch (and
///    the stop flag), from which every rank derives the same fixed-point scales;
/// 2. each rank adds its micro-batches' gradients as Int64 at those scales, and one Int64
///    reduce-scatter sums them over ranks (integer sums are exact: `MicroBatchGradients`);
/// 3. one ordered sum of the per-micro-batch `[loss sum | correct]` rows;
/// then each rank adds L2 gradients and takes the Adam step on its shard of the parameters only
/// (ZeRO stage 1: Adam's work is not repeated on every rank), and the updated shards are
/// all-gathered, so every rank holds the same weights. Adam's moments outside a rank's shard
/// are stale there; `gatherOptimizerState()` completes them (before checkpoints).
final class TrainingStep {
    let model: Model
    let adam: Adam
    let comm: Communicator
    /// Batch-norm statistics and step totals, added in micro-batch order over ranks.
    let statistics: CommunicatorReducer
    let bnSync: TrainConfig.BatchNormSync
    let rng: CounterRNG
    let exact: MicroBatchGradients
    var labels: [Int32] = []
    var dlogits = FloatBuffer(count: 0)
    /// (P) the gradients as Int64 fixed point (`MicroBatchGradients`).
    var fixedPoint: UnsafeMutableBufferPointer<Int64>

    /// Label smoothing ε of the loss being trained.
    var smoothing: Float = 0

    /// Seconds per phase of the step outside the layers, summed while set (`bench --profile`).
    final class PhaseTimes {
        var input = 0.0, loss = 0.0, gradientAllReduce = 0.0, optimizer = 0.0
    }
    var phaseTimes: PhaseTimes?
    private var unprofiled = PhaseTimes()

    init(model: Model, adam: Adam, comm: Communicator, bnSync: TrainConfig.BatchNormSync, seed: UInt64) {
        self.model = model; self.adam = adam; self.comm = comm; self.bnSync = bnSync
        statistics = CommunicatorReducer(comm)
        rng = CounterRNG(seed: seed)
        exact = MicroBatchGradients(model)
        fixedPoint = .allocate(capacity: max(model.parameterCount, 1))
    }

    deinit { fixedPoint.deallocate() }

    /// Sizes buffers for local shares of up to `batch` examples.
    func reserve(batch: Int) {
        model.reserve(batch: batch)
        if labels.count < batch { labels = [Int32](repeating: 0, count: batch) }
        if dlogits.count < batch * model.classes { dlogits = FloatBuffer(count: batch * model.classes) }
    }

    /// The model's input (augmented when asked, keyed by (seed, epoch, dataset index), never by
    /// rank) and the labels of `indices`.
    private func fillInput(dataset: Dataset, normalizer: Normalizer, augmenter: Augmenter?, epoch: Int,
                           indices: ArraySlice<Int>) {
        if let augmenter, augmenter.config != .none {
            let input = model.input.pointer, per = model.inputShape.count
            Parallel.chunks(indices.count, cost: 20 * per) { _, r in
                augmenter.fill(input + r.lowerBound * per, from: dataset,
                               indices: indices[(indices.startIndex + r.lowerBound)..<(indices.startIndex + r.upperBound)],
                               epoch: epoch, normalizer: normalizer)
            }
        } else {
            normalizer.fill(model.input.pointer, from: dataset, indices: indices)
        }
        for (j, i) in indices.enumerated() { labels[j] = Int32(dataset.labels[i]) }
    }

    /// Sizes the gradient slots for `count` micro-batches per step (all passes).
    func reserve(microBatches count: Int) { model.reserveGradientSlots(count) }

    /// Runs global step `globalStep` on this rank's share of `batch`, pass after pass (one unless
    /// gradients are accumulated): each pass's micro-batches fill the gradient slots after the
    /// last pass's, and the exchange below sums them all at once.
    func run(_ batch: GlobalBatch, dataset: Dataset, normalizer: Normalizer, augmenter: Augmenter? = nil,
             globalStep: Int, learningRate: Double, stopRequested: Bool) throws -> StepTotals {
        let times = phaseTimes ?? unprofiled
        let globalBatch = batch.size
        precondition(batch.microBatch == model.microBatch, "TrainingStep: batch cut into \(batch.microBatch), model runs \(model.microBatch)")
        precondition(batch.passes == 1 || bnSync == .global, "TrainingStep: passes need --bn-sync global")
        var exchange = 0.0   // seconds in collectives, this step
        statistics.seconds = 0
        // Per micro-batch [global index | loss sum | correct], added in micro-batch order below.
        var rows: [Double] = []
        var chunks = 0, n = 0   // micro-batches and examples this rank ran, all passes
        for pass in 0..<batch.passes {
            let indices = batch.mine(pass: pass), share = batch.share(pass: pass), count = indices.count
            Stopwatch.add(to: &times.input) {
                fillInput(dataset: dataset, normalizer: normalizer, augmenter: augmenter, epoch: batch.epoch, indices: indices)
            }
            var context = PassContext(training: true, rng: rng, step: globalStep, exampleOffset: share.lowerBound,
                                      reducer: bnSync == .global ? statistics : nil)
            context.sumsGradients = false
            context.firstSlot = chunks
            let logits = try model.forward(batch: count, context: context)
            Stopwatch.add(to: &times.loss) {
                labels.withUnsafeBufferPointer { labels in
                    for k in 0..<batch.localMicroBatches(pass: pass) {
                        let r = batch.localMicroBatch(k, pass: pass), classes = model.classes
                        let (loss, correct) = SoftmaxCrossEntropy.forwardBackward(
                            logits: logits + r.lowerBound * classes, labels: labels.baseAddress! + r.lowerBound,
                            batch: r.count, classes: classes, scale: 1 / Float(globalBatch),
                            dlogits: dlogits.pointer + r.lowerBound * classes, smoothing: smoothing)
                        rows += [Double((share.lowerBound + r.lowerBound) / batch.microBatch), loss, Double(correct)]
                    }
                }
            }
            try model.backward(batch: count, dlogits: dlogits.pointer, context: context)
            chunks += batch.localMicroBatches(pass: pass); n += count
        }

        let P = model.parameterCount
        var conversion = 0.0   // maxima and fixed-point conversions, counted with the exchange in profiles
        var maxima = Stopwatch.add(to: &conversion) { exact.maxima(slots: chunks) } + [stopRequested ? 1 : 0]
        // `--bn-sync local`: running statistics averaged with weights n_rank / B, the update a
        // single process would make from the per-rank batch statistics (not bitwise across
        // world sizes: the statistics themselves are the rank's).
        var runningStats = [Float]()
        if bnSync == .local {
            let w = Float(n) / Float(globalBatch), s = model.state.pointer
            runningStats = (0..<model.stateCount).map { s[$0] * w }
        }
        let shard = comm.shard(of: P)
        try Stopwatch.add(to: &exchange) {
            comm.phase = "gradient maxima all-reduce"
            try comm.allReduceMax(&maxima)
        }
        let scales = MicroBatchGradients.scales(maxima: Array(maxima.dropLast()), addends: batch.microBatches)
        Stopwatch.add(to: &conversion) { exact.toFixedPoint(slots: chunks, scales: scales, into: fixedPoint.baseAddress!) }
        try Stopwatch.add(to: &exchange) {
            comm.phase = "gradient reduce-scatter"
            try comm.reduceScatterSum(fixedPoint)
        }
        Stopwatch.add(to: &conversion) { exact.fromFixedPoint(fixedPoint.baseAddress!, scales: scales, range: shard) }
        let totals = try sumInMicroBatchOrder(rows)
        if bnSync == .local {
            try Stopwatch.add(to: &exchange) {
                comm.phase = "running statistics all-reduce"
                try comm.allReduceSum(&runningStats)
            }
            model.state.pointer.update(from: runningStats, count: runningStats.count)
        }
        Stopwatch.add(to: &times.optimizer) {
            model.addL2Gradients(in: shard)
            adam.update(model.parameters.pointer, model.gradients, learningRate: learningRate, range: shard)
        }
        try Stopwatch.add(to: &exchange) {
            comm.phase = "parameter all-gather"
            try comm.allGatherShards(UnsafeMutableBufferPointer(start: model.parameters.pointer, count: P))
        }
        times.gradientAllReduce += exchange + conversion
        return StepTotals(lossSum: totals[0], correct: totals[1], count: globalBatch, stopRequested: maxima.last! > 0,
                          exchangeSeconds: exchange + statistics.seconds)
    }

    /// [loss sum, correct] over every rank's `[index | loss | correct]` rows, added in global
    /// micro-batch order (`index`): the same fold on every rank and for any world size or pass
    /// count.
    private func sumInMicroBatchOrder(_ rows: [Double]) throws -> [Double] {
        var all = rows
        if comm.size > 1 {
            comm.phase = "step totals all-gather"
            all = try Stopwatch.add(to: &statistics.seconds) {
                try comm.allGather(rows.withUnsafeBytes { Array($0) }).flatMap { bytes in
                    bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
                }
            }
        }
        let ordered = stride(from: 0, to: all.count, by: 3).sorted { all[$0] < all[$1] }
        var totals = [0.0, 0.0]
        for i in ordered { totals[0] += all[i + 1]; totals[1] += all[i + 2] }
        return totals
    }

    /// Completes Adam's moments on every rank from their owners' shards (a collective: every
    /// rank calls it, before a checkpoint is written).
    func gatherOptimizerState() throws {
        guard comm.size > 1 else { return }
        try comm.withPhase("optimizer state all-gather") {
            try comm.allGatherShards(UnsafeMutableBufferPointer(start: adam.m.pointer, count: adam.m.count))
            try comm.allGatherShards(UnsafeMutableBufferPointer(start: adam.v.pointer, count: adam.v.count))
        }
    }
}
