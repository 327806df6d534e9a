import Dispatch

/// How a convolution turns into sgemm calls.
public enum ConvolutionAlgorithm: String, Sendable {
    /// Winograd for 3×3 layers with ≥ 8 input channels, else shifted GEMMs when the layer
    /// allows them, else im2col.
    case auto
    /// im2col + one sgemm per image (any stride, padding and kernel).
    case im2col
    /// Stride 1, `same` padding: kh·kw sgemms per image over shifted views of a zero-padded
    /// copy of the image, so no column matrix is built (see `Conv2D+Shifted.swift`).
    case shifted
    /// 3×3, stride 1, `same`: Winograd F(2×2, 3×3), 2.25× fewer multiplications
    /// (see `Conv2D+Winograd.swift`).
    case winograd
}

/// 2-D convolution, one image at a time per engine worker so its working set stays in
/// cache (a training forward on the im2col path also writes its column matrices out for
/// backward, within the model's budget). Weight layout is PyTorch's `[out, in, kh, kw]`;
/// activations are NCHW.
public final class Conv2D: Layer {
    public let inputShape: Shape
    public let outputShape: Shape
    public let filters: Int, kernel: Int
    public let rows: AxisGeometry, cols: AxisGeometry
    public let activation: Activation
    public let useBias: Bool
    public let l2: Float
    public var kind: LayerSpec.Kind { .conv2d }

    /// K = in·kh·kw, the inner dimension of the GEMM; P = oh·ow output pixels per image.
    var patch: Int { inputShape.c * kernel * kernel }
    var pixels: Int { outputShape.spatial }

    // Parameters and their gradients: views into the model's flat buffers.
    var weight: UnsafeMutablePointer<Float>!       // (out, in, kh, kw) = (out, K)
    var bias: UnsafeMutablePointer<Float>?         // (out)
    var dWeight: UnsafeMutablePointer<Float>!
    var dBias: UnsafeMutablePointer<Float>?

    // Workspaces, sized by `reserve`: one per algorithm (only the running path's is built),
    // and what every path shares.
    var im2colSpace: Im2colWorkspace?
    var shiftedSpace: ShiftedWorkspace?
    var winogradSpace: WinogradWorkspace?
    /// Weights (out, K) and bias (out) with a following batch norm folded in (inference only).
    var foldedOperands = FloatBuffer(count: 0)

    /// Floats of column matrices this layer may keep; a model shares `keptColumnsBudget` among
    /// its convolutions in layer order (`Model.reserve`).
    var keptColumnsAllowance = Conv2D.keptColumnsBudget
    /// 16 MiB per model: `ref`'s first convolution keeps 3.4 MiB at batch 128, `seed`'s two 0.3 MiB at 32.
    public static let keptColumnsBudget = 1 << 22

    /// Floats of one batch's column matrices on this layer's path (0 where none are built).
    public func keptFloats(batch: Int) -> Int {
        usesWinograd || usesShifted || isPointwise ? 0 : batch * patch * pixels
    }

    /// While set, worker 0 adds the seconds it spends rearranging data (im2col, col2im, the
    /// padded-plane copies) to `layoutSeconds`; the workers run equal chunks in parallel, so
    /// that is about the wall time of that part (`bench --profile`).
    public var timesLayout = false
    /// [forward, backward] seconds, while `timesLayout` is set.
    public var layoutSeconds = [0.0, 0.0]
    var layoutPhase = 0

    @inline(__always)
    func layoutTimed<T>(_ worker: Int, _ body: () -> T) -> T {
        guard timesLayout && worker == 0 else { return body() }
        return Stopwatch.add(to: &layoutSeconds[layoutPhase], body)
    }

    /// The algorithm asked for; `path` is the one that runs. Tests force each one to hold
    /// them equal to the naive convolution.
    public var algorithm: ConvolutionAlgorithm = .auto {
        didSet { im2colSpace = nil; shiftedSpace = nil; winogradSpace = nil }
    }

    /// The algorithm that runs: the forced one where the layer fits it, else im2col; `auto`
    /// picks by measurement: Winograd, then shifted GEMMs, from 8 input channels (below that
    /// the GEMMs are too thin — one channel makes each shifted tap a rank-1 update — and
    /// im2col measured faster).
    public var path: ConvolutionAlgorithm {
        switch algorithm {
        case .im2col: return .im2col
        case .shifted: return fitsShifted ? .shifted : .im2col
        case .winograd: return fitsWinograd ? .winograd : .im2col
        case .auto:
            guard inputShape.c >= 8 else { return .im2col }
            return fitsWinograd ? .winograd : fitsShifted ? .shifted : .im2col
        }
    }
    public var usesShifted: Bool { path == .shifted }
    public var usesWinograd: Bool { path == .winograd }

