import Dispatch

/// The engine's own threads: layers split a batch (or channels) into one contiguous chunk
/// per worker and call single-threaded sgemm inside each, which keeps each image's column
/// matrix in its core's cache. Results do not depend on the worker count: work whose
/// arithmetic involves several examples is split by whole micro-batches (`PassContext`), and
/// the rest is per example, per channel or per element.
public enum Parallel {
    /// Worker threads per process (set once at start; 1 runs everything inline).
    nonisolated(unsafe) public static var workers = 1

    /// Sets the engine's worker count; OpenBLAS stays single-threaded inside the workers.
    public static func configure(threads: Int) {
        workers = max(1, threads)
        BLAS.setThreads(1)
    }

    /// Calls `body(worker, range)` for contiguous chunks of `0..<count`, in parallel when
    /// there is enough work (`cost` ≈ operations per item).
    /// Returns how many chunks ran (workers 0..<k).
    @inline(__always) @discardableResult
    public static func chunks(_ count: Int, cost: Int = 1 << 20, _ body: (Int, Range<Int>) -> Void) -> Int {
        let k = min(workers, count, max(1, count * cost / 200_000))
        if k <= 1 { body(0, 0..<count); return 1 }
        DispatchQueue.concurrentPerform(iterations: k) { t in
            let base = count / k, extra = count % k
            let start = t * base + min(t, extra)
            body(t, start..<(start + base + (t < extra ? 1 : 0)))
        }
        return k
    }
}
