/// Contiguous shards of a global batch (or an evaluation set): sizes differ by at most one,
/// the first `total % size` ranks get the larger ones, and a rank may get none.
public func shard(_ total: Int, rank: Int, size: Int) -> Range<Int> {
    let base = total / size, extra = total % size
    let start = rank * base + min(rank, extra)
    return start..<(start + base + (rank < extra ? 1 : 0))
}
