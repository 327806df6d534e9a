/// A digit ready for an MNIST model, and what made its preparation doubtful.
public struct PreparedDigit: Equatable, Sendable {
    /// (side, side) bytes, row-major: light strokes on black, as MNIST's images.
    public var pixels: [UInt8]
    /// Why the picture may not have been read as one clear digit, one sentence each; empty
    /// when nothing looked wrong.
    public var doubts: [String]
    /// Share of the digit's bounding box that is ink (its strokes' pixels).
    public var inkFraction: Double
    /// Share of all the ink on the page that the digit kept (the rest was taken for specks,
    /// marks or other things).
    public var keptShare: Double
}

/// Turns a photo or scan of one digit into what MNIST's images look like, robust to uneven
/// light, sensor noise and specks:
///
/// 1. gray in 0...1 as "ink", inverted when the page (the border's median) is light; a picture
///    larger than `workingSide` is area-averaged down to it first;
/// 2. the background (paper and its lighting) is estimated by a morphological opening of the
///    ink with a window half the picture's shorter side (wider than any stroke, so strokes
///    vanish from it and a linear light gradient is followed exactly) and subtracted;
/// 3. Otsu's threshold separates ink from paper; the largest 8-connected ink component is the
///    digit, together with any component at least 8% of its size close above, below or
///    across it (a stroke the pen or the threshold broke off, as the bar of a 5);
/// 4. MNIST's placement: the digit's bounding box scaled so its longer side is `box` pixels
///    (anti-aliased, aspect ratio kept), its centre of mass at the centre of `side × side`.
public enum DigitPreparation {
    /// Pictures with a longer side above this are area-averaged down to it before anything
    /// else: the digit ends up 20 pixels tall, so nothing is lost, and the work stays bounded.
    static let workingSide = 400
    /// Pixels above this share of the stroke level make the bounding box: a faint
    /// anti-aliased fringe left out of the box keeps blurred digits from coming out too small.
    static let boxThreshold: Float = 0.3
    /// A component at least this share of the largest one, near it, is part of the digit.
    static let partShare = 0.08
    /// Below this share of the page's ink kept, the page holds more than the digit.
    static let keptShareFloor = 0.7
    /// Plausible share of ink in a digit's bounding box (unless it is narrow, as a 1 that
    /// may fill its box). Of MNIST's first 2,000 test digits, 0.3% are above 0.8, none
    /// below 0.18 (`DigitPreparationTests` holds them to it).
    static let inkFractionRange = 0.08...0.8
    /// Fewer ink pixels than this (at the working size) are too few to be a legible digit.
    static let minimumDigitPixels = 30

