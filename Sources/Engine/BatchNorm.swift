import Foundation

/// Batch normalisation over channels (after a conv) or features (after a dense layer).
///
/// Training normalises with the batch's mean and biased variance; with a `StatisticsReducer`
/// those are the *global* batch's (SyncBatchNorm): forward sums `[count | Σx | Σx²]` per
/// channel in Double in one call, backward sums `[Σdy | Σdy·x̂]` in one call. Each micro-batch's
/// sums are formed apart (a plane in Float, planes added in Double, images in order) and the
/// micro-batches' rows are added in global micro-batch order (`StatisticsReducer.sumInOrder`),
/// so the statistics are the same bits on any number of ranks and workers. γ and β gradients
/// are per micro-batch, like every parameter gradient.
/// Running statistics follow Keras: r = m·r + (1−m)·batch, with the unbiased variance.
public final class BatchNorm: FoldsIntoConvolution {
    public let inputShape: Shape
    public var outputShape: Shape { inputShape }
    public let momentum: Float, epsilon: Float
    public var kind: LayerSpec.Kind { .batchnorm }
    public var channels: Int { inputShape.c }
    /// An activation layer that follows this one, applied here in the same pass over memory
    /// (the model then skips that layer and shares its output buffer).
    public var fusedActivation: Activation = .linear
    public var fusedAlpha: Float = 1

    public func fuse(_ activation: Activation, alpha: Float) -> Bool {
        guard fusedActivation == .linear else { return false }
        fusedActivation = activation; fusedAlpha = alpha
        return true
    }

    var gamma: UnsafeMutablePointer<Float>!, beta: UnsafeMutablePointer<Float>!
    var dGamma: UnsafeMutablePointer<Float>!, dBeta: UnsafeMutablePointer<Float>!
    var runningMean: UnsafeMutablePointer<Float>!, runningVar: UnsafeMutablePointer<Float>!

    // Cached by a training forward for backward.
    var batchMean: [Float], batchInvStd: [Float]
    var globalCount: Double = 0
    var hasTrainingForward = false
    /// The sums: [count | Σx (C) | Σx² (C)] forward, [Σdy (C) | Σdy·x̂ (C)] backward.
    var sums: [Double]
    /// Per micro-batch rows of the same, before they are added up.
    var rows: [Double] = []

    public init(input: Shape, momentum: Float, epsilon: Float) {
        self.inputShape = input; self.momentum = momentum; self.epsilon = epsilon
        batchMean = [Float](repeating: 0, count: input.c)
        batchInvStd = [Float](repeating: 0, count: input.c)
        sums = [Double](repeating: 0, count: 1 + 2 * input.c)
    }

    public var slots: [TensorSlot] {
        let c = channels
        return [
            TensorSlot(name: "weight", shape: [c], region: .parameters, offset: 0, isKernel: false),
            TensorSlot(name: "bias", shape: [c], region: .parameters, offset: c, isKernel: false),
            TensorSlot(name: "running_mean", shape: [c], region: .state, offset: 0, isKernel: false),
            TensorSlot(name: "running_var", shape: [c], region: .state, offset: c, isKernel: false),
        ]
    }

    public var forwardFlops: Int { 2 * inputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                     state: UnsafeMutablePointer<Float>) {
        gamma = parameters; beta = parameters + channels
        dGamma = gradients; dBeta = gradients + channels
        runningMean = state; runningVar = state + channels
    }

    public func initialize(rng: CounterRNG, layerIndex: Int) {
        gamma.update(repeating: 1, count: channels); beta.update(repeating: 0, count: channels)
        runningMean.update(repeating: 0, count: channels); runningVar.update(repeating: 1, count: channels)
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        let C = channels, S = inputShape.spatial
        if !context.training {
            for c in 0..<C { batchMean[c] = runningMean[c]; batchInvStd[c] = runningInvStd(c) }
            normalize(x, y, batch: batch)
            return
        }
        // Per micro-batch [count | Σx | Σx²] in Double, added in micro-batch order.
        let width = 1 + 2 * C, chunks = context.microBatchCount(batch)
        if rows.count < chunks * width { rows = [Double](repeating: 0, count: chunks * width) }
        rows.withUnsafeMutableBufferPointer { rp in
          let rows = rp
          Parallel.chunks(C, cost: batch * S * 2) { _, channels in
          for c in channels {
            for k in 0..<chunks {
                var s = 0.0, q = 0.0
                for n in context.microBatchRange(k, of: batch) {
                    let (fs, fq) = Reduce.sumAndSquares(x + (n * C + c) * S, count: S)   // a plane in Float, merged in Double
                    s += Double(fs); q += Double(fq)
                }
                rows[k * width + 1 + c] = s; rows[k * width + 1 + C + c] = q
            }
          }
          }
          for k in 0..<chunks { rows[k * width] = Double(context.microBatchRange(k, of: batch).count * S) }
        }
        try combine(width: width, chunks: chunks, context: context, phase: "batch-norm forward")
        let count = sums[0]
        globalCount = count
        guard count > 0 else { hasTrainingForward = true; return }
        for c in 0..<C {
            let mean = sums[1 + c] / count
            let variance = max(sums[1 + C + c] / count - mean * mean, 0)
            batchMean[c] = Float(mean)
            batchInvStd[c] = Float(1 / (variance + Double(epsilon)).squareRoot())
            let unbiased = count > 1 ? variance * count / (count - 1) : variance
            runningMean[c] = momentum * runningMean[c] + (1 - momentum) * Float(mean)
            runningVar[c] = momentum * runningVar[c] + (1 - momentum) * Float(unbiased)
        }
        normalize(x, y, batch: batch)
        hasTrainingForward = true
    }

