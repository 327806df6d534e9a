import Engine

/// The order in which training examples meet the weights: one permutation of the training set
/// per epoch, keyed by `(seed, epoch)` so that every rank computes it without talking, cut into
/// global batches of `batchSize` (the last one of an epoch may be smaller). The global batch is
/// the unit of the schedule; how it is split over ranks does not change which examples it holds.
public struct EpochSampler: Sendable {
    public let count: Int
    public let batchSize: Int
    public let rank: Int
    public let worldSize: Int
    let rng: CounterRNG

    public init(count: Int, batchSize: Int, seed: UInt64, rank: Int, worldSize: Int) {
        precondition(count >= 0 && batchSize >= 1 && worldSize >= 1 && (0..<worldSize).contains(rank),
                     "EpochSampler: count \(count), batch \(batchSize), rank \(rank) of \(worldSize)")
        self.count = count; self.batchSize = batchSize; self.rank = rank; self.worldSize = worldSize
        rng = CounterRNG(seed: seed)
    }

    public var stepsPerEpoch: Int { (count + batchSize - 1) / batchSize }

    /// The most examples any rank holds of one global batch: what its buffers are sized for.
    public var largestShare: Int { (batchSize + worldSize - 1) / worldSize }

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
            let share = contiguousShare(of: hi - lo, part: sampler.rank, parts: sampler.worldSize)
            return GlobalBatch(epoch: number, step: step, indices: order[lo..<hi], share: share)
        }
    }
}

/// One step's examples: `indices` (dataset indices, the whole global batch in schedule order)
/// and the positions `share` of them that this rank computes.
public struct GlobalBatch: Sendable {
    public let epoch: Int
    /// The step within the epoch (0-based).
    public let step: Int
    public let indices: ArraySlice<Int>
    public let share: Range<Int>

    public init(epoch: Int, step: Int, indices: ArraySlice<Int>, share: Range<Int>) {
        precondition(share.lowerBound >= 0 && share.upperBound <= indices.count, "GlobalBatch: share \(share) of \(indices.count)")
        self.epoch = epoch; self.step = step; self.indices = indices; self.share = share
    }

    /// Examples in the global batch (the loss is their mean).
    public var size: Int { indices.count }

    /// This rank's dataset indices.
    public var mine: ArraySlice<Int> {
        indices[(indices.startIndex + share.lowerBound)..<(indices.startIndex + share.upperBound)]
    }
}

/// Part `part` of `count` items split among `parts`: contiguous, in order, sizes differing by at
/// most one, the first `count % parts` parts holding the larger ones; a part may be empty. Global
/// batches and evaluation sets are split over ranks this way.
public func contiguousShare(of count: Int, part: Int, parts: Int) -> Range<Int> {
    let base = count / parts, extra = count % parts
    let start = part * base + min(part, extra)
    return start ..< start + base + (part < extra ? 1 : 0)
}
