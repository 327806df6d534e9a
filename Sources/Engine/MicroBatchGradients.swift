import Foundation

/// Sums the micro-batches' parameter gradients exactly, so the total does not depend on how
/// the micro-batches were grouped (by worker, by rank) or in which order they were added.
///
/// Each parameter tensor t gets one power-of-two scale 2^s(t), agreed by every rank from the
/// largest |g| of that tensor over all micro-batches (a maximum, which is order-free). Every
/// micro-batch's value is rounded once to the integer nearest g·2^s and the integers are added
/// in Int64 — integer addition is associative, so any grouping and any MPI algorithm give the
/// same bits. The sum is then converted back: Float(Double(Σ)·2^-s).
///
/// Bounds. Let M < 2^e be the tensor's largest |g| and n the number of micro-batches, with
/// L = ⌈log₂ n⌉. With s = min(51 − e, 62 − e − L), each scaled value has |g·2^s| < 2^51 (so it
/// is rounded by adding 1.5·2^52 in Double, which vectorises) and each rounded addend has
/// |q| ≤ 2^(62−L), so any partial sum of at most n of them has |Σq| ≤ n·2^(62−L) ≤ 2^62 < 2^63:
/// no order of addition overflows Int64. Each rounding errs by at most 2^-(s+1), so the sum is
/// within n·2^-(s+1) of the exact sum of the micro-batches' Float values: n·2^(e−52) ≤
/// M·2^(L−51) while n ≤ 2^11 (2M ≥ 2^e), M·2^(2L−62) beyond; for n = 8 that is M·2^-48, against
/// Float's own 2^-24 of the result. The final rounding to Float adds half an ulp of the result.
/// Elements far smaller than M keep that absolute error, as in any fixed-point format. Values
/// are scaled in Double, where g·2^s is exact for every finite Float g (|s| stays below 300).
///
/// A tensor holding a NaN or an infinity in any micro-batch sums to NaN in every element (the
/// maximum is +∞ then), so a diverging step is seen by the trainer's checks the same way on
/// every rank.
public struct MicroBatchGradients {
    public let model: Model
    /// (offset, count) of each parameter tensor in the flat gradients.
    public let tensors: [Range<Int>]

    public init(_ model: Model) {
        self.model = model
        tensors = model.tensors.filter { $0.region == .parameters }.map { $0.offset ..< $0.offset + $0.count }
    }

    /// Per tensor, the largest |g| over micro-batch slots `0..<slots` (+∞ when one is not finite).
    /// Works on bit patterns: without the sign bit, a non-negative Float's bits order as its value
    /// does, and NaN and ±∞ are the patterns from 0x7f80_0000 up — one integer maximum, which
    /// vectorises.
    public func maxima(slots: Int) -> [Double] {
        let g = UnsafeRawPointer(model.gradientBuffer.pointer).assumingMemoryBound(to: UInt32.self)
        let stride = model.parameterCount
        return tensors.map { range in
            var parts = [UInt32](repeating: 0, count: Parallel.workers)
            parts.withUnsafeMutableBufferPointer { parts in
                _ = Parallel.chunks(range.count, cost: 2 * slots) { t, part in
                    var m: UInt32 = 0
                    for k in 0..<slots {
                        let p = g + k * stride + range.lowerBound
                        for i in part { m = max(m, p[i] & 0x7fff_ffff) }
                    }
                    parts[t] = m
                }
            }
            let m = parts.max() ?? 0
            return m >= 0x7f80_0000 ? .infinity : Double(Float(bitPattern: m))
        }
    }

    /// How one tensor's micro-batch gradients are summed.
    public enum Scale: Equatable, Sendable {
        /// All zeros: the sum is zero.
        case zero
        /// A NaN or infinity somewhere: the sum is NaN.
        case nonFinite
        /// Values are rounded to integers at 2^exponent.
        case exponent(Int)
    }

    /// Each tensor's scale for sums of `addends` micro-batches whose largest |g| is `maxima[t]`.
    public static func scales(maxima: [Double], addends: Int) -> [Scale] {
        precondition(addends >= 1, "MicroBatchGradients: \(addends) addends")
        var L = 0
        while (1 << L) < addends { L += 1 }
        return maxima.map { m in
            if !m.isFinite { return .nonFinite }
            if m == 0 { return .zero }
            let e = Int(m.exponent) + 1   // m < 2^e
            return .exponent(min(51 - e, 62 - e - L))
        }
    }

    /// acc[i] = Σ over slots `0..<slots` of round(g_k[i]·2^s), for every parameter (0 in zero
    /// and non-finite tensors).
    public func toFixedPoint(slots: Int, scales: [Scale], into acc: UnsafeMutablePointer<Int64>) {
        let g = model.gradientBuffer.pointer, stride = model.parameterCount
        for (t, range) in tensors.enumerated() {
            guard case .exponent(let s) = scales[t] else {
                for i in range { acc[i] = 0 }
                continue
            }
            let factor = Double(sign: .plus, exponent: s, significand: 1)
            Parallel.chunks(range.count, cost: 4 * slots) { _, part in
                let lo = range.lowerBound + part.lowerBound, hi = range.lowerBound + part.upperBound
                // Blocks of 2048 elements keep the accumulators in L1 while the slots stream by.
                var b = lo
                while b < hi {
                    let e = min(b + 2048, hi)
                    for i in b..<e { acc[i] = 0 }
                    for k in 0..<slots {
                        let p = g + k * stride
                        for i in b..<e {
                            // |g·2^s| < 2^51, so adding 1.5·2^52 rounds it to an integer (to nearest,
                            // ties to even) held in the low bits of the sum's significand.
                            let y = Double(p[i]) * factor + MicroBatchGradients.rounder
                            acc[i] &+= Int64(bitPattern: y.bitPattern) &- MicroBatchGradients.rounderBits
                        }
                    }
                    b = e
                }
            }
        }
    }

    static let rounder = 6755399441055744.0   // 1.5·2^52
    static let rounderBits = Int64(bitPattern: rounder.bitPattern)

    /// gradients[i] = Float(Double(acc[i])·2^-s) for i in `range` (NaN in non-finite tensors, 0
    /// in all-zero ones).
    public func fromFixedPoint(_ acc: UnsafePointer<Int64>, scales: [Scale], range: Range<Int>) {
        let g = model.gradients
        for (t, tensor) in tensors.enumerated() {
            let lo = max(tensor.lowerBound, range.lowerBound), hi = min(tensor.upperBound, range.upperBound)
            guard lo < hi else { continue }
            switch scales[t] {
            case .zero: for i in lo..<hi { g[i] = 0 }
            case .nonFinite: for i in lo..<hi { g[i] = .nan }
            case .exponent(let s):
                let factor = Double(sign: .plus, exponent: -s, significand: 1)
                Parallel.chunks(hi - lo, cost: 4) { _, part in
                    for i in (lo + part.lowerBound)..<(lo + part.upperBound) { g[i] = Float(Double(acc[i]) * factor) }
                }
            }
        }
    }

    /// The exact sum of slots `0..<slots` into slot 0, in this process alone (the same bits the
    /// trainer's sum over ranks gives for the same micro-batches).
    public func sumLocally(slots: Int) {
        let P = model.parameterCount
        let s = MicroBatchGradients.scales(maxima: maxima(slots: slots), addends: slots)
        let acc = UnsafeMutablePointer<Int64>.allocate(capacity: max(P, 1))
        defer { acc.deallocate() }
        toFixedPoint(slots: slots, scales: s, into: acc)
        fromFixedPoint(acc, scales: s, range: 0..<P)
    }
}
