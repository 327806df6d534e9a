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

/// One synchronized training step, shared by `train` and `bench`: this rank's shard forward
/// and backward with the loss scaled by 1/(global batch); the gradients reduce-scattered (in
/// one exchange after backward, or with `bucketMiB` in buckets started as backward finishes
/// them); one small all-reduce of `[loss sum | correct | stop flag | (local BN running stats)]`;
/// then each rank adds L2 gradients and takes the Adam step on its shard of the parameters only
/// (ZeRO stage 1: Adam's work is not repeated on every rank), and the updated shards are
/// all-gathered, so every rank holds the same weights. Adam's moments outside a rank's shard
/// are stale there; `gatherOptimizerState()` completes them (before checkpoints).
final class TrainingStep {
    let model: Model
    let adam: Adam
    let comm: Communicator
    /// Batch-norm statistics sums for `--bn-sync global`.
    let statistics: CommunicatorReducer
    let bnSync: TrainConfig.BatchNormSync
    let rng: CounterRNG
    var labels: [Int32] = []
    var dlogits = FloatBuffer(count: 0)

    /// The step totals summed over ranks in one small call: loss sum, correct count, stop flag
    /// (at these offsets), then with `--bn-sync local` the running statistics weighted n_rank / B.
    static let totalLoss = 0, totalCorrect = 1, totalStop = 2, totalFixed = 3
    let totals: FloatBuffer

    /// Label smoothing ε of the loss being trained.
    var smoothing: Float = 0

    /// Gradients handed to the reduce-scatter at once during backward: a bucket starts when
    /// this many MiB of finished gradients wait (whole layers, so buckets may be larger); 0 =
    /// one bucket after backward. The sums do not depend on it. Off by default: it was no
    /// faster where it was measured (BENCHMARKS.md, "--bucket-mib").
    var bucketMiB = TrainingStep.defaultBucketMiB
    static let defaultBucketMiB = 0.0
    static let floatsPerMiB = 262_144

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
        totals = FloatBuffer(count: TrainingStep.totalFixed + (bnSync == .local ? model.stateCount : 0))
    }

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

    /// Runs global step `globalStep` on this rank's share of `batch`.
    func run(_ batch: GlobalBatch, dataset: Dataset, normalizer: Normalizer, augmenter: Augmenter? = nil,
             globalStep: Int, learningRate: Double, stopRequested: Bool) throws -> StepTotals {
        let times = phaseTimes ?? unprofiled
        let indices = batch.mine, n = indices.count, globalBatch = batch.size
        var exchange = 0.0   // seconds in collectives, this step
        statistics.seconds = 0
        Stopwatch.add(to: &times.input) {
            fillInput(dataset: dataset, normalizer: normalizer, augmenter: augmenter, epoch: batch.epoch, indices: indices)
        }
        model.zeroGradients()
        let context = PassContext(training: true, rng: rng, step: globalStep, exampleOffset: batch.share.lowerBound,
                                  reducer: bnSync == .global ? statistics : nil)
        let logits = try model.forward(batch: n, context: context)
        let (lossSum, correct) = Stopwatch.add(to: &times.loss) {
            labels.withUnsafeBufferPointer {
                SoftmaxCrossEntropy.forwardBackward(logits: logits, labels: $0.baseAddress!, batch: n,
                                                    classes: model.classes, scale: 1 / Float(globalBatch),
                                                    dlogits: dlogits.pointer, smoothing: smoothing)
            }
        }
        let P = model.parameterCount
        let gradients = UnsafeMutableBufferPointer(start: model.gradients, count: P)
        comm.phase = "gradient reduce-scatter"
        var unsent = P  // gradients unsent ..< P are in the reduce-scatter
        let bucket = Int(bucketMiB * Double(TrainingStep.floatsPerMiB))
        try model.backward(batch: n, dlogits: dlogits.pointer, context: context) { done in
            guard comm.size > 1 && bucket > 0 else { return }
            comm.phase = "gradient reduce-scatter"
            try Stopwatch.add(to: &exchange) {
                if unsent - done >= bucket {
                    try comm.startReduceScatter(gradients, range: done ..< unsent)
                    unsent = done
                } else if unsent < P {
                    try comm.progressReduceScatter()
                }
            }
        }

        let t = totals.pointer, localStats = totals.count - TrainingStep.totalFixed
        t[TrainingStep.totalLoss] = Float(lossSum)
        t[TrainingStep.totalCorrect] = Float(correct)
        t[TrainingStep.totalStop] = stopRequested ? 1 : 0
        // Running statistics averaged with weights n_rank / B: the same update a single
        // process would make from the per-rank batch statistics (`--bn-sync local` only).
        let w = Float(n) / Float(globalBatch), s = model.state.pointer
        for i in 0..<localStats { t[TrainingStep.totalFixed + i] = s[i] * w }
        let shard = comm.shard(of: P)
        try Stopwatch.add(to: &exchange) {
            comm.phase = "gradient reduce-scatter"
            try comm.startReduceScatter(gradients, range: 0 ..< unsent)
            comm.phase = "step totals all-reduce"
            try comm.allReduceSum(UnsafeMutableBufferPointer(start: t, count: totals.count))
            comm.phase = "gradient reduce-scatter"
            try comm.finishReduceScatter()
        }
        s.update(from: t + TrainingStep.totalFixed, count: localStats)
        Stopwatch.add(to: &times.optimizer) {
            model.addL2Gradients(in: shard)
            adam.update(model.parameters.pointer, model.gradients, learningRate: learningRate, range: shard)
        }
        try Stopwatch.add(to: &exchange) {
            comm.phase = "parameter all-gather"
            try comm.allGatherShards(UnsafeMutableBufferPointer(start: model.parameters.pointer, count: P))
        }
        times.gradientAllReduce += exchange
        return StepTotals(lossSum: Double(t[TrainingStep.totalLoss]), correct: Double(t[TrainingStep.totalCorrect]),
                          count: globalBatch, stopRequested: t[TrainingStep.totalStop] > 0,
                          exchangeSeconds: exchange + statistics.seconds)
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