    /// `sums[0..<width]` = the rows of `chunks` micro-batches added in global micro-batch order:
    /// over all ranks with a reducer, else this process's rows.
    func combine(width: Int, chunks: Int, context: PassContext, phase: String) throws {
        try rows.withUnsafeBufferPointer { rp in
            let mine = UnsafeBufferPointer(rebasing: rp[0..<(chunks * width)])
            try sums.withUnsafeMutableBufferPointer { sp in
                let total = UnsafeMutableBufferPointer(rebasing: sp[0..<width])
                if let reducer = context.reducer {
                    try reducer.sumInOrder(mine, width: width, into: total, phase: phase)
                } else {
                    foldRows(mine, width: width, into: total)
                }
            }
        }
    }

    /// y = γ·(x − mean)·invstd + β with the cached mean and invstd.
    func normalize(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int) {
        let C = channels, S = inputShape.spatial
        Parallel.chunks(batch, cost: C * S * 2) { _, images in
          for n in images {
            for c in 0..<C {
                let (scale, shift) = affine(c, mean: batchMean[c], invStd: batchInvStd[c])
                let p = x + (n * C + c) * S, q = y + (n * C + c) * S
                switch fusedActivation {
                case .relu: for i in 0..<S { q[i] = max(p[i] * scale + shift, 0) }
                case .linear: for i in 0..<S { q[i] = p[i] * scale + shift }
                case .elu:
                    for i in 0..<S { q[i] = p[i] * scale + shift }
                    ActivationFunction.apply(.elu, alpha: fusedAlpha, q, count: S)
                }
            }
          }
        }
    }

    /// Inference's 1/√(running variance + ε) of channel `c`.
    func runningInvStd(_ c: Int) -> Float { 1 / (runningVar[c] + epsilon).squareRoot() }

    public func inferenceAffine(_ c: Int) -> (scale: Float, shift: Float) {
        affine(c, mean: runningMean[c], invStd: runningInvStd(c))
    }

    /// Channel `c`'s normalisation as y = x·scale + shift (before the fused activation):
    /// scale = γ·invStd, shift = β − mean·scale.
    func affine(_ c: Int, mean: Float, invStd: Float) -> (scale: Float, shift: Float) {
        let scale = gamma[c] * invStd
        return (scale, beta[c] - mean * scale)
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        precondition(hasTrainingForward, "BatchNorm.backward without a training forward")
        let C = channels, S = inputShape.spatial
        // With a fused activation, dy is at the activation's output; the gradient at the batch
        // norm's output is dy·f'(z), z = γ·x̂ + β. ReLU's gate recomputes z from x inside the
        // sums (saves reading y); ELU's f'(z) = α·eᶻ = y + α for y ≤ 0 reads y instead (an
        // exponential per element cost ten times the rest of this backward). Either replaces dy
        // in place (dy is this layer's own scratch), so the dx pass reads it as is.
        let act = fusedActivation, alpha = fusedAlpha
        // Per micro-batch [Σdy | Σdy·x̂]; each micro-batch's γ and β gradients into its slot.
        let width = 2 * C, chunks = context.microBatchCount(batch)
        rows.withUnsafeMutableBufferPointer { rp in
          let rows = rp
          Parallel.chunks(C, cost: batch * S * 3) { _, channels in
          for c in channels {
            let mean = batchMean[c], inv = batchInvStd[c], gm = gamma[c], bt = beta[c]
            for k in 0..<chunks {
                var sdy = 0.0, sdyx = 0.0
                for n in context.microBatchRange(k, of: batch) {
                    let p = x + (n * C + c) * S, g = dy + (n * C + c) * S
                    if act == .elu {
                        let out = y + (n * C + c) * S
                        for i in 0..<S { let v = out[i]; g[i] = v > 0 ? g[i] : g[i] * (v + alpha) }
                    }
                    let (a, b) = Reduce.gatedSums(g, p, mean: mean, invStd: inv, gamma: gm, beta: bt,
                                                  relu: act == .relu, count: S)
                    sdy += Double(a); sdyx += Double(b)
                }
                rows[k * width + c] = sdy; rows[k * width + C + c] = sdyx
                dBeta[context.slotOffset(k) + c] = Float(sdy)
                dGamma[context.slotOffset(k) + c] = Float(sdyx)
            }
          }
          }
        }
        guard let dx else { return }
        try combine(width: width, chunks: chunks, context: context, phase: "batch-norm backward")
        let m = globalCount
        guard m > 0 else { return }
        // dx = γ·invstd·(dy − Σdy/M − x̂·Σdy·x̂/M)
        Parallel.chunks(C, cost: batch * S * 4) { _, channels in
          for c in channels {
            let mean = batchMean[c], inv = batchInvStd[c]
            let meanDy = Float(sums[c] / m), meanDyX = Float(sums[C + c] / m)
            let k = gamma[c] * inv
            for n in 0..<batch {
                let p = x + (n * C + c) * S, g = dy + (n * C + c) * S, d = dx + (n * C + c) * S
                for i in 0..<S {
                    let xhat = (p[i] - mean) * inv
                    d[i] = k * (g[i] - meanDy - xhat * meanDyX)
                }
            }
          }
        }
    }
}
