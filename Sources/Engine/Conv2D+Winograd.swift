/// Winograd F(2×2, 3×3) convolution for 3×3, stride-1, `same` layers (Lavin and Gray,
/// "Fast Algorithms for Convolutional Neural Networks", 2016).
///
/// Each 2×2 block of one output channel (a "tile") comes from the 4×4 input block around it:
///     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
/// Summed over input channels this is 16 independent GEMMs, one per position ξ of the
/// transformed 4×4 tile:
///     M[ξ] (out, tiles) = U[ξ] (out, in) · V[ξ] (in, tiles),   U = G g Gᵀ,  V = Bᵀ d B
/// — 16·out·in multiplications per four outputs against 36·out·in for the direct
/// convolution, 2.25× fewer. Backward uses the same pieces:
/// - dX is the same convolution of dZ with the flipped, transposed kernel (a `same` 3×3
///   convolution is its own adjoint up to that flip), so it is the forward code again;
/// - dW is the exact adjoint of the forward in g: dU[ξ] += dM[ξ] · V[ξ]ᵀ with dM = A dZ Aᵀ,
///   then dg = Gᵀ dU G once per call.
/// The tiles of `group` images share one GEMM so its N stays in the hundreds on 14×14
/// layers. The transforms run on eight tiles at a time in SIMD registers, reading
/// zero-padded copies of the planes (`WinogradGeometry`) so no load needs a bounds check.
extension Conv2D {
    /// Whether this layer can run the Winograd path: 3×3, stride 1, `same` (padding 1).
    var fitsWinograd: Bool {
        kernel == 3 && rows.stride == 1 && cols.stride == 1 && rows.padBefore == 1 && cols.padBefore == 1
            && rows.output == rows.input && cols.output == cols.input
    }

    /// The Winograd workspace with the kernels a pass needs transformed (forward: U of
    /// `forwardWeight`, the layer's weights or folded ones; backward with dX: the flipped ones of
    /// the layer's own weights), or nil on the other paths.
    func preparedWinogradSpace(forwardWeight: UnsafePointer<Float>?, flipped: Bool) -> WinogradWorkspace? {
        guard usesWinograd else { return nil }
        guard let space = winogradSpace, space.workers == Parallel.workers else {
            preconditionFailure("Conv2D: reserve(batch:) first")
        }
        if let forwardWeight {
            Winograd.transformKernels(forwardWeight, outputs: filters, inputs: inputShape.c, flipped: false,
                                      into: space.kernels.pointer)
        }
        if flipped {
            Winograd.transformKernels(weight, outputs: filters, inputs: inputShape.c, flipped: true,
                                      into: space.flippedKernels.pointer)
        }
        return space
    }

    func winogradForward(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, images: Range<Int>,
                         worker: Int, space: WinogradWorkspace, operands: ForwardOperands) {
        let cin = inputShape.c, cout = filters
        for start in stride(from: images.lowerBound, to: images.upperBound, by: space.group) {
            let count = min(space.group, images.upperBound - start)
            space.convolve(x + start * inputShape.count, channels: cin, images: count, kernels: space.kernels.pointer,
                           outputs: cout, into: y + start * outputShape.count, bias: operands.bias, worker: worker,
                           timed: { layoutTimed(worker, $0) })
            ActivationFunction.apply(operands.activation, alpha: operands.alpha, y + start * outputShape.count,
                                     count: count * outputShape.count)
        }
    }

