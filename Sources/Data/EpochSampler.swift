import Engine

/// The order in which training examples meet the weights: one permutation of the training set
/// per epoch, keyed by `(seed, epoch)` so that every rank computes it without talking, cut into
/// global batches of `batchSize` (the last one of an epoch may be smaller). The global batch is
/// the unit of the schedule; how it is split over ranks does not change which examples it holds.
/// Each global batch is cut into micro-batches of `microBatch` examples (the last may be
/// smaller), and ranks take whole micro-batches, so what a micro-batch computes is the same
/// whatever the number of ranks.
public struct EpochSampler: Sendable {
    public let count: Int
    public let batchSize: Int
    public let rank: Int
    public let worldSize: Int
    public let microBatch: Int
    /// Passes per step (gradient accumulation).
    public let passes: Int
    let rng: CounterRNG

    public init(count: Int, batchSize: Int, seed: UInt64, rank: Int, worldSize: Int, microBatch: Int, passes: Int = 1) {
        precondition(count >= 0 && batchSize >= 1 && worldSize >= 1 && (0..<worldSize).contains(rank) && microBatch >= 1,
                     "EpochSampler: count \(count), batch \(batchSize), rank \(rank) of \(worldSize), micro-batch \(microBatch)")
        self.count = count; self.batchSize = batchSize; self.rank = rank; self.worldSize = worldSize
        self.microBatch = microBatch; self.passes = max(1, passes)
        rng = CounterRNG(seed: seed)
    }

    public var stepsPerEpoch: Int { (count + batchSize - 1) / batchSize }

    /// The most examples any rank holds of one global batch: what its buffers are sized for.
    public var largestShare: Int { fullBatch.share(pass: 0).count }

    /// Gradient slots a rank needs: its micro-batches over all passes of a full batch.
    public var largestMicroBatchCount: Int { (0..<passes).reduce(0) { $0 + fullBatch.localMicroBatches(pass: $1) } }

    /// A full global batch as rank 0 (which holds the most) cuts it.
    var fullBatch: GlobalBatch {
        GlobalBatch(epoch: 0, step: 0, indices: Array(0..<batchSize)[...], microBatch: microBatch, rank: 0, worldSize: worldSize,
                    passes: passes)
    }

    /// The global batches of epoch `epoch` (0-based).
    public func epoch(_ epoch: Int) -> Epoch {
        Epoch(number: epoch, order: rng.permutation(count: count, epoch: epoch), sampler: self)
    }

    public struct Epoch: Sendable {
        public let number: Int
        /// (count) dataset indices in the epoch's order.
        public let order: [Int]
        let sampler: EpochSampler

        /// Global batch `step` (0-based) of the epoch, with this rank's share of it.
        public func batch(_ step: Int) -> GlobalBatch {
            let lo = step * sampler.batchSize, hi = min(lo + sampler.batchSize, order.count)
            precondition(lo < hi, "EpochSampler: step \(step) is past the epoch's \(sampler.stepsPerEpoch)")
            return GlobalBatch(epoch: number, step: step, indices: order[lo..<hi], microBatch: sampler.microBatch,
                               rank: sampler.rank, worldSize: sampler.worldSize, passes: sampler.passes)
        }
    }
}

/// One step's examples: `indices` (dataset indices, the whole global batch in schedule order),
/// cut into micro-batches of `microBatch`. The step runs them in `passes` passes (gradient
/// accumulation: 1 unless asked), each pass a contiguous run of whole micro-batches, and in each
/// pass this rank computes whole micro-batches (`microBatchShare`).
public struct GlobalBatch: Sendable {
    public let epoch: Int
    /// The step within the epoch (0-based).
    public let step: Int
    public let indices: ArraySlice<Int>
    public let microBatch: Int
    public let passes: Int
    let rank: Int, worldSize: Int

    public init(epoch: Int, step: Int, indices: ArraySlice<Int>, microBatch: Int, rank: Int, worldSize: Int, passes: Int = 1) {
        precondition(passes >= 1, "GlobalBatch: \(passes) passes")
        self.epoch = epoch; self.step = step; self.indices = indices; self.microBatch = microBatch
        self.rank = rank; self.worldSize = worldSize; self.passes = passes
    }

    /// Examples in the global batch (the loss is their mean).
    public var size: Int { indices.count }

    /// Micro-batches in the global batch.
    public var microBatches: Int { (indices.count + microBatch - 1) / microBatch }

    /// Positions (within the global batch) of pass `p`'s examples: whole micro-batches, the
    /// earlier passes holding one more when they do not divide evenly.
    public func positions(pass p: Int) -> Range<Int> {
        let chunks = contiguousShare(of: microBatches, part: p, parts: passes)
        return min(chunks.lowerBound * microBatch, size) ..< min(chunks.upperBound * microBatch, size)
    }

    /// Positions (within the global batch) this rank computes in pass `p`.
    public func share(pass p: Int = 0) -> Range<Int> {
        let all = positions(pass: p)
        let mine = microBatchShare(of: all.count, microBatch: microBatch, part: rank, parts: worldSize)
        return all.lowerBound + mine.lowerBound ..< all.lowerBound + mine.upperBound
    }

    /// This rank's dataset indices in pass `p`.
    public func mine(pass p: Int = 0) -> ArraySlice<Int> {
        let s = share(pass: p)
        return indices[(indices.startIndex + s.lowerBound)..<(indices.startIndex + s.upperBound)]
    }

    /// Micro-batches this rank computes in pass `p`.
    public func localMicroBatches(pass p: Int = 0) -> Int { (share(pass: p).count + microBatch - 1) / microBatch }

    /// Positions within this rank's share of pass `p` of its micro-batch `k`.
    public func localMicroBatch(_ k: Int, pass p: Int = 0) -> Range<Int> {
        k * microBatch ..< min((k + 1) * microBatch, share(pass: p).count)
    }
}

/// Part `part` of `count` items cut into micro-batches of `microBatch` (the last may be smaller)
/// whose micro-batches are split among `parts` by `contiguousShare`: whole micro-batches,
/// contiguous, in order.
public func microBatchShare(of count: Int, microBatch: Int, part: Int, parts: Int) -> Range<Int> {
    let chunks = contiguousShare(of: (count + microBatch - 1) / microBatch, part: part, parts: parts)
    return min(chunks.lowerBound * microBatch, count) ..< min(chunks.upperBound * microBatch, count)
}

/// Part `part` of `count` items split among `parts`: contiguous, in order, sizes differing by at
/// most one, the first `count % parts` parts holding the larger ones; a part may be empty. Global
/// batches and evaluation sets are split over ranks this way.
public func contiguousShare(of count: Int, part: Int, parts: Int) -> Range<Int> {
    let base = count / parts, extra = count % parts
    let start = part * base + min(part, extra)
    return start ..< start + base + (part < extra ? 1 : 0)
}
