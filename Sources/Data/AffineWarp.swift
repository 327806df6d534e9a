#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Coordinates, everywhere in this file: x is the column index (growing to the right), y the
// row index (growing downwards), pixel centres sit on integers, (0, 0) is the centre of the
// top-left pixel. A warp matrix maps an OUTPUT pixel to the INPUT point it samples:
//
//     ⎡x_in⎤   ⎡m00 m01 m02⎤ ⎡x_out⎤
//     ⎢y_in⎥ = ⎢m10 m11 m12⎥ ⎢y_out⎥      (row-major [m00, m01, m02, m10, …, m22])
//     ⎣ 1  ⎦   ⎣ 0   0   1 ⎦ ⎣  1  ⎦
//
// which is what Keras's `apply_affine_transform` hands to `tfa.image.transform` (and, after
// its row/column swap, to `scipy.ndimage.affine_transform`).

/// What a warp reads where the mapped point falls outside the source image.
///
/// `nearest` is Keras's default `fill_mode`: the border pixels extend outwards.
/// `constant(v)` surrounds the image with the value `v` in pixel units (0…255), before any
/// scaling or standardisation; bilinear sampling blends it with the border pixels, as
/// TensorFlow's `ImageProjectiveTransform` (behind Keras's `fill_mode="constant"`) does.
public enum FillMode: Equatable, Sendable {
    case nearest
    case constant(Float)
}

extension FillMode: Codable {
    private enum CodingKeys: String, CodingKey { case mode, value }

    /// `{"mode": "nearest"}` or `{"mode": "constant", "value": 0}`.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        switch try container.decode(String.self, forKey: .mode) {
        case "nearest": self = .nearest
        case "constant": self = .constant(try container.decode(Float.self, forKey: .value))
        case let other:
            throw DecodingError.dataCorruptedError(forKey: .mode, in: container,
                                                   debugDescription: "fill mode '\(other)' is not nearest or constant")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .nearest: try container.encode("nearest", forKey: .mode)
        case .constant(let value):
            try container.encode("constant", forKey: .mode)
            try container.encode(value, forKey: .value)
        }
    }
}

/// The parameters of one Keras-style affine augmentation, and the warp matrix they make.
///
/// Keras's `apply_affine_transform` composes, in output→input direction and about the
/// image centre `c = ((W − 1) / 2, (H − 1) / 2)`:
///
///     M = C · R · T · S · Z · C⁻¹
///
///     R = ⎡cos θ  −sin θ  0⎤   T = ⎡1 0 tx⎤   S = ⎡1  −sin s  0⎤   Z = ⎡zx  0  0⎤
///         ⎢sin θ   cos θ  0⎥       ⎢0 1 ty⎥       ⎢0   cos s  0⎥       ⎢ 0 zy  0⎥
///         ⎣  0       0    1⎦       ⎣0 0  1⎦       ⎣0     0    1⎦       ⎣ 0  0  1⎦
///
/// with `C` the translation by `c`. So an output pixel is zoomed, sheared, shifted and
/// rotated (in that order, about the centre) to find the source point it shows.
///
/// Senses, with rows growing downwards as images are displayed:
/// - A positive `rotationDegrees` turns the content counter-clockwise: +90° is exactly
///   NumPy's `np.rot90(image)` (k = 1), −90° is `np.rot90(image, k=-1)`.
/// - A positive `shearDegrees` tilts vertical lines so that their lower end moves right: a
///   source column at `x = c_x + k` appears at `x = c_x + k + sin(s) · (y − c_y)`; rows are
///   compressed towards the centre by `cos s` (the source row sampled is
///   `c_y + cos(s) · (y − c_y)`), as in Keras.
/// - A positive shift moves the content left (x) or up (y): the output shows the source
///   `tx` pixels to the right.
/// - A zoom factor above 1 shrinks the content (the output samples a larger area).
///
/// The centre is the true pixel-grid centre `(size − 1) / 2`, as in current
/// keras-preprocessing; older Keras releases used `size / 2 + 0.5`, which moves every
/// rotation off-centre by a pixel and is not reproduced. Keras also feeds its height shift
/// (`tx`) into the x slot of `T`; here `shiftX` is along the width and `shiftY` along the
/// height (the same thing for square images and symmetric ranges).
public struct AffineParameters: Equatable, Sendable {
    /// θ in degrees.
    public var rotationDegrees: Double
    /// s in degrees (Keras's `shear_range` is in degrees too).
    public var shearDegrees: Double
    /// tx in pixels, along the columns.
    public var shiftX: Double
    /// ty in pixels, along the rows.
    public var shiftY: Double
    /// zx: scale of the sampled area along the columns (1 = none).
    public var zoomX: Double
    /// zy: scale of the sampled area along the rows (1 = none).
    public var zoomY: Double