    func winogradBackward(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                          _ dx: UnsafeMutablePointer<Float>?, images: Range<Int>, worker: Int,
                          dW: UnsafeMutablePointer<Float>, dB: UnsafeMutablePointer<Float>?, space: WinogradWorkspace) {
        let cin = inputShape.c, cout = filters, g = space.geometry, ld = space.leading, xs = space.xiStride
        let padded = space.padded[worker].pointer, transformed = space.transformed[worker].pointer
        let products = space.products[worker].pointer, dU = space.kernelGradients[worker]
        dU.zero()
        for start in stride(from: images.lowerBound, to: images.upperBound, by: space.group) {
            let count = min(space.group, images.upperBound - start), n = count * g.tiles
            let dz = dy + start * outputShape.count
            for i in 0..<count {
                preactivationGradient(y: y + (start + i) * outputShape.count, dz + i * outputShape.count, dBias: dB)
            }
            // V = Bᵀ x B and dM = A dZ Aᵀ, then dU[ξ] (out, in) += dM[ξ] (out, n) · V[ξ]ᵀ (n, in).
            layoutTimed(worker) {
                space.transformInputs(x + start * inputShape.count, channels: cin, images: count, worker: worker)
                g.fill(padded, from: dz, channels: cout, images: count)
                for i in 0..<count {
                    for c in 0..<cout {
                        Winograd.gradientTransform(padded + (i * cout + c) * g.plane, g,
                                                   into: products + c * ld + i * g.tiles, xiStride: xs)
                    }
                }
            }
            for xi in 0..<16 {
                BLAS.gemm(transB: true, m: cout, n: cin, k: n, products + xi * xs, lda: ld, transformed + xi * xs,
                          ldb: ld, beta: 1, dU.pointer + xi * cout * cin, ldc: cin)
            }
            guard let dx else { continue }
            // dX: the same convolution of dZ (still in the padded planes) with the flipped kernel.
            space.convolvePadded(channels: cout, images: count, kernels: space.flippedKernels.pointer, outputs: cin,
                                 into: dx + start * inputShape.count, bias: nil, worker: worker,
                                 timed: { layoutTimed(worker, $0) })
        }
        Winograd.accumulateKernelGradient(dU.pointer, outputs: cout, inputs: cin, into: dW)
    }
}

/// The tile grid of one plane and the zero-padded copy the transforms read.
struct WinogradGeometry {
    /// Image (= output) size.
    let height: Int, width: Int
    let tilesHigh: Int, tilesWide: Int
    /// Floats per row of a padded plane: the image sits at (1, 1); the rest is zero, wide
    /// enough for the 16-float loads of the last group of eight tiles.
    let rowStride: Int
    /// Floats per padded plane.
    let plane: Int
    var tiles: Int { tilesHigh * tilesWide }

    init(height: Int, width: Int) {
        self.height = height; self.width = width
        tilesHigh = (height + 1) / 2; tilesWide = (width + 1) / 2
        // The input transform's loads reach column 2·tx0 + 17 for tx0 = 8·(chunks − 1).
        rowStride = 16 * ((tilesWide + 7) / 8) + 2
        plane = ((2 * tilesHigh + 2) * rowStride + 15) / 16 * 16
    }

    /// Copies `images` × `channels` planes (NCHW) into the padded planes at (1, 1).
    func fill(_ padded: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, channels: Int, images: Int) {
        copyIntoPaddedPlanes(src, planes: images * channels, height: height, width: width,
                             into: padded + rowStride + 1, planeStride: plane, rowStride: rowStride)
    }
}

/// Per-worker buffers of the Winograd convolution and the transformed kernels.
final class WinogradWorkspace {
    let workers: Int
    let geometry: WinogradGeometry
    /// Images whose tiles share one GEMM.
    let group: Int
    /// Row length of a transformed channel: a group's tiles plus slack for the eight-tile
    /// stores of the last group of tiles.
    let leading: Int
    /// Floats from one ξ to the next in `transformed` / `products`: (max(in, out), leading).
    let xiStride: Int
    let padded: [FloatBuffer]          // (group · max(in, out), plane)
    let transformed: [FloatBuffer]     // (16, max(in, out), leading): V of x or of dZ
    let products: [FloatBuffer]        // (16, max(in, out), leading): M, or dM in backward
    let kernelGradients: [FloatBuffer] // (16, out, in): dU summed over a worker's images
    let kernels: FloatBuffer           // (16, out, in): U
    let flippedKernels: FloatBuffer    // (16, in, out): U of the flipped, transposed kernel

    /// Tiles per GEMM the group size aims at: enough columns for OpenBLAS's kernels to run
    /// near their peak, few enough that a group's V and M stay near the core (256, 512 and
    /// 1,024 measured on `ref`: 512 was fastest).
    static let targetTiles = 512

    /// The geometry, group size and `leading` of a layer's workspace.
    static func sizes(_ conv: Conv2D) -> (geometry: WinogradGeometry, group: Int, leading: Int) {
        let g = WinogradGeometry(height: conv.inputShape.h, width: conv.inputShape.w)
        let group = max(1, targetTiles / g.tiles)
        return (g, group, (group * g.tiles + 7) / 8 * 8 + 8)
    }

