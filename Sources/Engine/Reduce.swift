/// Reductions over one plane with eight independent Float accumulators, so the adds
/// pipeline and vectorise (a single running sum is bound by the add latency). The order is
/// fixed, so results are deterministic; they are merged in Double by the callers.
enum Reduce {
    typealias V = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ i: Int) -> V {
        UnsafeRawPointer(p + i).loadUnaligned(as: V.self)
    }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: V.self)
    }

    /// Σx.
    @inline(__always)
    static func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
        var s = V(), i = 0
        while i + 8 <= count { s += load(p, i); i += 8 }
        var fs = s.sum()
        while i < count { fs += p[i]; i += 1 }
        return fs
    }

    /// (Σx, Σx²).
    @inline(__always)
    static func sumAndSquares(_ p: UnsafePointer<Float>, count: Int) -> (Float, Float) {
        var s = V(), q = V(), i = 0
        while i + 8 <= count { let v = load(p, i); s += v; q += v * v; i += 8 }
        var fs = s.sum(), fq = q.sum()
        while i < count { let v = p[i]; fs += v; fq += v * v; i += 1 }
        return (fs, fq)
    }

    /// Batch norm backward's (Σg, Σg·x̂) with x̂ = (x − mean)·invStd; with `relu`, g is first
    /// zeroed where γ·x̂ + β ≤ 0 and written back.
    @inline(__always)
    static func gatedSums(_ g: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, mean: Float, invStd: Float,
                          gamma: Float, beta: Float, relu: Bool, count: Int) -> (Float, Float) {
        var a = V(), b = V(), i = 0
        let vm = V(repeating: mean), vi = V(repeating: invStd), vg = V(repeating: gamma), vb = V(repeating: beta)
        if relu {
            while i + 8 <= count {
                let xhat = (load(x, i) - vm) * vi
                var gi = load(g, i)
                gi.replace(with: 0, where: vg * xhat + vb .<= 0)
                store(gi, g, i)
                a += gi; b += gi * xhat; i += 8
            }
        } else {
            while i + 8 <= count {
                let xhat = (load(x, i) - vm) * vi, gi = load(g, i)
                a += gi; b += gi * xhat; i += 8
            }
        }
        var fa = a.sum(), fb = b.sum()
        while i < count {
            let xhat = (x[i] - mean) * invStd
            if relu && gamma * xhat + beta <= 0 { g[i] = 0 }
            fa += g[i]; fb += g[i] * xhat; i += 1
        }
        return (fa, fb)
    }
}
