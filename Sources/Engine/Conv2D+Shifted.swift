/// Stride-1 `same` convolution without a column matrix.
///
/// The image is copied into a zero-padded plane per channel, (H+k−1) × Wp with Wp = W+k−1.
/// On that grid the output pixel (oy, ox) reads the input at (oy+ky)·Wp + (ox+kx), so for
/// each kernel tap (ky, kx) the whole output is one sgemm over a shifted view:
///     Y (out, H·Wp) += W[ky,kx] (out, in) · Xpad[·, ky·Wp+kx …] (in, H·Wp)
/// The Wp − W extra columns per row are computed and dropped. Backward does the same with
/// dZ padded the other way round (a full correlation with the flipped kernel) for dX, and
/// with the padded dZ and X views for dW. Against im2col this writes no K×P matrix and no
/// col2im scatter, so the layer's time goes to sgemms rather than to moving data (the rates
/// measured are in BENCHMARKS.md, "Measurements once quoted in code comments").
extension Conv2D {
    /// Whether this layer can run the shifted path: stride 1, `same`, a kernel above 1×1.
    var fitsShifted: Bool {
        rows.stride == 1 && cols.stride == 1 && kernel > 1 && rows.output == rows.input && cols.output == cols.input
    }

    /// The shifted path's workspace with `weight` (the layer's own, or folded ones in inference)
    /// regrouped by tap, or nil on the im2col path.
    func preparedShiftedSpace(weight: UnsafePointer<Float>) -> ShiftedWorkspace? {
        guard usesShifted else { return nil }
        guard let space = shiftedSpace, space.workers == Parallel.workers else {
            preconditionFailure("Conv2D: reserve(batch:) first")
        }
        space.packWeights(weight)
        return space
    }

    func shiftedForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, images: Range<Int>,
                        worker: Int, space: ShiftedWorkspace, operands: Conv2D.ForwardOperands) {
        let g = space.geometry, cin = inputShape.c, cout = filters
        let xpad = space.inputs[worker].pointer, grid = space.grids[worker].pointer
        let taps = kernel * kernel, gridCount = g.height * g.width
        for n in images {
            let yn = y + n * outputShape.count
            layoutTimed(worker) {
                g.fill(xpad, from: x + n * inputShape.count, channels: cin, top: rows.padBefore, left: cols.padBefore)
            }
            for t in 0..<taps {
                BLAS.gemm(m: cout, n: gridCount, k: cin, space.packedWeight.pointer + t * cout * cin, lda: cin,
                          xpad + (t / kernel) * g.width + t % kernel, ldb: g.plane,
                          beta: t == 0 ? 0 : 1, grid, ldc: gridCount)
            }
            layoutTimed(worker) { g.crop(grid, to: yn, channels: cout, bias: operands.bias) }
            ActivationFunction.apply(operands.activation, alpha: operands.alpha, yn, count: outputShape.count)
        }
    }

    func shiftedBackward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, images: Range<Int>, worker: Int,
                         dW: UnsafeMutablePointer<Float>, dB: UnsafeMutablePointer<Float>?, space: ShiftedWorkspace) {
        let g = space.geometry, cin = inputShape.c, cout = filters
        let xpad = space.inputs[worker].pointer, dzpad = space.outputGradients[worker].pointer
        let grid = space.grids[worker].pointer, tapGradients = space.tapGradients[worker]
        let taps = kernel * kernel, gridCount = g.height * g.width
        // dZ is padded so that dX is a correlation with the flipped kernel: top/left k−1−pad.
        let top = kernel - 1 - rows.padBefore, left = kernel - 1 - cols.padBefore
        tapGradients.zero()
        let dWtaps = tapGradients.pointer
        for n in images {
            let dz = dy + n * outputShape.count
            preactivationGradient(y: y + n * outputShape.count, dz, dBias: dB)
            layoutTimed(worker) {
                g.fill(dzpad, from: dz, channels: cout, top: top, left: left)
                g.fill(xpad, from: x + n * inputShape.count, channels: cin, top: rows.padBefore, left: cols.padBefore)
            }
            // dW[tap] (out, in) += dZ (out, H·Wp) · Xpad[tap view]ᵀ; dZ's extra columns read padding zeros.
            let dzGrid = dzpad + top * g.width + left
            for t in 0..<taps {
                BLAS.gemm(transB: true, m: cout, n: cin, k: gridCount, dzGrid, lda: g.plane,
                          xpad + (t / kernel) * g.width + t % kernel, ldb: g.plane,
                          beta: 1, dWtaps + t * cout * cin, ldc: cin)
            }
            guard let dx else { continue }
            // dX (in, H·Wp) = Σ_tap W[tap]ᵀ (in, out) · dZpad[flipped tap view] (out, H·Wp)
            for t in 0..<taps {
                let ky = kernel - 1 - t / kernel, kx = kernel - 1 - t % kernel
                BLAS.gemm(transA: true, m: cin, n: gridCount, k: cout, space.packedWeight.pointer + t * cout * cin,
                          lda: cin, dzpad + ky * g.width + kx, ldb: g.plane,
                          beta: t == 0 ? 0 : 1, grid, ldc: gridCount)
            }
            layoutTimed(worker) { g.crop(grid, to: dx + n * inputShape.count, channels: cin, bias: nil) }
        }
        // Back to PyTorch's (out, in, kh, kw) order.
        for co in 0..<cout {
            for ci in 0..<cin {
                let dst = dW + (co * cin + ci) * taps
                for t in 0..<taps { dst[t] += dWtaps[(t * cout + co) * cin + ci] }
            }
        }
    }
}

