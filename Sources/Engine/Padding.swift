/// Output size and leading padding of one spatial axis, as TensorFlow defines them.
/// `same`: out = ceil(in / stride); the total padding max((out−1)·stride + k − in, 0) is split
/// with the odd one at the bottom/right. `valid`: out = floor((in − k) / stride) + 1, no padding.
public struct AxisGeometry: Equatable, Sendable {
    public let input: Int, kernel: Int, stride: Int
    public let output: Int
    public let padBefore: Int

    public init?(input: Int, kernel: Int, stride: Int, padding: Padding) {
        guard input > 0, kernel > 0, stride > 0 else { return nil }
        self.input = input; self.kernel = kernel; self.stride = stride
        switch padding {
        case .same:
            output = (input + stride - 1) / stride
            padBefore = max((output - 1) * stride + kernel - input, 0) / 2
        case .valid:
            guard input >= kernel else { return nil }
            output = (input - kernel) / stride + 1
            padBefore = 0
        }
    }

    /// Range of output positions o for which o·stride − padBefore + offset lies inside the input.
    @inline(__always)
    func validOutputs(offset: Int) -> Range<Int> {
        // i = o*s - p + offset ∈ [0, input)  ⇔  o ∈ [ceil((p-offset)/s), ceil((input+p-offset)/s))
        let lo = max(0, ceilDiv(padBefore - offset, stride))
        let hi = min(output, ceilDiv(input + padBefore - offset, stride))
        return lo..<max(lo, hi)
    }
}

@inline(__always)
func ceilDiv(_ a: Int, _ b: Int) -> Int {
    a >= 0 ? (a + b - 1) / b : -((-a) / b)
}
