/// Counter-based random numbers: every value is a pure function of its key, so the same
/// example gets the same dropout mask or augmentation whatever rank draws it, and a
/// resumed run draws exactly what the uninterrupted one would have.
public struct CounterRNG: Sendable {
    /// What the randomness is for; part of every key so streams never collide.
    public enum Purpose: UInt64, Sendable {
        case initialization = 1, shuffle = 2, dropout = 3, augmentation = 4
    }

    public let seed: UInt64
    public init(seed: UInt64) { self.seed = seed }

    @inline(__always)
    static func mix(_ z0: UInt64) -> UInt64 {
        // SplitMix64's finalizer: a bijection with full avalanche.
        var z = z0 &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 64 random bits for the key `(seed, purpose, a, b, c)`.
    @inline(__always)
    public func bits(_ purpose: Purpose, _ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> UInt64 {
        var h = CounterRNG.mix(seed ^ (purpose.rawValue &* 0xD6E8_FEB8_6659_FD93))
        h = CounterRNG.mix(h ^ a)
        h = CounterRNG.mix(h ^ (b &* 0x9E37_79B9_7F4A_7C15))
        return CounterRNG.mix(h ^ (c &* 0xC2B2_AE3D_27D4_EB4F))
    }

    /// A uniform Float in [0, 1) for the key.
    @inline(__always)
    public func uniform(_ purpose: Purpose, _ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> Float {
        Float(bits(purpose, a, b, c) >> 40) * (1.0 / 16_777_216.0)
    }

    /// A uniform Double in [0, 1) for the key.
    @inline(__always)
    public func uniformDouble(_ purpose: Purpose, _ a: UInt64, _ b: UInt64 = 0, _ c: UInt64 = 0) -> Double {
        Double(bits(purpose, a, b, c) >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// The permutation of `0..<count` for one epoch (Fisher–Yates driven by keyed draws).
    public func permutation(count: Int, epoch: Int) -> [Int] {
        var p = Array(0..<count)
        if count < 2 { return p }
        for i in stride(from: count - 1, to: 0, by: -1) {
            let r = bits(.shuffle, UInt64(epoch), UInt64(i))
            // Lemire's multiply-shift: unbiased enough for i < 2^32, and exact to reproduce.
            let j = Int(((r >> 32) &* UInt64(i + 1)) >> 32)
            p.swapAt(i, j)
        }
        return p
    }
}