    public init(input: Shape, filters: Int, kernel: Int, stride: Int, padding: Padding,
                activation: Activation, useBias: Bool, l2: Float) throws {
        guard let r = AxisGeometry(input: input.h, kernel: kernel, stride: stride, padding: padding),
              let c = AxisGeometry(input: input.w, kernel: kernel, stride: stride, padding: padding)
        else {
            throw ModelError.shape("conv2d kernel \(kernel) stride \(stride) padding \(padding.rawValue) does not fit input \(input)")
        }
        self.inputShape = input; self.filters = filters; self.kernel = kernel
        self.rows = r; self.cols = c
        self.outputShape = Shape(c: filters, h: r.output, w: c.output)
        self.activation = activation; self.useBias = useBias; self.l2 = l2
    }

    public var slots: [TensorSlot] {
        var s = [TensorSlot(name: "weight", shape: [filters, inputShape.c, kernel, kernel],
                            region: .parameters, offset: 0, isKernel: true)]
        if useBias {
            s.append(TensorSlot(name: "bias", shape: [filters], region: .parameters,
                                offset: filters * patch, isKernel: false))
        }
        return s
    }

    public var forwardFlops: Int { filters * patch * pixels }
    public func trainingFlops(inputGradient: Bool) -> Int { 2 * forwardFlops * (inputGradient ? 3 : 2) }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                     state: UnsafeMutablePointer<Float>) {
        weight = parameters; dWeight = gradients
        if useBias { bias = parameters + filters * patch; dBias = gradients + filters * patch }
    }

    public func initialize(rng: CounterRNG, layerIndex: Int) {
        glorotUniform(weight, count: filters * patch, fanIn: patch, fanOut: filters * kernel * kernel,
                      rng: rng, layerIndex: layerIndex)
        if let bias { bias.update(repeating: 0, count: filters) }
    }

    /// A 1×1, stride-1, unpadded conv needs no column matrix: the image already is one.
    var isPointwise: Bool { kernel == 1 && rows.stride == 1 && cols.stride == 1 }

    /// Whether im2col and col2im gather and scatter through a precomputed offset table instead
    /// of row loops (nil: decided by the output width). With outputs a few pixels wide the row
    /// loops spend their time on loop and bounds overhead (`seed`'s 4×4 layer: most of its
    /// time); wide rows copy faster as rows. Both give the same bits; tests force each.
    public var gathersByTable: Bool? = nil {
        didSet { im2colSpace?.gatherTable = [] }
    }
    var usesTable: Bool { !isPointwise && (gathersByTable ?? (cols.output < 16)) }

    /// Floats of scratch a forward pass on one worker needs beside its input and output:
    /// the padded planes and transformed tiles of a group of images and the transformed
    /// kernels (Winograd), the padded image and output grid (shifted), one image's column
    /// matrix (im2col) or none (1×1).
    public var inferenceWorkspace: Int {
        switch path {
        case .winograd: return WinogradWorkspace.inferenceFloats(self)
        case .shifted:
            let g = ShiftedGeometry(height: inputShape.h, width: inputShape.w, kernel: kernel)
            return inputShape.c * g.plane + filters * g.height * g.width
        case .im2col, .auto: return isPointwise ? 0 : patch * pixels
        }
    }

    public func reserve(batch: Int, keeping allowance: Int) {
        keptColumnsAllowance = allowance
        reserve(batch: batch)
    }

    public func reserve(batch: Int) {
        let workers = Parallel.workers
        switch path {
        case .winograd:
            if winogradSpace?.workers != workers { winogradSpace = WinogradWorkspace(self, workers: workers) }
        case .shifted:
            if shiftedSpace?.workers != workers { shiftedSpace = ShiftedWorkspace(self, workers: workers) }
        case .im2col, .auto:
            if im2colSpace?.workers != workers { im2colSpace = Im2colWorkspace(workers: workers, columnFloats: patch * pixels) }
            let space = im2colSpace!
            if usesTable && space.gatherTable.isEmpty { space.gatherTable = makeGatherTable() }
            space.reserveKept(keptFloats(batch: batch), allowance: keptColumnsAllowance)
        }
    }

    /// What a forward pass applies: the layer's own weights, bias and activation, or in
    /// inference those with the batch norm that follows folded in (`forward(…folding:)`).
    struct ForwardOperands {
        var weight: UnsafePointer<Float>       // (out, K)
        var bias: UnsafePointer<Float>?        // (out)
        var activation: Activation
        var alpha: Float
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        forward(x, y, batch: batch, operands: ForwardOperands(weight: weight, bias: bias.map { UnsafePointer($0) },
                                                              activation: activation, alpha: 1),
                context: context, keepsColumns: context.training)
    }

    /// A linear convolution folds the batch norm of its channels that follows it.
    public func folding(_ next: Layer) -> FoldsIntoConvolution? {
        guard activation == .linear, let bn = next as? FoldsIntoConvolution, bn.channels == filters else { return nil }
        return bn
    }

    /// The inference forward of this layer followed by `bn` (in inference mode) and the activation
    /// fused into `bn`, in one pass: with `bn`'s inference y = x·s + t per output channel, the
    /// weights become w·s and the bias b·s + t, so the batch norm's own pass over the output
    /// disappears. The same function up to rounding (tests hold it to the two passes).
    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        folding bn: FoldsIntoConvolution, context: PassContext) {
        precondition(activation == .linear && bn.channels == filters,
                     "Conv2D: only a linear convolution folds the batch norm of its \(filters) channels")
        if foldedOperands.count != filters * patch + filters { foldedOperands = FloatBuffer(count: filters * patch + filters) }
        let w = foldedOperands.pointer, b = w + filters * patch
        for o in 0..<filters {
            let (scale, shift) = bn.inferenceAffine(o)
            for i in 0..<patch { w[o * patch + i] = weight[o * patch + i] * scale }
            b[o] = (bias?[o] ?? 0) * scale + shift
        }
        forward(x, y, batch: batch, operands: ForwardOperands(weight: w, bias: b, activation: bn.fusedActivation,
                                                              alpha: bn.fusedAlpha), context: context)
    }

    /// `keepsColumns`: a training forward, whose column matrices backward may reuse. The
    /// Winograd and shifted paths batch images in their GEMMs, so they run per micro-batch; the
    /// im2col path's GEMMs are one image's.
    func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, operands: ForwardOperands,
                 context: PassContext, keepsColumns: Bool = false) {
        layoutPhase = 0
        if let space = preparedWinogradSpace(forwardWeight: operands.weight, flipped: false) {
            context.forEachMicroBatch(batch, cost: forwardFlops) { t, _, images in
                winogradForward(x, y, images: images, worker: t, space: space, operands: operands)
            }
            return
        }
        if let space = preparedShiftedSpace(weight: operands.weight) {
            context.forEachMicroBatch(batch, cost: forwardFlops) { t, _, images in
                shiftedForward(x, y, images: images, worker: t, space: space, operands: operands)
            }
            return
        }
        im2colForward(x, y, batch: batch, space: preparedIm2colSpace(), operands: operands, keepsColumns: keepsColumns)
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        layoutPhase = 1
        let shifted = preparedShiftedSpace(weight: weight), winograd = preparedWinogradSpace(forwardWeight: nil, flipped: dx != nil)
        let im2col = shifted == nil && winograd == nil ? preparedIm2colSpace() : nil
        // The last forward on the im2col path was a training forward of these `batch` images.
        let kept = im2col?.holds(batch: batch, input: x) ?? false
        context.forEachMicroBatch(batch, cost: 3 * forwardFlops) { t, k, images in
            // Each micro-batch's gradients accumulate from zero in its own slot.
            let dW = dWeight + context.slotOffset(k), dB = dBias.map { $0 + context.slotOffset(k) }
            dW.update(repeating: 0, count: filters * patch)
            dB?.update(repeating: 0, count: filters)
            if let winograd {
                winogradBackward(x, y, dy, dx, images: images, worker: t, dW: dW, dB: dB, space: winograd)
            } else if let shifted {
                shiftedBackward(x, y, dy, dx, images: images, worker: t, dW: dW, dB: dB, space: shifted)
            } else if let im2col {
                im2colBackward(x, y, dy, dx, images: images, worker: t, dW: dW, dB: dB, space: im2col, kept: kept)
            }
        }
    }

    /// Turns one image's dL/dy into dL/dz (through the fused activation) in place and adds
    /// its per-channel sums to the bias gradient.
    @inline(__always)
    func preactivationGradient(y: UnsafePointer<Float>, _ dz: UnsafeMutablePointer<Float>,
                               dBias: UnsafeMutablePointer<Float>?) {
        ActivationFunction.backward(activation, alpha: 1, y: y, dz, count: outputShape.count)
        guard let dBias else { return }
        for o in 0..<filters { dBias[o] += Reduce.sum(dz + o * pixels, count: pixels) }
    }
}