    /// The picture prepared as an MNIST digit; throws `ImageError.blank` when it has no ink.
    public static func prepare(_ image: GrayImage, source: String, side: Int = 28, box: Int = 20) throws -> PreparedDigit {
        precondition(box >= 1 && box <= side, "box must be 1...side")
        var (ink, w, h) = inkPlane(image)  // ink: (h, w)
        let longer = max(w, h)
        if longer > workingSide {
            let nw = max(1, w * workingSide / longer), nh = max(1, h * workingSide / longer)
            ink = ImageFiles.resample(ink, width: w, height: h, toWidth: nw, toHeight: nh)
            (w, h) = (nw, nh)
        }
        guard let lo = ink.min(), let hi = ink.max(), hi - lo > 1 / 32 else { throw ImageError.blank(path: source) }

        // Background: the opening of a lightly smoothed copy (smoothing keeps the opening's
        // minimum from following the noise down).
        let smooth = boxBlur(ink, width: w, height: h, radius: max(1, longer / 140))
        let window = max(3, min(w, h) / 2) | 1  // odd: the opening's square is symmetric
        let background = opening(smooth, width: w, height: h, window: window)  // (h, w)
        var contrast = [Float](repeating: 0, count: w * h)  // (h, w) ink above the background, smoothed
        for i in contrast.indices { contrast[i] = max(0, smooth[i] - background[i]) }
        guard let top = contrast.max(), top > 1 / 32 else { throw ImageError.blank(path: source) }
        let threshold = otsu(contrast, top: top)

        let (labels, components) = inkComponents(contrast, width: w, height: h, threshold: threshold)
        guard let largest = components.indices.max(by: { components[$0].size < components[$1].size }) else {
            throw ImageError.blank(path: source)
        }
        let main = components[largest]
        // A part lies within a quarter of the digit's size of it, above, below or across it:
        // at least half of its width within the digit's columns (a neighbouring digit, as in
        // "42", stands beside it).
        let reach = max(main.x1 - main.x0, main.y1 - main.y0) / 4 + 1
        var kept = Set([largest])
        for (i, c) in components.enumerated() where Double(c.size) >= partShare * Double(main.size) {
            let near = c.y1 >= main.y0 - reach && c.y0 <= main.y1 + reach
            let sharedColumns = min(main.x1, c.x1) - max(main.x0, c.x0) + 1
            if near && 2 * sharedColumns >= c.x1 - c.x0 + 1 { kept.insert(i) }
        }

        // Stroke levels from the unsmoothed ink: 0 at the paper's residue (the median left
        // after subtraction outside the ink), 1 at the strokes' median (the 90th
        // percentile, softer, read fewer photos right); kept components and a one-pixel
        // fringe around them only.
        var inside: [Float] = [], outside: [Float] = []
        var inDigit = [Bool](repeating: false, count: w * h)
        for i in labels.indices {
            if labels[i] >= 0 && kept.contains(Int(labels[i])) { inDigit[i] = true } else if labels[i] < 0 { outside.append(contrast[i]) }
        }
        for i in inDigit.indices where inDigit[i] { inside.append(max(0, ink[i] - background[i])) }
        let floor = quantile(outside, 0.5), stroke = max(quantile(inside, 0.5), floor + 1 / 64)
        let fringe = dilate(inDigit, width: w, height: h)
        var level = [Float](repeating: 0, count: w * h)  // (h, w) 0...1
        for i in level.indices where fringe[i] {
            level[i] = min(1, max(0, (ink[i] - background[i] - floor) / (stroke - floor)))
        }

        // The box: pixels clearly in the stroke (the fringe and faint rims left out).
        var bx0 = w, bx1 = -1, by0 = h, by1 = -1, strokePixels = 0
        for y in 0..<h {
            for x in 0..<w where level[y * w + x] > boxThreshold {
                strokePixels += 1
                bx0 = min(bx0, x); bx1 = max(bx1, x); by0 = min(by0, y); by1 = max(by1, y)
            }
        }
        guard bx1 >= 0 else { throw ImageError.blank(path: source) }
        // A picture no larger than the model's input is taken as already cropped (1% of
        // MNIST's own digits touch its edge).
        let touchesEdge = max(w, h) > side && (bx0 == 0 || by0 == 0 || bx1 == w - 1 || by1 == h - 1)
        let cw = bx1 - bx0 + 1, ch = by1 - by0 + 1
        var crop = [Float](repeating: 0, count: cw * ch)  // (ch, cw)
        for y in 0..<ch { for x in 0..<cw { crop[y * cw + x] = level[(by0 + y) * w + bx0 + x] } }
        guard let pixels = place(crop, width: cw, height: ch, side: side, box: box) else { throw ImageError.blank(path: source) }

        let allInk = components.reduce(0) { $0 + $1.size }
        let digitPixels = inDigit.reduce(0) { $0 + ($1 ? 1 : 0) }
        let keptShare = Double(digitPixels) / Double(max(1, allInk))
        let inkFraction = Double(strokePixels) / Double(cw * ch)
        var doubts: [String] = []
        if strokePixels < minimumDigitPixels {
            doubts.append("the digit is only \(strokePixels) pixels of ink: too small or faint to read reliably")
        }
        if keptShare < keptShareFloor {
            doubts.append("the digit holds only \(percent(keptShare)) of the ink on the page: is there more than one digit, or other marks?")
        }
        if inkFraction > inkFractionRange.upperBound && 3 * cw >= ch {   // a narrow 1 may fill its box
            doubts.append("\(percent(inkFraction)) of the digit's box is ink: a blot or a shadow rather than pen strokes?")
        } else if inkFraction < inkFractionRange.lowerBound {
            doubts.append("only \(percent(inkFraction)) of the digit's box is ink: strokes too thin or broken?")
        }
        if touchesEdge { doubts.append("the digit touches the picture's edge: is it cut off?") }
        return PreparedDigit(pixels: pixels, doubts: doubts, inkFraction: inkFraction, keptShare: keptShare)
    }

    static func percent(_ share: Double) -> String { "\(Int((share * 100).rounded()))%" }

