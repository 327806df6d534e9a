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
/// L = ⌈log₂ n⌉. With s = 62 − e − L, each rounded addend has |q| ≤ M·2^s + ½ < 2^(62−L) + ½,
/// and any partial sum of at most n of them has |Σq| < n·2^(62−L) + n/2 ≤ 2^62 + 2^61 < 2^63:
/// no order of addition overflows Int64. Each rounding errs by at most 2^-(s+1), so the sum is
/// within n·2^-(s+1) = n·2^(e+L−63) ≤ 2^(e+2L−63) ≤ M·2^(2L−62) of the exact sum of the
/// micro-batches' Float values (2M ≥ 2^e); for n = 8 that is M·2^-56, then the final rounding
/// to Float adds half an ulp of the result. Elements far smaller than M keep that absolute
/// error, as in any fixed-point format. Values are scaled in Double, where g·2^s is exact for
/// every finite Float g (|s| stays below 300).
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
    public func maxima(slots: Int) -> [Double] {
        let g = model.gradientBuffer.pointer, stride = model.parameterCount
        var result = [Double](repeating: 0, count: tensors.count)
        result.withUnsafeMutableBufferPointer { out in
            Parallel.chunks(tensors.count, cost: 1 << 16) { _, ts in
                for t in ts {
                    var m: Float = 0
                    for k in 0..<slots {
                        let p = g + k * stride
                        for i in tensors[t] {
                            let a = abs(p[i])
                            // `a > m` is false for NaN: test finiteness apart.
                            if !a.isFinite { m = .infinity }
                            if a > m { m = a }
                        }
                    }
                    out[t] = Double(m)
                }
            }
        }
        return result
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
            return .exponent(62 - (Int(m.exponent) + 1) - L)   // m < 2^(exponent + 1)
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
                        for i in b..<e { acc[i] &+= Int64(llrint(Double(p[i]) * factor)) }
                    }
                    b = e
                }
            }
        }
    }

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
                for i in lo..<hi { g[i] = Float(Double(acc[i]) * factor) }
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