/// Direct convolution, kept beside the im2col one as the reference a test holds it to.
public enum NaiveConvolution {
    /// y (N, out, OH, OW) from x (N, in, H, W), weight (out, in, k, k), bias (out).
    public static func forward(_ conv: Conv2D, x: [Float], weight: [Float], bias: [Float]?, batch: Int) -> [Float] {
        let s = conv.inputShape, o = conv.outputShape, k = conv.kernel
        var y = [Float](repeating: 0, count: batch * o.count)
        for n in 0..<batch {
            for co in 0..<o.c {
                for oy in 0..<o.h {
                    for ox in 0..<o.w {
                        var acc: Double = Double(bias?[co] ?? 0)
                        for ci in 0..<s.c {
                            for ky in 0..<k {
                                let iy = oy * conv.rows.stride - conv.rows.padBefore + ky
                                if iy < 0 || iy >= s.h { continue }
                                for kx in 0..<k {
                                    let ix = ox * conv.cols.stride - conv.cols.padBefore + kx
                                    if ix < 0 || ix >= s.w { continue }
                                    acc += Double(x[((n * s.c + ci) * s.h + iy) * s.w + ix])
                                         * Double(weight[((co * s.c + ci) * k + ky) * k + kx])
                                }
                            }
                        }
                        y[((n * o.c + co) * o.h + oy) * o.w + ox] = Float(acc)
                    }
                }
            }
        }
        return y
    }
}
