/// Sums per-channel statistics across the ranks that share a global batch. The engine knows
/// nothing of MPI: the trainer injects one into batch-norm layers for SyncBatchNorm.
public protocol StatisticsReducer: AnyObject {
    /// `rows` holds this rank's micro-batches' partial sums, `width` Doubles each, in micro-batch
    /// order (a rank's micro-batches follow those of the ranks before it). Writes into `total` on
    /// every rank the sum of every rank's rows added one after another in global micro-batch
    /// order — the same left fold `foldRows` makes of all rows in one process, so the bits do not
    /// depend on how the micro-batches were spread over ranks.
    func sumInOrder(_ rows: UnsafeBufferPointer<Double>, width: Int, into total: UnsafeMutableBufferPointer<Double>,
                    phase: String) throws
}

/// Adds `rows` (`width` Doubles each) into `total` one row after another, starting from zero:
/// the one order every rank's partial sums are combined in (`StatisticsReducer`).
public func foldRows(_ rows: UnsafeBufferPointer<Double>, width: Int, into total: UnsafeMutableBufferPointer<Double>) {
    precondition(total.count == width && rows.count % max(width, 1) == 0, "foldRows: \(rows.count) values in rows of \(width)")
    for i in 0..<width { total[i] = 0 }
    var r = 0
    while r < rows.count {
        for i in 0..<width { total[i] += rows[r + i] }
        r += width
    }
}

/// What a forward pass needs besides its input.
public struct PassContext {
    /// Training mode: batch statistics, dropout, caches kept for backward.
    public var training: Bool
    /// Draws dropout masks; keyed by `step` and the global example index.
    public var rng: CounterRNG
    /// Global step, part of every random key.
    public var step: Int
    /// Position of this rank's first example within the global batch.
    public var exampleOffset: Int
    /// Sums batch-norm statistics over ranks (nil: statistics of this rank's shard only).
    public var reducer: StatisticsReducer?
    /// Examples per micro-batch. Layers cut their batch into consecutive micro-batches of this
    /// size (the last may be smaller), run their batched arithmetic (every GEMM whose shape
    /// involves the batch) once per micro-batch, and keep each micro-batch's sums over examples
    /// (parameter gradients, batch-norm statistics) apart. Workers take whole micro-batches, so
    /// an example's outputs and a micro-batch's sums are the same bits whatever the number of
    /// workers, and — with ranks holding whole micro-batches of the global batch — of ranks
    /// (OpenBLAS's results depend on where an element sits in the GEMM). The model sets it
    /// (`Model.microBatch`).
    public internal(set) var microBatch = Model.defaultMicroBatch
    /// Floats from micro-batch k's parameter gradients to micro-batch k+1's (set by the model).
    var gradientStride = 0
    /// The gradient slot of this pass's first micro-batch: a step that runs its batch in several
    /// passes (gradient accumulation) puts each pass's micro-batches after the last pass's.
    public var firstSlot = 0

    /// Floats from the bound gradients to micro-batch `k`'s slot.
    func slotOffset(_ k: Int) -> Int { (firstSlot + k) * gradientStride }
    /// Whether `Model.backward` sums the micro-batches' gradients into `Model.gradients` itself
    /// (exactly, `MicroBatchGradients`); the trainer turns it off to sum them over ranks.
    public var sumsGradients = true

    public init(training: Bool, rng: CounterRNG = CounterRNG(seed: 0), step: Int = 0,
                exampleOffset: Int = 0, reducer: StatisticsReducer? = nil) {
        self.training = training; self.rng = rng; self.step = step
        self.exampleOffset = exampleOffset; self.reducer = reducer
    }

    /// Micro-batches in a batch of `batch` examples.
    func microBatchCount(_ batch: Int) -> Int { (batch + microBatch - 1) / microBatch }

    /// Examples of micro-batch `k` of a batch of `batch`.
    func microBatchRange(_ k: Int, of batch: Int) -> Range<Int> {
        k * microBatch ..< min((k + 1) * microBatch, batch)
    }

    /// Calls `body(worker, k, examples)` for every micro-batch `k` of a batch of `batch`, the
    /// workers taking whole micro-batches (`cost` ≈ operations per example).
    func forEachMicroBatch(_ batch: Int, cost: Int, _ body: (Int, Int, Range<Int>) -> Void) {
        let count = microBatchCount(batch)
        Parallel.chunks(count, cost: cost * microBatch) { t, ks in
            for k in ks { body(t, k, microBatchRange(k, of: batch)) }
        }
    }
}

/// Where a named tensor of a layer lives: in the trainable parameters or in the state
/// (batch-norm running statistics), at an offset within the layer's slice.
public struct TensorSlot: Equatable, Sendable {
    public enum Region: String, Sendable { case parameters, state }
    public var name: String        // "weight", "bias", "running_mean", "running_var"
    public var shape: [Int]        // PyTorch layout: conv [out, in, kh, kw], dense [out, in]
    public var region: Region
    public var offset: Int         // within the layer's slice of the region
    public var count: Int { shape.reduce(1, *) }
    /// A kernel (conv or dense weight): the target of L2 regularisation and weight decay.
    public var isKernel: Bool
}

