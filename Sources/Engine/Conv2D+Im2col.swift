/// im2col convolution, for any stride, padding and kernel: each image's receptive fields are
/// copied into a column matrix col (K, P) with K = in·kh·kw and P = oh·ow, so forward is one
/// sgemm per image, y (out, P) = W (out, K) · col (K, P); backward adds dz · colᵀ into dW and
/// scatters Wᵀ · dz back into dx (col2im). A 1×1, stride-1, unpadded layer's column matrix is
/// the image itself.
extension Conv2D {
    /// The im2col path's workspace (the path that runs when the others do not).
    func preparedIm2colSpace() -> Im2colWorkspace {
        guard let space = im2colSpace, space.workers == Parallel.workers else {
            preconditionFailure("Conv2D: reserve(batch:) first")
        }
        return space
    }

    /// `keepsColumns`: a training forward, whose column matrices backward may reuse.
    func im2colForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                       space: Im2colWorkspace, operands: ForwardOperands, keepsColumns: Bool) {
        let need = keptFloats(batch: batch)
        let keeps = keepsColumns && need > 0 && space.kept.count >= need
        space.keptBatch = 0
        Parallel.chunks(batch, cost: forwardFlops) { t, images in
            im2colForward(x, y, images: images, worker: t, space: space, operands: operands, keep: keeps)
        }
        if keeps { space.keptBatch = batch; space.keptInput = x }
    }

    func im2colForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, images: Range<Int>, worker: Int,
                       space: Im2colWorkspace, operands: ForwardOperands, keep: Bool) {
        let inCount = inputShape.count, outCount = outputShape.count
        for n in images {
            let xn = x + n * inCount, yn = y + n * outCount
            let col = keep ? columns(for: xn, into: space.kept.pointer + n * patch * pixels, worker: worker, space: space)
                           : columns(for: xn, worker: worker, space: space)
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

    /// `kept`: the column matrices of these images are in `space.kept` (`Im2colWorkspace.holds`).
    func im2colBackward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                        _ dx: UnsafeMutablePointer<Float>?, images: Range<Int>, worker: Int,
                        dW dWeight: UnsafeMutablePointer<Float>, dB dBias: UnsafeMutablePointer<Float>?,
                        space: Im2colWorkspace, kept: Bool) {
        let inCount = inputShape.count, outCount = outputShape.count
        for n in images {
            let xn = x + n * inCount, dz = dy + n * outCount   // dz: (out, P)
            preactivationGradient(y: y + n * outCount, dz, dBias: dBias)
            // dW (out, K) += dz (out, P) · colᵀ (P, K), with the column matrix forward kept, or rebuilt.
            let col = kept ? UnsafePointer(space.kept.pointer + n * patch * pixels)
                           : columns(for: xn, worker: worker, space: space)
            BLAS.gemm(transB: true, m: filters, n: patch, k: pixels, dz, lda: pixels, col, ldb: pixels,
                      beta: 1, dWeight, ldc: patch)
            guard let dx else { continue }
            let dxn = dx + n * inCount
            if isPointwise {
                BLAS.gemm(transA: true, m: patch, n: pixels, k: filters, weight, lda: patch, dz, ldb: pixels,
                          beta: 0, dxn, ldc: pixels)
            } else {
                // dcol (K, P) = Wᵀ (K, out) · dz (out, P), then scattered back to the image.
                let column = space.columns[worker].pointer
                BLAS.gemm(transA: true, m: patch, n: pixels, k: filters, weight, lda: patch, dz, ldb: pixels,
                          beta: 0, column, ldc: pixels)
                layoutTimed(worker) { col2im(column, dxn, space: space) }
            }
        }
    }

    @inline(__always)
    func columns(for xn: UnsafePointer<Float>, worker: Int, space: Im2colWorkspace) -> UnsafePointer<Float> {
        columns(for: xn, into: space.columns[worker].pointer, worker: worker, space: space)
    }

    /// The column matrix of image `xn`, built in `room` (the image itself for a 1×1 layer).
    func columns(for xn: UnsafePointer<Float>, into room: UnsafeMutablePointer<Float>, worker: Int,
                 space: Im2colWorkspace) -> UnsafePointer<Float> {
        if isPointwise { return xn }
        layoutTimed(worker) { im2col(xn, room, space: space) }
        return UnsafePointer(room)
    }

    /// col[(ci·kh + ky)·kw + kx][oy·ow + ox] = x[ci][oy·s − padTop + ky][ox·s − padLeft + kx], 0 outside.
    /// Rows are short (an image row), so plain loops beat memcpy/memset calls here.
    func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, space: Im2colWorkspace) {
        if !space.gatherTable.isEmpty {
            space.gatherTable.withUnsafeBufferPointer { table in
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
    func col2im(_ col: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, space: Im2colWorkspace) {
        dx.update(repeating: 0, count: inputShape.count)
        if !space.gatherTable.isEmpty {
            // The same additions in the same order as the loops below.
            space.gatherTable.withUnsafeBufferPointer { table in
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

/// Per-worker column matrices of the im2col convolution, its gather table, and the column
/// matrices of a training batch kept for backward.
final class Im2colWorkspace {
    let workers: Int
    let columns: [FloatBuffer]      // per worker: (K, P), one image's column matrix or dcol
    /// (K·P) for each column-matrix entry the input offset it copies, −1 for padding; empty
    /// when im2col/col2im run as row loops (see `Conv2D.gathersByTable`).
    var gatherTable: [Int32] = []
    /// (N, K, P) a training batch's column matrices, kept from forward for the weight gradient
    /// when they fit in the layer's allowance (else backward rebuilds them per image), and the
    /// batch and input of the training forward that filled them.
    var kept = FloatBuffer(count: 0)
    var keptBatch = 0
    var keptInput: UnsafePointer<Float>?

    init(workers: Int, columnFloats: Int) {
        self.workers = workers
        columns = (0..<workers).map { _ in FloatBuffer(count: columnFloats) }
    }

    /// Makes room to keep `floats` (a batch's column matrices), or keeps none when they are
    /// none or over `allowance`.
    func reserveKept(_ floats: Int, allowance: Int) {
        if floats == 0 || floats > allowance {
            kept = FloatBuffer(count: 0)
            keptBatch = 0
        } else if kept.count < floats {
            kept = FloatBuffer(count: floats)
            keptBatch = 0
        }
    }

    /// Whether the last forward was a training forward of these `batch` images from `input`,
    /// whose column matrices are kept.
    func holds(batch: Int, input: UnsafePointer<Float>) -> Bool {
        batch > 0 && keptBatch == batch && keptInput == input
    }
}