    init(_ conv: Conv2D, workers: Int) {
        self.workers = workers
        let cin = conv.inputShape.c, cout = conv.filters, wide = max(cin, cout)
        let (g, group, leading) = WinogradWorkspace.sizes(conv)
        geometry = g; self.group = group; self.leading = leading
        xiStride = wide * leading
        padded = (0..<workers).map { _ in FloatBuffer(count: group * wide * g.plane) }
        transformed = (0..<workers).map { _ in FloatBuffer(count: 16 * wide * leading) }
        products = (0..<workers).map { _ in FloatBuffer(count: 16 * wide * leading) }
        kernelGradients = (0..<workers).map { _ in FloatBuffer(count: 16 * cout * cin) }
        kernels = FloatBuffer(count: 16 * cout * cin)
        flippedKernels = FloatBuffer(count: 16 * cout * cin)
    }

    /// Floats a forward pass needs beside its input and output on one worker: the padded
    /// planes and transformed tiles of a group, and the transformed kernels.
    static func inferenceFloats(_ conv: Conv2D) -> Int {
        let (g, group, leading) = sizes(conv), wide = max(conv.inputShape.c, conv.filters)
        return group * wide * g.plane + 2 * 16 * wide * leading + 16 * conv.inputShape.c * conv.filters
    }

    /// Copies `images` images into the padded planes and writes their V = Bᵀ d B into
    /// `transformed`.
    func transformInputs(_ x: UnsafePointer<Float>, channels: Int, images: Int, worker: Int) {
        geometry.fill(padded[worker].pointer, from: x, channels: channels, images: images)
        transformPadded(channels: channels, images: images, worker: worker)
    }

    /// V of the planes already in `padded`.
    func transformPadded(channels: Int, images: Int, worker: Int) {
        let g = geometry, padded = padded[worker].pointer, v = transformed[worker].pointer
        for i in 0..<images {
            for c in 0..<channels {
                Winograd.inputTransform(padded + (i * channels + c) * g.plane, g,
                                        into: v + c * leading + i * g.tiles, xiStride: xiStride)
            }
        }
    }

    /// out (images, outputs, h, w) = the 3×3 `same` convolution of x (images, channels, h, w)
    /// with the transformed `kernels` (16, outputs, channels), plus `bias`.
    func convolve(_ x: UnsafePointer<Float>, channels: Int, images: Int, kernels: UnsafePointer<Float>,
                  outputs: Int, into out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                  worker: Int, timed: (() -> Void) -> Void) {
        timed { geometry.fill(padded[worker].pointer, from: x, channels: channels, images: images) }
        convolvePadded(channels: channels, images: images, kernels: kernels, outputs: outputs, into: out,
                       bias: bias, worker: worker, timed: timed)
    }

    /// `convolve` of the planes already in `padded`.
    func convolvePadded(channels: Int, images: Int, kernels: UnsafePointer<Float>, outputs: Int,
                        into out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?,
                        worker: Int, timed: (() -> Void) -> Void) {
        let g = geometry, v = transformed[worker].pointer, m = products[worker].pointer
        timed { transformPadded(channels: channels, images: images, worker: worker) }
        for xi in 0..<16 {
            BLAS.gemm(m: outputs, n: images * g.tiles, k: channels, kernels + xi * outputs * channels, lda: channels,
                      v + xi * xiStride, ldb: leading, beta: 0, m + xi * xiStride, ldc: leading)
        }
        let end = out + images * outputs * g.height * g.width
        timed {
            for i in 0..<images {
                for c in 0..<outputs {
                    Winograd.outputTransform(m + c * leading + i * g.tiles, xiStride: xiStride, g,
                                             into: out + (i * outputs + c) * g.height * g.width, bias: bias?[c] ?? 0,
                                             end: end)
                }
            }
        }
    }
}

/// The F(2×2, 3×3) transforms. ξ = 4·row + column of the 4×4 transformed tile.
enum Winograd {
    typealias F8 = SIMD8<Float>
    typealias Quad = (F8, F8, F8, F8)

