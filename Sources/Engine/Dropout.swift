/// Inverted dropout. The mask of each element is a pure function of
/// `(seed, step, global example index, layer, element)`, never of the rank, so every world
/// size drops the same units.
public final class Dropout: Layer {
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let rate: Float
    public let layerIndex: Int
    public var kind: LayerSpec.Kind { .dropout }
    public var slots: [TensorSlot] { [] }
    /// (N, features) scale factors, 0 or 1/(1−rate), drawn by the last training forward.
    var mask: [Float] = []
    /// Tests set this to reproduce a reference implementation's masks (N·features values).
    public var externalMask: [Float]?
    var hasTrainingForward = false

    public init(input: Shape, rate: Float, layerIndex: Int) {
        inputShape = input; self.rate = rate; self.layerIndex = layerIndex
    }

    public func reserve(batch: Int) {
        if mask.count < batch * inputShape.count { mask = [Float](repeating: 0, count: batch * inputShape.count) }
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        let F = inputShape.count
        guard context.training, rate > 0 else { y.update(from: x, count: batch * F); return }
        let keep = 1 - rate, scale = 1 / keep
        if let externalMask {
            precondition(externalMask.count >= batch * F, "Dropout.externalMask too short")
            for i in 0..<(batch * F) { mask[i] = externalMask[i] }
        } else {
            let step = UInt64(context.step), layer = UInt64(layerIndex) << 32
            for n in 0..<batch {
                let example = UInt64(context.exampleOffset + n)
                for f in 0..<F {
                    let u = context.rng.uniform(.dropout, step, example, layer | UInt64(f))
                    mask[n * F + f] = u < keep ? scale : 0
                }
            }
        }
        for i in 0..<(batch * F) { y[i] = x[i] * mask[i] }
        hasTrainingForward = true
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        precondition(hasTrainingForward || rate == 0, "Dropout.backward without a training forward")
        guard let dx else { return }
        let n = batch * inputShape.count
        if rate == 0 { dx.update(from: dy, count: n); return }
        for i in 0..<n { dx[i] = dy[i] * mask[i] }
    }
}