    /// The picture as ink in 0...1, (height, width): inverted when its border is light, so the
    /// strokes are high whichever way round the page is.
    static func inkPlane(_ image: GrayImage) -> (ink: [Float], width: Int, height: Int) {
        let light = ImageFiles.borderTone(image).light, scale = 1 / Float(image.maxValue)
        let ink = image.pixels.map { light ? 1 - Float($0) * scale : Float($0) * scale }
        return (ink, image.width, image.height)
    }

    /// `crop` ((height, width) levels in 0...1, the digit's box) scaled so its longer side is
    /// `box` pixels (the other in proportion, at least one), its brightest pixel made 255 (thin
    /// strokes fade when shrunk), placed with its centre of mass at the centre of a
    /// `side × side` canvas, within half a pixel: MNIST's digits have theirs at (14.0, 14.0).
    /// Nil when nothing is left.
    static func place(_ crop: [Float], width cw: Int, height ch: Int, side: Int, box: Int) -> [UInt8]? {
        let longer = max(cw, ch)
        let nw = max(1, Int((Double(cw * box) / Double(longer)).rounded()))
        let nh = max(1, Int((Double(ch * box) / Double(longer)).rounded()))
        var digit = ImageFiles.resample(crop, width: cw, height: ch, toWidth: nw, toHeight: nh)  // (nh, nw)
        guard let brightest = digit.max(), brightest > 0 else { return nil }
        for i in digit.indices { digit[i] /= brightest }

        var mass = 0.0, my = 0.0, mx = 0.0
        for y in 0..<nh {
            for x in 0..<nw {
                let v = Double(digit[y * nw + x]); mass += v; my += v * Double(y); mx += v * Double(x)
            }
        }
        let centre = Double(side / 2)
        let dy = Int((centre - my / mass).rounded()), dx = Int((centre - mx / mass).rounded())
        var canvas = [UInt8](repeating: 0, count: side * side)  // (side, side)
        for y in 0..<nh where (0..<side).contains(y + dy) {
            for x in 0..<nw where (0..<side).contains(x + dx) {
                canvas[(y + dy) * side + x + dx] = UInt8(min(255, max(0, (digit[y * nw + x] * 255).rounded())))
            }
        }
        return canvas
    }

    // MARK: Filters

    /// Mean over a (2·radius + 1)² square, the square cut at the picture's edges.
    static func boxBlur(_ plane: [Float], width w: Int, height h: Int, radius r: Int) -> [Float] {
        func pass(_ src: [Float], count n: Int, lines: Int, at: (Int, Int) -> Int) -> [Float] {
            var out = src
            for line in 0..<lines {
                var sum: Float = 0, lo = 0, hi = -1
                for i in 0..<n {
                    while hi < min(n - 1, i + r) { hi += 1; sum += src[at(line, hi)] }
                    while lo < i - r { sum -= src[at(line, lo)]; lo += 1 }
                    out[at(line, i)] = sum / Float(hi - lo + 1)
                }
            }
            return out
        }
        let rows = pass(plane, count: w, lines: h) { y, x in y * w + x }
        return pass(rows, count: h, lines: w) { x, y in y * w + x }
    }

    /// Grey-scale opening (erosion, then dilation) by a `window × window` square: what is left
    /// of the picture once every bright feature narrower than the window is removed.
    static func opening(_ plane: [Float], width w: Int, height h: Int, window: Int) -> [Float] {
        let eroded = filter2D(plane, width: w, height: h, window: window, min)
        return filter2D(eroded, width: w, height: h, window: window, max)
    }

    /// A separable running minimum or maximum over a `window`-wide square centred on each
    /// pixel (cut at the edges).
    static func filter2D(_ plane: [Float], width w: Int, height h: Int, window: Int,
                         _ pick: (Float, Float) -> Float) -> [Float] {
        var rows = plane
        var line = [Float](repeating: 0, count: w)
        for y in 0..<h {
            for x in 0..<w { line[x] = plane[y * w + x] }
            let out = runningExtreme(line, window: window, pick)
            for x in 0..<w { rows[y * w + x] = out[x] }
        }
        var result = rows
        line = [Float](repeating: 0, count: h)
        for x in 0..<w {
            for y in 0..<h { line[y] = rows[y * w + x] }
            let out = runningExtreme(line, window: window, pick)
            for y in 0..<h { result[y * w + x] = out[y] }
        }
        return result
    }