/// The padded grid of the shifted convolution: `height` rows of the output/dX grid, planes
/// of (height + k − 1) × `width` floats plus k − 1 of slack, one per channel.
struct ShiftedGeometry {
    let height: Int, width: Int, imageWidth: Int
    /// Floats per channel plane: the padded grid, the slack the last tap's view reaches,
    /// rounded up to a cache line.
    let plane: Int

    init(height: Int, width: Int, kernel: Int) {
        self.height = height; self.imageWidth = width
        self.width = width + kernel - 1
        plane = ((height + kernel - 1) * self.width + kernel - 1 + 15) / 16 * 16
    }

    /// Copies an (channels, height, imageWidth) tensor into the padded planes at (top, left);
    /// the rest of each plane stays zero from allocation.
    @inline(__always)
    func fill(_ padded: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, channels: Int, top: Int, left: Int) {
        copyIntoPaddedPlanes(src, planes: channels, height: height, width: imageWidth,
                             into: padded + top * width + left, planeStride: plane, rowStride: width)
    }

    /// Copies the valid columns of a (channels, height, width) grid out, adding a bias per channel.
    @inline(__always)
    func crop(_ grid: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, channels: Int,
              bias: UnsafePointer<Float>?) {
        for c in 0..<channels {
            let b = bias?[c] ?? 0, g = grid + c * height * width, d = dst + c * height * imageWidth
            for r in 0..<height {
                let gr = g + r * width, dr = d + r * imageWidth
                for i in 0..<imageWidth { dr[i] = gr[i] + b }
            }
        }
    }
}

/// Per-worker buffers of the shifted convolution, and the weights regrouped by tap.
final class ShiftedWorkspace {
    let workers: Int
    let geometry: ShiftedGeometry
    let inputs: [FloatBuffer]            // (in, plane): zero-padded image
    let outputGradients: [FloatBuffer]   // (out, plane): zero-padded dZ
    let grids: [FloatBuffer]             // (max(in, out), height·width): output or dX grid
    let tapGradients: [FloatBuffer]      // (taps, out, in): dW by tap, summed over a chunk
    let packedWeight: FloatBuffer        // (taps, out, in)
    let cin: Int, cout: Int, taps: Int

    init(_ conv: Conv2D, workers: Int) {
        self.workers = workers
        let cin = conv.inputShape.c, cout = conv.filters, taps = conv.kernel * conv.kernel
        let g = ShiftedGeometry(height: conv.inputShape.h, width: conv.inputShape.w, kernel: conv.kernel)
        self.cin = cin; self.cout = cout; self.taps = taps; geometry = g
        inputs = (0..<workers).map { _ in FloatBuffer(count: cin * g.plane) }
        outputGradients = (0..<workers).map { _ in FloatBuffer(count: cout * g.plane) }
        grids = (0..<workers).map { _ in FloatBuffer(count: max(cin, cout) * g.height * g.width) }
        tapGradients = (0..<workers).map { _ in FloatBuffer(count: taps * cout * cin) }
        packedWeight = FloatBuffer(count: taps * cout * cin)
    }

    /// packed[tap][out][in] = weight[out][in][tap].
    func packWeights(_ weight: UnsafePointer<Float>) {
        let p = packedWeight.pointer
        for co in 0..<cout {
            for ci in 0..<cin {
                let src = weight + (co * cin + ci) * taps
                for t in 0..<taps { p[(t * cout + co) * cin + ci] = src[t] }
            }
        }
    }
}

/// Copies `planes` planes of height × width floats (contiguous, as NCHW) into planes
/// `planeStride` floats apart whose rows are `rowStride` floats apart, starting at `dst` —
/// the zero-padded copies both the shifted and the Winograd convolutions read. Rows are
/// short (an image row): a plain loop rather than a memcpy call per row, as in im2col.
@inline(__always)
func copyIntoPaddedPlanes(_ src: UnsafePointer<Float>, planes: Int, height: Int, width: Int,
                          into dst: UnsafeMutablePointer<Float>, planeStride: Int, rowStride: Int) {
    for p in 0..<planes {
        let d = dst + p * planeStride, s = src + p * height * width
        for r in 0..<height {
            let dr = d + r * rowStride, sr = s + r * width
            for i in 0..<width { dr[i] = sr[i] }
        }
    }
}