/// One layer of the network. Forward and backward sit next to each other in each layer's
/// file; backward *writes* each micro-batch's parameter gradients into that micro-batch's slot
/// (`PassContext.gradientStride` apart, slot 0 at the bound gradients) and the input gradient.
/// Backward may overwrite `dy` (it belongs to this layer by then) and touches no gradients but
/// its own slice.
public protocol Layer: AnyObject {
    var kind: LayerSpec.Kind { get }
    var inputShape: Shape { get }
    var outputShape: Shape { get }
    var slots: [TensorSlot] { get }
    /// Keras `kernel_regularizer=l2(λ)`: loss += λ·Σw² over this layer's kernel.
    var l2: Float { get }

    /// Points the layer at its slices of the flat parameter, gradient and state buffers.
    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
              state: UnsafeMutablePointer<Float>)
    /// Sets the layer's parameters and state to their initial values.
    func initialize(rng: CounterRNG, layerIndex: Int)
    /// Sizes workspaces for batches of up to `batch` examples (called outside the step).
    func reserve(batch: Int)
    /// Sizes what an inference forward of `batch` examples needs (most layers: nothing per batch).
    func reserveInference(batch: Int)
    /// x: (N, inputShape) → y: (N, outputShape)
    func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                 context: PassContext) throws
    /// dy: (N, outputShape) → dx: (N, inputShape), nil when nobody needs it (first layer).
    /// Follows the training forward of the same x and batch: layers read what it cached
    /// (batch statistics, argmax, column matrices).
    func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                  _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws
    /// Multiply–adds of one example's forward pass (for GFLOP/s figures).
    var forwardFlops: Int { get }

    // What the model asks of every layer; the defaults below answer "none" / "cannot".

    /// FLOPs (2 per multiply–add) of one example's training step in this layer's GEMMs: forward,
    /// weight gradient and, with `inputGradient`, the input gradient (0: the layer has no GEMMs).
    func trainingFlops(inputGradient: Bool) -> Int
    /// Floats of scratch an inference forward on one worker needs beside its input and output.
    var inferenceWorkspace: Int { get }
    /// Floats a training forward of `batch` would keep for backward besides the layer's output
    /// (an im2col convolution's column matrices); what the model's budget is shared out by.
    func keptFloats(batch: Int) -> Int
    /// `reserve(batch:)`, keeping at most `allowance` floats from a training forward for backward
    /// (this layer's share of the model's budget).
    func reserve(batch: Int, keeping allowance: Int)
    /// The activation this layer is, when it is only that (an activation layer): the layer before
    /// it may apply it in its own pass (`fuse`).
    var fusibleActivation: (function: Activation, alpha: Float)? { get }
    /// Applies `activation` to its own output in the same pass over memory (then the model skips
    /// the activation layer); false when the layer cannot.
    func fuse(_ activation: Activation, alpha: Float) -> Bool
    /// `next` as what this layer's inference forward can apply itself (a linear convolution
    /// followed by a batch norm), or nil.
    func folding(_ next: Layer) -> FoldsIntoConvolution?
    /// The inference forward of this layer followed by `next`, in one pass; `next` is what
    /// `folding(_:)` returned.
    func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                 folding next: FoldsIntoConvolution, context: PassContext)
}

/// A layer whose inference is, per channel, y = activation(x·scale + shift) (a batch norm with
/// its running statistics, and the activation fused into it): a linear convolution before it
/// can scale its weights and bias instead, and the model skips it.
public protocol FoldsIntoConvolution: Layer {
    var channels: Int { get }
    /// Channel `c`'s inference normalisation as y = x·scale + shift (before `fusedActivation`).
    func inferenceAffine(_ c: Int) -> (scale: Float, shift: Float)
    var fusedActivation: Activation { get }
    var fusedAlpha: Float { get }
}

extension Layer {
    public var parameterCount: Int { slots.filter { $0.region == .parameters }.reduce(0) { $0 + $1.count } }
    public var stateCount: Int { slots.filter { $0.region == .state }.reduce(0) { $0 + $1.count } }
    public var l2: Float { 0 }
    public var forwardFlops: Int { 0 }
    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                     state: UnsafeMutablePointer<Float>) {}
    public func initialize(rng: CounterRNG, layerIndex: Int) {}
    public func reserve(batch: Int) {}
    public func reserveInference(batch: Int) {}
    public func trainingFlops(inputGradient: Bool) -> Int { 0 }
    public var inferenceWorkspace: Int { 0 }
    public func keptFloats(batch: Int) -> Int { 0 }
    public func reserve(batch: Int, keeping allowance: Int) { reserve(batch: batch) }
    public var fusibleActivation: (function: Activation, alpha: Float)? { nil }
    public func fuse(_ activation: Activation, alpha: Float) -> Bool { false }
    public func folding(_ next: Layer) -> FoldsIntoConvolution? { nil }
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        folding next: FoldsIntoConvolution, context: PassContext) {
        preconditionFailure("\(kind) folds no layer after it")
    }
}

/// Glorot (Xavier) uniform, Keras's default kernel initializer.
func glorotUniform(_ w: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, fanOut: Int,
                   rng: CounterRNG, layerIndex: Int) {
    let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
    for i in 0..<count {
        let u = rng.uniformDouble(.initialization, UInt64(layerIndex), UInt64(i))
        w[i] = Float((2 * u - 1) * limit)
    }
}