    /// out[i] = pick over values[i − window/2 ... i − window/2 + window − 1] (clamped to the
    /// ends), in linear time whatever the window (van Herk / Gil–Werman: running extremes
    /// forward and backward within blocks of `window`, any window straddles at most two).
    public static func runningExtreme(_ values: [Float], window k: Int, _ pick: (Float, Float) -> Float) -> [Float] {
        let n = values.count
        guard k > 1, n > 1 else { return values }
        var forward = values, backward = values
        for i in 1..<n where i % k != 0 { forward[i] = pick(forward[i - 1], values[i]) }
        for i in stride(from: n - 2, through: 0, by: -1) where (i + 1) % k != 0 { backward[i] = pick(backward[i + 1], values[i]) }
        return (0..<n).map { i in
            let a = max(0, i - k / 2), b = min(n - 1, i - k / 2 + k - 1)
            // [a, b] is at most k long, so it lies in one block or two neighbouring ones.
            if a / k != b / k { return pick(backward[a], forward[b]) }
            if a % k == 0 { return forward[b] }
            if b == n - 1 || (b + 1) % k == 0 { return backward[a] }
            return (a...b).reduce(values[a]) { pick($0, values[$1]) }
        }
    }

    /// Otsu's threshold for values in 0...top: the one that maximises the variance between
    /// the two classes, over a 256-bin histogram.
    public static func otsu(_ values: [Float], top: Float) -> Float {
        let bins = 256
        var histogram = [Double](repeating: 0, count: bins)
        for v in values { histogram[min(bins - 1, Int(v / top * Float(bins - 1)))] += 1 }
        let total = Double(values.count)
        let sumAll = histogram.enumerated().reduce(0.0) { $0 + Double($1.offset) * $1.element }
        var below = 0.0, sumBelow = 0.0, best = -1.0, bestBin = 0
        for t in 0..<(bins - 1) {
            below += histogram[t]; sumBelow += Double(t) * histogram[t]
            let above = total - below
            guard below > 0, above > 0 else { continue }
            let meanBelow = sumBelow / below, meanAbove = (sumAll - sumBelow) / above
            let between = below * above * (meanBelow - meanAbove) * (meanBelow - meanAbove)
            if between > best { best = between; bestBin = t }
        }
        // Values in bins 0...bestBin are paper.
        return (Float(bestBin) + 1) / Float(bins - 1) * top
    }

    /// A connected region of ink: its pixel count and bounding box.
    struct Component { var size = 0, x0 = Int.max, x1 = -1, y0 = Int.max, y1 = -1 }

    /// The 8-connected components of the pixels at or above `threshold`: each pixel's
    /// component index (−1 for paper) and each component.
    static func inkComponents(_ plane: [Float], width w: Int, height h: Int, threshold: Float)
        -> (labels: [Int32], components: [Component]) {
        var labels = [Int32](repeating: -1, count: w * h)  // (h, w)
        var components: [Component] = []
        var stack: [Int] = []
        for start in plane.indices where plane[start] >= threshold && labels[start] < 0 {
            let id = Int32(components.count)
            var c = Component()
            labels[start] = id
            stack.append(start)
            while let p = stack.popLast() {
                let y = p / w, x = p % w
                c.size += 1
                c.x0 = min(c.x0, x); c.x1 = max(c.x1, x); c.y0 = min(c.y0, y); c.y1 = max(c.y1, y)
                for ny in max(0, y - 1)...min(h - 1, y + 1) {
                    for nx in max(0, x - 1)...min(w - 1, x + 1) {
                        let q = ny * w + nx
                        if labels[q] < 0 && plane[q] >= threshold { labels[q] = id; stack.append(q) }
                    }
                }
            }
            components.append(c)
        }
        return (labels, components)
    }

    /// `mask` grown by one pixel in every direction (3×3 square).
    static func dilate(_ mask: [Bool], width w: Int, height h: Int) -> [Bool] {
        var out = mask
        for y in 0..<h {
            for x in 0..<w where mask[y * w + x] {
                for ny in max(0, y - 1)...min(h - 1, y + 1) {
                    for nx in max(0, x - 1)...min(w - 1, x + 1) { out[ny * w + nx] = true }
                }
            }
        }
        return out
    }

    /// The value `q` (0...1) of the way up the sorted `values`, 0 when there are none.
    static func quantile(_ values: [Float], _ q: Double) -> Float {
        guard !values.isEmpty else { return 0 }
        let v = values.sorted()
        return v[min(v.count - 1, Int(Double(v.count) * q))]
    }
}