    public init(rotationDegrees: Double = 0, shearDegrees: Double = 0, shiftX: Double = 0, shiftY: Double = 0,
                zoomX: Double = 1, zoomY: Double = 1) {
        self.rotationDegrees = rotationDegrees
        self.shearDegrees = shearDegrees
        self.shiftX = shiftX
        self.shiftY = shiftY
        self.zoomX = zoomX
        self.zoomY = zoomY
    }

    public static let identity = AffineParameters()

    /// The 3×3 output→input matrix for an image of `height × width`, row-major (see the
    /// coordinate note at the top of AffineWarp.swift).
    public func matrix(height: Int, width: Int) -> [Double] {
        let m = affine(height: height, width: width)
        return [m.xx, m.xy, m.x0,
                m.yx, m.yy, m.y0,
                0, 0, 1]
    }

    /// `M = C · R · T · S · Z · C⁻¹` as its top two rows.
    func affine(height: Int, width: Int) -> Affine2D {
        let (sinT, cosT) = sinCos(degrees: rotationDegrees)
        let (sinS, cosS) = sinCos(degrees: shearDegrees)
        let cx = Double(width - 1) / 2, cy = Double(height - 1) / 2
        let rotation = Affine2D(xx: cosT, xy: -sinT, x0: 0,
                                yx: sinT, yy: cosT, y0: 0)
        let shift = Affine2D(xx: 1, xy: 0, x0: shiftX,
                             yx: 0, yy: 1, y0: shiftY)
        let shear = Affine2D(xx: 1, xy: -sinS, x0: 0,
                             yx: 0, yy: cosS, y0: 0)
        let zoom = Affine2D(xx: zoomX, xy: 0, x0: 0,
                            yx: 0, yy: zoomY, y0: 0)
        let toCentre = Affine2D(xx: 1, xy: 0, x0: cx, yx: 0, yy: 1, y0: cy)
        let fromCentre = Affine2D(xx: 1, xy: 0, x0: -cx, yx: 0, yy: 1, y0: -cy)
        return toCentre * rotation * shift * shear * zoom * fromCentre
    }
}

/// The top two rows of a 3×3 affine matrix: `x' = xx·x + xy·y + x0`, `y' = yx·x + yy·y + y0`.
struct Affine2D: Equatable, Sendable {
    var xx, xy, x0: Double
    var yx, yy, y0: Double

    static let identity = Affine2D(xx: 1, xy: 0, x0: 0, yx: 0, yy: 1, y0: 0)

    /// Reads a row-major 3×3 affine matrix (bottom row 0 0 1).
    init(rowMajor m: [Double]) {
        precondition(m.count == 9, "a warp matrix has 9 entries (3×3 row-major), not \(m.count)")
        precondition(m[6] == 0 && m[7] == 0 && m[8] == 1, "a warp matrix is affine: its bottom row is 0 0 1")
        precondition(m.allSatisfy { $0.isFinite }, "a warp matrix has finite entries")
        self.init(xx: m[0], xy: m[1], x0: m[2], yx: m[3], yy: m[4], y0: m[5])
    }

    init(xx: Double, xy: Double, x0: Double, yx: Double, yy: Double, y0: Double) {
        self.xx = xx; self.xy = xy; self.x0 = x0
        self.yx = yx; self.yy = yy; self.y0 = y0
    }

    /// The composition: `(a * b)(p) = a(b(p))`.
    static func * (a: Affine2D, b: Affine2D) -> Affine2D {
        Affine2D(xx: a.xx * b.xx + a.xy * b.yx, xy: a.xx * b.xy + a.xy * b.yy, x0: a.xx * b.x0 + a.xy * b.y0 + a.x0,
                 yx: a.yx * b.xx + a.yy * b.yx, yy: a.yx * b.xy + a.yy * b.yy, y0: a.yx * b.x0 + a.yy * b.y0 + a.y0)
    }
}

/// Sine and cosine of an angle in degrees, exact at multiples of 90° (like `sinpi`/`cospi`),
/// so a quarter turn moves pixels onto pixels with no rounding residue.
func sinCos(degrees: Double) -> (sin: Double, cos: Double) {
    let quarters = (degrees / 90).rounded()
    let rest = (degrees - quarters * 90) * (Double.pi / 180)  // in [−π/4, π/4]
    let s = sin(rest), c = cos(rest)
    switch Int(quarters.truncatingRemainder(dividingBy: 4)) {
    case 1, -3: return (c, -s)    // θ + 90°
    case 2, -2: return (-s, -c)   // θ + 180°
    case 3, -1: return (-c, s)    // θ + 270°
    default: return (s, c)
    }
}

