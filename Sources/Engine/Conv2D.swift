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

    var weight: UnsafeMutablePointer<Float>!       // (out, in, kh, kw) = (out, K)
    var bias: UnsafeMutablePointer<Float>?         // (out)
    /// Weights (out, K) and bias (out) with a following batch norm folded in (inference only).
    var foldedOperands = FloatBuffer(count: 0)
    var dWeight: UnsafeMutablePointer<Float>!
    var dBias: UnsafeMutablePointer<Float>?
    var columns: [FloatBuffer] = []                // per worker: (K, P) for one image
    /// The im2col path's column matrices of a whole training batch, (N, K, P), kept from forward
    /// for the weight gradient when they fit in `keptColumnsAllowance` floats (else backward
    /// rebuilds them per image), and the batch and input of the training forward that filled them.
    var keptColumns = FloatBuffer(count: 0)
    var keptBatch = 0
    var keptInput: UnsafePointer<Float>?
    /// Floats of column matrices this layer may keep; a model shares `keptColumnsBudget` among
    /// its convolutions in layer order (`Model.reserve`).
    var keptColumnsAllowance = Conv2D.keptColumnsBudget
    /// 16 MiB per model: `ref`'s first convolution keeps 3.4 MiB at batch 128, `seed`'s two 0.3 MiB at 32.
    public static let keptColumnsBudget = 1 << 22

    /// Floats of one batch's column matrices on this layer's path (0 where none are built).
    public func keptFloats(batch: Int) -> Int {
        usesWinograd || usesShifted || isPointwise ? 0 : batch * patch * pixels
    }
    /// (K·P) for each column-matrix entry the input offset it copies, −1 for padding; empty
    /// when im2col/col2im run as row loops (see `gathersByTable`).
    var gatherTable: [Int32] = []
    var partials: [FloatBuffer] = []               // workers 1…: (out·K + out) partial dW, db
    var shiftedSpace: ShiftedWorkspace?
    var winogradSpace: WinogradWorkspace?

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
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { layoutSeconds[layoutPhase] += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 }
        return body()
    }

    /// The algorithm asked for; `path` is the one that runs. Tests force each one to hold
    /// them equal to the naive convolution.
    public var algorithm: ConvolutionAlgorithm = .auto {
        didSet { columns = []; keptColumns = FloatBuffer(count: 0); keptBatch = 0; shiftedSpace = nil; winogradSpace = nil }
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
        didSet { gatherTable = [] }
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
        if partials.count != max(0, workers - 1) {
            partials = (0..<max(0, workers - 1)).map { _ in FloatBuffer(count: filters * patch + filters) }
        }
        switch path {
        case .winograd:
            if winogradSpace?.workers != workers { winogradSpace = WinogradWorkspace(self, workers: workers) }
        case .shifted:
            if shiftedSpace?.workers != workers { shiftedSpace = ShiftedWorkspace(self, workers: workers) }
        case .im2col, .auto:
            if usesTable && gatherTable.isEmpty { gatherTable = makeGatherTable() }
            if columns.count != workers { columns = (0..<workers).map { _ in FloatBuffer(count: patch * pixels) } }
            let kept = keptFloats(batch: batch)
            if kept == 0 || kept > keptColumnsAllowance {
                keptColumns = FloatBuffer(count: 0)
                keptBatch = 0
            } else if keptColumns.count < kept {
                keptColumns = FloatBuffer(count: kept)
                keptBatch = 0
            }
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
                keepsColumns: context.training)
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
                        folding bn: FoldsIntoConvolution) {
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
                                                              alpha: bn.fusedAlpha))
    }

    /// `keepsColumns`: a training forward, whose column matrices backward may reuse.
    func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, operands: ForwardOperands,
                 keepsColumns: Bool = false) {
        layoutPhase = 0
        if let space = preparedWinogradSpace(forwardWeight: operands.weight, flipped: false) {
            Parallel.chunks(batch, cost: forwardFlops) { t, images in
                winogradForward(x, y, images: images, worker: t, space: space, operands: operands)
            }
            return
        }
        if let space = preparedShiftedSpace(weight: operands.weight) {
            Parallel.chunks(batch, cost: forwardFlops) { t, images in
                shiftedForward(x, y, images: images, worker: t, space: space, operands: operands)
            }
            return
        }
        precondition(columns.count == Parallel.workers, "Conv2D: reserve(batch:) first")
        let need = keptFloats(batch: batch)
        let keeps = keepsColumns && need > 0 && keptColumns.count >= need
        keptBatch = 0
        Parallel.chunks(batch, cost: forwardFlops) { t, images in
            forward(x, y, images: images, worker: t, operands: operands, keep: keeps)
        }
        if keeps { keptBatch = batch; keptInput = x }
    }

    func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, images: Range<Int>, worker: Int,
                 operands: ForwardOperands, keep: Bool) {
        let inCount = inputShape.count, outCount = outputShape.count
        for n in images {
            let xn = x + n * inCount, yn = y + n * outCount
            let col = keep ? columns(for: xn, into: keptColumns.pointer + n * patch * pixels, worker: worker)
                           : columns(for: xn, worker: worker)
            // y_n (out, P) = W (out, K) · col (K, P)
            BLAS.gemm(m: filters, n: pixels, k: patch, operands.weight, lda: patch, col, ldb: pixels,
                      beta: 0, yn, ldc: pixels)
            if let bias = operands.bias {
                for o in 0..<filters {
                    let b = bias[o], row = yn + o * pixels
                    for p in 0..<pixels { row[p] += b }
                }
            }
            ActivationFunction.apply(operands.activation, alpha: operands.alpha, yn, count: outCount)
        }
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        layoutPhase = 1
        let space = preparedShiftedSpace(weight: weight), winograd = preparedWinogradSpace(forwardWeight: nil, flipped: dx != nil)
        // The last forward on the im2col path was a training forward of these `batch` images.
        let kept = batch > 0 && keptBatch == batch && keptInput == x
        let used = Parallel.chunks(batch, cost: 3 * forwardFlops) { t, images in
            // Worker 0 accumulates straight into the gradient buffer, the others into partials
            // that are added afterwards in worker order.
            let dW = t == 0 ? dWeight! : partials[t - 1].pointer
            let dB = t == 0 ? dBias : partials[t - 1].pointer + filters * patch
            if t > 0 { partials[t - 1].zero() }
            if let winograd {
                winogradBackward(x, y, dy, dx, images: images, worker: t, dW: dW, dB: dB, space: winograd)
            } else if let space {
                shiftedBackward(x, y, dy, dx, images: images, worker: t, dW: dW, dB: dB, space: space)
            } else {
                backward(x, y, dy, dx, images: images, worker: t, dW: dW, dB: dB, keptColumns: kept)
            }
        }
        // Only the workers that ran this call hold fresh partials.
        for t in stride(from: 1, to: used, by: 1) {
            let p = partials[t - 1].pointer
            for i in 0..<(filters * patch) { dWeight[i] += p[i] }
            if let dBias { for o in 0..<filters { dBias[o] += p[filters * patch + o] } }
        }
    }

    func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                  _ dx: UnsafeMutablePointer<Float>?, images: Range<Int>, worker: Int,
                  dW dWeight: UnsafeMutablePointer<Float>, dB dBias: UnsafeMutablePointer<Float>?, keptColumns kept: Bool) {
        let inCount = inputShape.count, outCount = outputShape.count
        for n in images {
            let xn = x + n * inCount, dz = dy + n * outCount   // dz: (out, P)
            preactivationGradient(y: y + n * outCount, dz, dBias: dBias)
            // dW (out, K) += dz (out, P) · colᵀ (P, K), with the column matrix forward kept, or rebuilt.
            let col = kept ? UnsafePointer(keptColumns.pointer + n * patch * pixels) : columns(for: xn, worker: worker)
            BLAS.gemm(transB: true, m: filters, n: patch, k: pixels, dz, lda: pixels, col, ldb: pixels,
                      beta: 1, dWeight, ldc: patch)
            guard let dx else { continue }
            let dxn = dx + n * inCount
            if isPointwise {
                BLAS.gemm(transA: true, m: patch, n: pixels, k: filters, weight, lda: patch, dz, ldb: pixels,
                          beta: 0, dxn, ldc: pixels)
            } else {
                // dcol (K, P) = Wᵀ (K, out) · dz (out, P), then scattered back to the image.
                let column = columns[worker].pointer
                BLAS.gemm(transA: true, m: patch, n: pixels, k: filters, weight, lda: patch, dz, ldb: pixels,
                          beta: 0, column, ldc: pixels)
                layoutTimed(worker) { col2im(column, dxn) }
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

    @inline(__always)
    func columns(for xn: UnsafePointer<Float>, worker: Int) -> UnsafePointer<Float> {
        columns(for: xn, into: columns[worker].pointer, worker: worker)
    }

    /// The column matrix of image `xn`, built in `room` (the image itself for a 1×1 layer).
    func columns(for xn: UnsafePointer<Float>, into room: UnsafeMutablePointer<Float>, worker: Int) -> UnsafePointer<Float> {
        if isPointwise { return xn }
        layoutTimed(worker) { im2col(xn, room) }
        return UnsafePointer(room)
    }

    /// col[(ci·kh + ky)·kw + kx][oy·ow + ox] = x[ci][oy·s − padTop + ky][ox·s − padLeft + kx], 0 outside.
    /// Rows are short (an image row), so plain loops beat memcpy/memset calls here.
    func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
        if !gatherTable.isEmpty {
            gatherTable.withUnsafeBufferPointer { table in
                for j in table.indices { let s = Int(table[j]); col[j] = s >= 0 ? x[s] : 0 }
            }
            return
        }
        let H = inputShape.h, W = inputShape.w, OH = rows.output, OW = cols.output
        let sy = rows.stride, sx = cols.stride, pt = rows.padBefore, pl = cols.padBefore
        var row = col
        for ci in 0..<inputShape.c {
            let plane = x + ci * H * W
            for ky in 0..<kernel {
                let oyRange = rows.validOutputs(offset: ky)
                for kx in 0..<kernel {
                    let oxRange = cols.validOutputs(offset: kx)
                    let lo = oxRange.lowerBound, hi = oxRange.upperBound, shift = kx - pl
                    for oy in 0..<OH {
                        let out = row + oy * OW
                        if oy < oyRange.lowerBound || oy >= oyRange.upperBound || lo >= hi {
                            for ox in 0..<OW { out[ox] = 0 }
                            continue
                        }
                        let src = plane + (oy * sy - pt + ky) * W
                        for ox in 0..<lo { out[ox] = 0 }
                        if sx == 1 {
                            let s = src + shift
                            for ox in lo..<hi { out[ox] = s[ox] }
                        } else {
                            for ox in lo..<hi { out[ox] = src[ox * sx + shift] }
                        }
                        for ox in hi..<OW { out[ox] = 0 }
                    }
                    row += OH * OW
                }
            }
        }
    }

    /// The adjoint of im2col: dx[ci][iy][ix] = Σ of the column entries that read it.
    func col2im(_ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>) {
        dx.update(repeating: 0, count: inputShape.count)
        if !gatherTable.isEmpty {
            // The same additions in the same order as the loops below.
            gatherTable.withUnsafeBufferPointer { table in
                for j in table.indices { let s = Int(table[j]); if s >= 0 { dx[s] += col[j] } }
            }
            return
        }
        let H = inputShape.h, W = inputShape.w, OH = rows.output, OW = cols.output
        let sy = rows.stride, sx = cols.stride, pt = rows.padBefore, pl = cols.padBefore
        var row = col
        for ci in 0..<inputShape.c {
            let plane = dx + ci * H * W
            for ky in 0..<kernel {
                let oyRange = rows.validOutputs(offset: ky)
                for kx in 0..<kernel {
                    let oxRange = cols.validOutputs(offset: kx)
                    for oy in oyRange {
                        let src = row + oy * OW
                        let dst = plane + (oy * sy - pt + ky) * W
                        if sx == 1 {
                            let off = -pl + kx
                            for ox in oxRange { dst[ox + off] += src[ox] }
                        } else {
                            for ox in oxRange { dst[ox * sx - pl + kx] += src[ox] }
                        }
                    }
                    row += OH * OW
                }
            }
        }
    }
}

extension Conv2D {
    /// The offsets im2col reads, in the order it writes the column matrix (row k = (ci, ky, kx),
    /// then oy, ox), −1 where it writes padding.
    func makeGatherTable() -> [Int32] {
        let H = inputShape.h, W = inputShape.w, OH = rows.output, OW = cols.output
        let sy = rows.stride, sx = cols.stride, pt = rows.padBefore, pl = cols.padBefore
        var table = [Int32](repeating: -1, count: patch * pixels)
        var j = 0
        for ci in 0..<inputShape.c {
            for ky in 0..<kernel {
                for kx in 0..<kernel {
                    for oy in 0..<OH {
                        let iy = oy * sy - pt + ky
                        for ox in 0..<OW {
                            let ix = ox * sx - pl + kx
                            if iy >= 0 && iy < H && ix >= 0 && ix < W { table[j] = Int32((ci * H + iy) * W + ix) }
                            j += 1
                        }
                    }
                }
            }
        }
        return table
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
