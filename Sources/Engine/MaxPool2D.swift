/// Max pooling with TensorFlow's `same`/`valid` geometry. Forward stores the argmax of each
/// window (index into the input plane), so backward is a scatter.
public final class MaxPool2D: Layer {
    public let inputShape: Shape, outputShape: Shape
    public let size: Int
    let rows: AxisGeometry, cols: AxisGeometry
    public var kind: LayerSpec.Kind { .maxpool2d }
    public var slots: [TensorSlot] { [] }
    /// (N, C, OH, OW) argmax positions within each input plane; -1 for an all-padding window.
    var argmax: [Int32] = []
    var hasTrainingForward = false

    public init(input: Shape, size: Int, stride: Int, padding: Padding) throws {
        guard let r = AxisGeometry(input: input.h, kernel: size, stride: stride, padding: padding),
              let c = AxisGeometry(input: input.w, kernel: size, stride: stride, padding: padding)
        else { throw ModelError.shape("maxpool2d size \(size) stride \(stride) does not fit input \(input)") }
        inputShape = input; self.size = size; rows = r; cols = c
        outputShape = Shape(c: input.c, h: r.output, w: c.output)
    }

    public func reserve(batch: Int) {
        let need = batch * outputShape.count
        if argmax.count < need { argmax = [Int32](repeating: 0, count: need) }
    }

    public func forward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int,
                        context: PassContext) throws {
        let H = inputShape.h, W = inputShape.w, OH = rows.output, OW = cols.output
        // Inference keeps no argmax (nothing will go backward).
        let keep = context.training
        precondition(!keep || argmax.count >= batch * outputShape.count, "MaxPool2D: reserve(batch:) first")
        if !keep && argmax.isEmpty { argmax = [0] }
        let fast = size == 2 && rows.stride == 2 && cols.stride == 2 && rows.padBefore == 0 && cols.padBefore == 0
            && 2 * OH <= H && 2 * OW <= W
        argmax.withUnsafeMutableBufferPointer { arg in
          let base = arg.baseAddress!
          Parallel.chunks(batch * inputShape.c, cost: H * W) { _, planes in
            for plane in planes {
                let xp = x + plane * H * W, yp = y + plane * OH * OW
                let ap: UnsafeMutablePointer<Int32>? = keep ? base + plane * OH * OW : nil
                if fast {
                    // 2×2 windows, stride 2, no padding: the common case, without bounds arithmetic.
                    // Two loops, so that inference neither computes nor stores an argmax (one loop
                    // for both compiled to a masked store through the nil pointer, far slower than
                    // no store; see BENCHMARKS.md). A later element wins only when greater,
                    // in both, so ties and NaNs resolve the same way.
                    for oy in 0..<OH {
                        let r0 = xp + 2 * oy * W, r1 = r0 + W, out = yp + oy * OW
                        if let ap {
                            let arg = ap + oy * OW
                            for ox in 0..<OW {
                                let a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1]
                                var best = a, at = Int32(2 * oy * W + 2 * ox)
                                if b > best { best = b; at = Int32(2 * oy * W + 2 * ox + 1) }
                                if c > best { best = c; at = Int32((2 * oy + 1) * W + 2 * ox) }
                                if d > best { best = d; at = Int32((2 * oy + 1) * W + 2 * ox + 1) }
                                out[ox] = best
                                arg[ox] = at
                            }
                        } else {
                            for ox in 0..<OW {
                                let a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1]
                                var best = a
                                if b > best { best = b }
                                if c > best { best = c }
                                if d > best { best = d }
                                out[ox] = best
                            }
                        }
                    }
                    continue
                }
                for oy in 0..<OH {
                    let y0 = max(oy * rows.stride - rows.padBefore, 0)
                    let y1 = min(oy * rows.stride - rows.padBefore + size, H)
                    for ox in 0..<OW {
                        let x0 = max(ox * cols.stride - cols.padBefore, 0)
                        let x1 = min(ox * cols.stride - cols.padBefore + size, W)
                        var best = -Float.infinity, at: Int32 = -1
                        for iy in y0..<max(y0, y1) {
                            for ix in x0..<max(x0, x1) where xp[iy * W + ix] > best || at < 0 {
                                best = xp[iy * W + ix]; at = Int32(iy * W + ix)
                            }
                        }
                        yp[oy * OW + ox] = at < 0 ? 0 : best
                        ap?[oy * OW + ox] = at
                    }
                }
            }
          }
        }
        if keep { hasTrainingForward = true }
    }

    public func backward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>?, batch: Int, context: PassContext) throws {
        precondition(hasTrainingForward, "MaxPool2D.backward without a forward")
        guard let dx else { return }
        let inPlane = inputShape.spatial, outPlane = outputShape.spatial
        argmax.withUnsafeBufferPointer { arg in
          let base = arg.baseAddress!
          Parallel.chunks(batch * inputShape.c, cost: inPlane) { _, planes in
            for plane in planes {
                let d = dx + plane * inPlane, g = dy + plane * outPlane
                let ap = base + plane * outPlane
                d.update(repeating: 0, count: inPlane)
                for o in 0..<outPlane where ap[o] >= 0 { d[Int(ap[o])] += g[o] }
            }
          }
        }
    }
}