/// Exact `floor` for |v| < 2²³ (every in-image coordinate), without a libm call.
@inline(__always)
private func floorSmall(_ v: Float) -> Float {
    let t = Float(Int32(v))
    return t > v ? t - 1 : t
}

/// Bilinear resampling of channel planes through an affine map, plus an optional
/// per-pixel displacement of the output grid (elastic distortion).
///
/// `src` and `out` are (C, H, W) planes. For output pixel `p = (x, y)` the sampled source
/// point is `m(p + d(p))`, with `d(p) = (dx[p], dy[p])` when `displacement` is given.
/// The interpolation is written `a + f·(b − a)`, so integer source points (f = 0) copy the
/// pixel bit for bit.
func warpPlanes(_ src: UnsafePointer<Float>, height: Int, width: Int, channels: Int, affine m: Affine2D,
                displacement: (dx: UnsafePointer<Float>, dy: UnsafePointer<Float>)?, fill: FillMode,
                into out: UnsafeMutablePointer<Float>) {
    let plane = height * width
    let xx = Float(m.xx), yx = Float(m.yx), xy = Float(m.xy), yy = Float(m.yy)
    let lastX = Float(width - 1), lastY = Float(height - 1)
    let sizeX = Float(width), sizeY = Float(height)

    for y in 0..<height {
        // The row's start point in Double, then one multiply-add per pixel in Float.
        let rowX = Float(m.xy * Double(y) + m.x0)
        let rowY = Float(m.yy * Double(y) + m.y0)
        for x in 0..<width {
            let p = y * width + x
            var sx = rowX + xx * Float(x)
            var sy = rowY + yx * Float(x)
            if let d = displacement {
                sx += xx * d.dx[p] + xy * d.dy[p]
                sy += yx * d.dx[p] + yy * d.dy[p]
            }
            switch fill {
            case .nearest:
                // Clamping the point is the same as clamping each neighbour's index.
                sx = min(max(sx, 0), lastX)
                sy = min(max(sy, 0), lastY)
                let x0 = Int(sx), y0 = Int(sy)
                let fx = sx - Float(x0), fy = sy - Float(y0)
                let x1 = min(x0 + 1, width - 1), y1 = min(y0 + 1, height - 1)
                for c in 0..<channels {
                    let s = src + c * plane
                    let top = s[y0 * width + x0] + fx * (s[y0 * width + x1] - s[y0 * width + x0])
                    let bottom = s[y1 * width + x0] + fx * (s[y1 * width + x1] - s[y1 * width + x0])
                    out[c * plane + p] = top + fy * (bottom - top)
                }
            case .constant(let value):
                guard sx > -1 && sx < sizeX && sy > -1 && sy < sizeY else {
                    for c in 0..<channels { out[c * plane + p] = value }
                    continue
                }
                let floorX = floorSmall(sx), floorY = floorSmall(sy)
                let fx = sx - floorX, fy = sy - floorY
                let x0 = Int(floorX), y0 = Int(floorY)
                if x0 >= 0 && x0 < width - 1 && y0 >= 0 && y0 < height - 1 {
                    for c in 0..<channels {
                        let s = src + c * plane + y0 * width + x0
                        let top = s[0] + fx * (s[1] - s[0])
                        let bottom = s[width] + fx * (s[width + 1] - s[width])
                        out[c * plane + p] = top + fy * (bottom - top)
                    }
                } else {
                    // On the border: neighbours outside the image read the fill value.
                    let inX0 = x0 >= 0, inX1 = x0 + 1 <= width - 1
                    let inY0 = y0 >= 0, inY1 = y0 + 1 <= height - 1
                    for c in 0..<channels {
                        let s = src + c * plane
                        let p00 = inY0 && inX0 ? s[y0 * width + x0] : value
                        let p01 = inY0 && inX1 ? s[y0 * width + x0 + 1] : value
                        let p10 = inY1 && inX0 ? s[(y0 + 1) * width + x0] : value
                        let p11 = inY1 && inX1 ? s[(y0 + 1) * width + x0 + 1] : value
                        let top = p00 + fx * (p01 - p00)
                        let bottom = p10 + fx * (p11 - p10)
                        out[c * plane + p] = top + fy * (bottom - top)
                    }
                }
            }
        }
    }
}
