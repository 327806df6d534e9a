/// Elementary functions in straight-line arithmetic, for loops that apply them per element.
///
/// Here `Float.squareRoot()` and libm's `expf`/`powf` are calls the compiler does not vectorise:
/// a square root per parameter was three quarters of Adam's step, `powf` most of LRN's forward
/// and `expf` two thirds of `seed`'s first convolution forward. These are plain multiplies and
/// adds (and bit moves) that vectorise, within 2.5e-7 of the exact results (tested).
public enum FastMath {
    /// eˣ for x ≤ 0 (the ELU's negative side): x = n·ln 2 + r with |r| ≤ ln2/2 (n rounded by the
    /// 1.5·2²³ trick, ln 2 in two parts), eʳ by the minimax polynomial of Cephes' `expf`
    /// (relative error about 1.7e-7, as `expf`'s), times 2ⁿ built in the exponent bits. Inputs
    /// below −87 give e⁻⁸⁷ ≈ 1.6e-38; positive inputs are clamped to 0 (e⁰ = 1).
    @inline(__always)
    public static func exp(negative x: Float) -> Float {
        let x = min(max(x, -87), 0)
        let n = (x * 1.44269504088896341 + 12_582_912) - 12_582_912
        let r = x - n * 0.693359375 - n * -2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        return p * Float(bitPattern: UInt32(bitPattern: (Int32(n) + 127) << 23))
    }

    /// 1/√s for normal s > 0: the exponent-halving first guess (relative error under 3.5e-3),
    /// then three Newton steps y·(3/2 − s/2·y²), each squaring the error, so what is left is the
    /// steps' rounding. For subnormal s (below 1.2e-38) only the order of magnitude is right.
    @inline(__always)
    public static func reciprocalSquareRoot(_ s: Float) -> Float {
        var y = Float(bitPattern: 0x5F37_5A86 &- (s.bitPattern >> 1))
        let half = 0.5 * s
        y = y * (1.5 - half * y * y)
        y = y * (1.5 - half * y * y)
        y = y * (1.5 - half * y * y)
        return y
    }

    /// √s for s ≥ 0 as s·(1/√s); exactly 0 for s = 0, and below 1.2e-19 for subnormal s.
    @inline(__always)
    public static func squareRoot(_ s: Float) -> Float { s * reciprocalSquareRoot(s) }
}