    @inline(__always) static func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
    }
    @inline(__always) static func load8(_ p: UnsafePointer<Float>) -> F8 {
        UnsafeRawPointer(p).loadUnaligned(as: F8.self)
    }
    /// Stores the four vectors of one transformed row at ξ = base … base + 3.
    @inline(__always) static func store(_ q: Quad, _ p: UnsafeMutablePointer<Float>, xi base: Int, xiStride: Int) {
        let raw = UnsafeMutableRawPointer(p)
        raw.storeBytes(of: q.0, toByteOffset: 4 * base * xiStride, as: F8.self)
        raw.storeBytes(of: q.1, toByteOffset: 4 * (base + 1) * xiStride, as: F8.self)
        raw.storeBytes(of: q.2, toByteOffset: 4 * (base + 2) * xiStride, as: F8.self)
        raw.storeBytes(of: q.3, toByteOffset: 4 * (base + 3) * xiStride, as: F8.self)
    }
    @inline(__always) static func add(_ a: Quad, _ b: Quad) -> Quad { (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3) }
    @inline(__always) static func sub(_ a: Quad, _ b: Quad) -> Quad { (a.0 - b.0, a.1 - b.1, a.2 - b.2, a.3 - b.3) }

    /// d B for one row of eight tiles: d0 − d2, d1 + d2, d2 − d1, d1 − d3, where dj is column
    /// 2·tx + j of the row.
    @inline(__always) static func rowTransform(_ p: UnsafePointer<Float>) -> Quad {
        let a = load16(p), b = load16(p + 2)
        let d0 = a.evenHalf, d1 = a.oddHalf, d2 = b.evenHalf, d3 = b.oddHalf
        return (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    }

    /// V = Bᵀ d B for every tile of one padded plane; tile t's ξ lands at v[ξ·xiStride + t].
    /// Writes up to seven floats past the plane's last tile (the caller leaves room).
    static func inputTransform(_ plane: UnsafePointer<Float>, _ g: WinogradGeometry,
                               into v: UnsafeMutablePointer<Float>, xiStride: Int) {
        let s = g.rowStride
        for ty in 0..<g.tilesHigh {
            for tx0 in stride(from: 0, to: g.tilesWide, by: 8) {
                let p = plane + 2 * ty * s + 2 * tx0
                let h0 = rowTransform(p), h1 = rowTransform(p + s), h2 = rowTransform(p + 2 * s),
                    h3 = rowTransform(p + 3 * s)
                let out = v + ty * g.tilesWide + tx0
                store(sub(h0, h2), out, xi: 0, xiStride: xiStride)
                store(add(h1, h2), out, xi: 4, xiStride: xiStride)
                store(sub(h2, h1), out, xi: 8, xiStride: xiStride)
                store(sub(h1, h3), out, xi: 12, xiStride: xiStride)
            }
        }
    }

    /// dM = A dZ Aᵀ for every 2×2 tile of one padded plane of dZ (the adjoint of
    /// `outputTransform`), laid out as `inputTransform` lays out V.
    static func gradientTransform(_ plane: UnsafePointer<Float>, _ g: WinogradGeometry,
                                  into v: UnsafeMutablePointer<Float>, xiStride: Int) {
        let s = g.rowStride
        for ty in 0..<g.tilesHigh {
            for tx0 in stride(from: 0, to: g.tilesWide, by: 8) {
                let p = plane + (1 + 2 * ty) * s + 1 + 2 * tx0
                let a = load16(p), b = load16(p + s)
                let z00 = a.evenHalf, z01 = a.oddHalf, z10 = b.evenHalf, z11 = b.oddHalf
                let q0: Quad = (z00, z00 + z01, z00 - z01, -z01)
                let q1: Quad = (z10, z10 + z11, z10 - z11, -z11)
                let out = v + ty * g.tilesWide + tx0
                store(q0, out, xi: 0, xiStride: xiStride)
                store(add(q0, q1), out, xi: 4, xiStride: xiStride)
                store(sub(q0, q1), out, xi: 8, xiStride: xiStride)
                store((-q1.0, -q1.1, -q1.2, -q1.3), out, xi: 12, xiStride: xiStride)
            }
        }
    }

    /// Y = Aᵀ M A (+ bias) for every tile of one output plane (height × width), M read as
    /// `inputTransform` writes V.
    ///
    /// Eight tiles' outputs go to a row as one 16-float store even where the row is shorter:
    /// what spills over lands in the following rows, which later stores overwrite (the groups
    /// of tiles run right to left, each row pair top to bottom, planes in memory order).
    /// Only a store that would pass `end`, the end of the memory the caller owns and writes
    /// in this order, goes float by float.
    static func outputTransform(_ m: UnsafePointer<Float>, xiStride: Int, _ g: WinogradGeometry,
                                into y: UnsafeMutablePointer<Float>, bias: Float, end: UnsafeMutablePointer<Float>) {
        let w = g.width, b = F8(repeating: bias), lastRow = g.height - 1
        @inline(__always) func write(_ even: F8, _ odd: F8, row r: Int, tile tx0: Int) {
            let out = y + r * w + 2 * tx0
            if out + 16 <= end {
                var pair = SIMD16<Float>()
                pair.evenHalf = even; pair.oddHalf = odd
                UnsafeMutableRawPointer(out).storeBytes(of: pair, as: SIMD16<Float>.self)
                return
            }
            for l in 0..<min(8, g.tilesWide - tx0) {
                out[2 * l] = even[l]
                if 2 * (tx0 + l) + 1 < w { out[2 * l + 1] = odd[l] }
            }
        }
        for ty in 0..<g.tilesHigh {
            for tx0 in stride(from: (g.tilesWide - 1) / 8 * 8, through: 0, by: -8) {
                let p = m + ty * g.tilesWide + tx0
                @inline(__always) func row(_ i: Int) -> (F8, F8) {
                    let m0 = load8(p + 4 * i * xiStride), m1 = load8(p + (4 * i + 1) * xiStride),
                        m2 = load8(p + (4 * i + 2) * xiStride), m3 = load8(p + (4 * i + 3) * xiStride)
                    return (m0 + m1 + m2, m1 - m2 - m3)
                }
                let r0 = row(0), r1 = row(1), r2 = row(2), r3 = row(3)
                write(r0.0 + r1.0 + r2.0 + b, r0.1 + r1.1 + r2.1 + b, row: 2 * ty, tile: tx0)
                if 2 * ty + 1 <= lastRow {
                    write(r1.0 - r2.0 - r3.0 + b, r1.1 - r2.1 - r3.1 + b, row: 2 * ty + 1, tile: tx0)
                }
            }
        }
    }

    /// U = G g Gᵀ of every 3×3 kernel of w (outputs, inputs, 3, 3), at u[ξ][o][i]; with
    /// `flipped`, of the kernel rotated by 180° and transposed, at u[ξ][i][o] (dX's kernel).
    static func transformKernels(_ w: UnsafePointer<Float>, outputs: Int, inputs: Int, flipped: Bool,
                                 into u: UnsafeMutablePointer<Float>) {
        let plane = outputs * inputs
        for o in 0..<outputs {
            for i in 0..<inputs {
                let k = w + (o * inputs + i) * 9
                // Column c of G g over its four rows: g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2.
                @inline(__always) func column(_ c: Int) -> SIMD4<Float> {
                    let g0 = flipped ? k[8 - c] : k[c], g1 = flipped ? k[5 - c] : k[3 + c],
                        g2 = flipped ? k[2 - c] : k[6 + c]
                    return SIMD4(g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2)
                }
                // (G g) Gᵀ, its four columns at once over the four rows.
                let t0 = column(0), t1 = column(1), t2 = column(2)
                let u1 = 0.5 * (t0 + t1 + t2), u2 = 0.5 * (t0 - t1 + t2)
                let at = flipped ? i * outputs + o : o * inputs + i
                for r in 0..<4 {
                    u[(4 * r) * plane + at] = t0[r]
                    u[(4 * r + 1) * plane + at] = u1[r]
                    u[(4 * r + 2) * plane + at] = u2[r]
                    u[(4 * r + 3) * plane + at] = t2[r]
                }
            }
        }
    }

    /// dW (outputs, inputs, 3, 3) += Gᵀ dU G for dU at du[ξ][o][i].
    static func accumulateKernelGradient(_ du: UnsafePointer<Float>, outputs: Int, inputs: Int,
                                         into dW: UnsafeMutablePointer<Float>) {
        let plane = outputs * inputs
        for at in 0..<plane {
            // Column j of dU over its four rows.
            @inline(__always) func column(_ j: Int) -> SIMD4<Float> {
                SIMD4(du[j * plane + at], du[(4 + j) * plane + at], du[(8 + j) * plane + at], du[(12 + j) * plane + at])
            }
            let d0 = column(0), d1 = column(1), d2 = column(2), d3 = column(3)
            // s = dU G, by columns; then dW[·][c] += Gᵀ s[·][c].
            let s0 = d0 + 0.5 * (d1 + d2), s1 = 0.5 * (d1 - d2), s2 = 0.5 * (d1 + d2) + d3
            let out = dW + at * 9
            @inline(__always) func add(_ s: SIMD4<Float>, column c: Int) {
                out[c] += s[0] + 0.5 * (s[1] + s[2])
                out[3 + c] += 0.5 * (s[1] - s[2])
                out[6 + c] += 0.5 * (s[1] + s[2]) + s[3]
            }
            add(s0, column: 0); add(s1, column: 1); add(s2, column: 2)
        }
    }
}
