import Dispatch
import Foundation
import Hashing

/// A named tensor of the model and where it lives in the flat buffers.
public struct NamedTensor: Sendable {
    public var name: String                // "layers.3.weight"
    public var shape: [Int]
    public var region: TensorSlot.Region
    public var offset: Int                 // into parameters or state
    public var count: Int { shape.reduce(1, *) }
    public var isKernel: Bool
    public var l2: Float
}

/// A network built from a `ModelSpec`: its layers, one flat buffer each for parameters,
/// gradients and state (batch-norm running statistics), and activation buffers sized once per
/// batch size. Layers hold views into the flat buffers, so the gradient exchange is one flat
/// buffer and the optimizer one loop (over a range of it).
public final class Model {
    public let spec: ModelSpec
    public let inputShape: Shape
    public let layers: [Layer]
    public let tensors: [NamedTensor]
    public let parameterCount: Int, stateCount: Int
    /// Where each layer's parameters (and their gradients) start; a layer's end where the next's begins.
    public let parameterOffsets: [Int]

    /// (P) trainable parameters.
    public let parameters: FloatBuffer
    /// Gradients of the parameters, same layout: one slot of P per micro-batch of the largest
    /// batch reserved (`PassContext.microBatch`), micro-batch k's at k·P. After a backward that
    /// sums them (the default), slot 0 holds their exact sum.
    public private(set) var gradientBuffer: FloatBuffer
    /// Slots of P gradients in `gradientBuffer`.
    public private(set) var gradientSlots = 1
    /// Examples per micro-batch (`PassContext.microBatch`): what results are a function of,
    /// besides the data, the weights and the seed. Set it before `reserve`.
    public var microBatch = Model.defaultMicroBatch {
        didSet { precondition(microBatch >= 1, "Model.microBatch must be at least 1, got \(microBatch)") }
    }
    public static let defaultMicroBatch = 16
    /// (S) non-trainable state: running means and variances.
    public let state: FloatBuffer

    public var gradients: UnsafeMutablePointer<Float> { gradientBuffer.pointer }
    public var classes: Int { layers.last!.outputShape.count }
    /// Whether the network ends in class scores (flat, at least 2), as training needs.
    public var endsInClassScores: Bool { layers.last!.outputShape.isFlat && classes >= 2 }

    public private(set) var capacity = 0
    /// When set, forward and backward add each layer's seconds here (index = layer).
    public var profile: LayerProfile?
    /// (N, input) the batch to run; fill it before `forward`.
    public private(set) var input = FloatBuffer(count: 0)
    var activations: [FloatBuffer] = []   // layer i's output, (N, outputShape_i)
    /// Layers whose work is done by the layer before them (an activation fused into a batch
    /// norm): skipped, their output buffer is the previous layer's.
    let fused: [Bool]
    /// For each layer, the next one when its inference forward applies it too (a batch norm
    /// right after a linear convolution: weights and bias scaled, `Conv2D.forward(…folding:)`);
    /// the next one is then skipped. Only the inference path of `reserveInference` folds; a
    /// larger batch runs on the training buffers, unfolded, which rounds differently.
    let foldsNext: [FoldsIntoConvolution?]
    /// Layers applied by the layer before them in inference (`foldsNext`).
    let foldedIntoConvolution: [Bool]
    /// Whether inference folds those batch norms (on by default; tests compare with the two passes).
    public var foldsBatchNormInInference = true
    /// Indices of the batch-norm layers inference folds into the convolution before them (none
    /// while `foldsBatchNormInInference` is off).
    public var batchNormsFoldedInInference: [Int] {
        foldsBatchNormInInference ? foldedIntoConvolution.indices.filter { foldedIntoConvolution[$0] } : []
    }
    var gradA = FloatBuffer(count: 0), gradB = FloatBuffer(count: 0)   // ping-pong (N, max shape)
    /// Inference keeps no activations for backward: two ping-pong buffers of the widest layer.
    public private(set) var inferenceCapacity = 0
    var inferA = FloatBuffer(count: 0), inferB = FloatBuffer(count: 0)
    /// Floats per example of the widest activation (the input included).
    let widest: Int

    public init(spec: ModelSpec) throws {
        self.spec = spec
        guard spec.input.count == 3, spec.input.allSatisfy({ $0 > 0 && $0 <= 4096 }) else {
            throw ModelError.spec("model '\(spec.name)': input must be [height, width, channels] with sizes in 1...4096, got \(spec.input)")
        }
        guard !spec.layers.isEmpty, spec.layers.count <= 1000 else {
            throw ModelError.spec("model '\(spec.name)': needs 1 to 1000 layers, has \(spec.layers.count)")
        }
        inputShape = Shape(c: spec.input[2], h: spec.input[0], w: spec.input[1])
        var built: [Layer] = []
        var shape = inputShape
        for (i, ls) in spec.layers.enumerated() {
            let layer = try Model.makeLayer(ls, index: i, input: shape)
            built.append(layer)
            shape = layer.outputShape
            guard shape.count > 0, shape.count <= 1 << 24 else {
                throw ModelError.shape("layer \(i) (\(ls.type)) output \(shape) is empty or too large")
            }
        }
        layers = built
        widest = max(inputShape.count, built.map { $0.outputShape.count }.max() ?? 0)
        var fused = [Bool](repeating: false, count: built.count)
        for i in built.indices.dropFirst() {
            if let (function, alpha) = built[i].fusibleActivation, built[i - 1].fuse(function, alpha: alpha) {
                fused[i] = true
            }
        }
        self.fused = fused
        let foldsNext = built.indices.map { i in i + 1 < built.count ? built[i].folding(built[i + 1]) : nil }
        self.foldsNext = foldsNext
        foldedIntoConvolution = built.indices.map { i in i > 0 && foldsNext[i - 1] != nil }

        var named: [NamedTensor] = []
        var pOffset = 0, sOffset = 0
        var layerOffsets: [(Int, Int)] = []
        for (i, layer) in layers.enumerated() {
            layerOffsets.append((pOffset, sOffset))
            for slot in layer.slots {
                let base = slot.region == .parameters ? pOffset : sOffset
                named.append(NamedTensor(name: "layers.\(i).\(slot.name)", shape: slot.shape, region: slot.region,
                                         offset: base + slot.offset, isKernel: slot.isKernel,
                                         l2: slot.isKernel ? layer.l2 : 0))
            }
            pOffset += layer.parameterCount; sOffset += layer.stateCount
        }
        // Limits that keep a hostile model file from making us allocate gigabytes.
        guard pOffset <= 1 << 25 else {
            throw ModelError.spec("model '\(spec.name)' has \(pOffset) parameters; more than 2^25 (33.5 million) is refused")
        }
        let perExample = built.reduce(inputShape.count) { $0 + $1.outputShape.count }
        guard perExample <= 1 << 24 else {
            throw ModelError.spec("model '\(spec.name)' needs \(perExample) activations per example; more than 2^24 is refused")
        }
        tensors = named
        parameterCount = pOffset; stateCount = sOffset
        parameterOffsets = layerOffsets.map(\.0)
        parameters = FloatBuffer(count: pOffset)
        gradientBuffer = FloatBuffer(count: pOffset)
        state = FloatBuffer(count: sOffset)
        layerStateOffsets = layerOffsets.map(\.1)
        bindLayers()
    }

    /// Where each layer's state starts.
    let layerStateOffsets: [Int]

    /// Points every layer at its slices of the parameters, gradient slot 0 and state.
    private func bindLayers() {
        for (i, layer) in layers.enumerated() {
            layer.bind(parameters: parameters.pointer + parameterOffsets[i], gradients: gradientBuffer.pointer + parameterOffsets[i],
                       state: state.pointer + layerStateOffsets[i])
        }
    }

    /// Grows the gradient buffer to one slot per micro-batch of `batch` examples.
    private func reserveGradientSlots(batch: Int) {
        reserveGradientSlots(max(1, (batch + microBatch - 1) / microBatch))
    }

    /// Grows the gradient buffer to `slots` slots (a step accumulating several passes needs one
    /// per micro-batch of all of them).
    public func reserveGradientSlots(_ slots: Int) {
        guard slots > gradientSlots else { return }
        gradientSlots = slots
        gradientBuffer = FloatBuffer(count: slots * parameterCount)
        bindLayers()
    }

    /// `context` as this model's layers run it: its micro-batch size and gradient slots.
    private func prepared(_ context: PassContext) -> PassContext {
        var context = context
        context.microBatch = microBatch
        context.gradientStride = parameterCount
        return context
    }

    static func makeLayer(_ s: LayerSpec, index i: Int, input: Shape) throws -> Layer {
        func need(_ v: Int?, _ field: String, _ range: ClosedRange<Int>) throws -> Int {
            guard let v else { throw ModelError.field(layer: i, type: s.type, message: "missing '\(field)'") }
            guard range.contains(v) else {
                throw ModelError.field(layer: i, type: s.type, message: "'\(field)' = \(v) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        func unit(_ v: Double?, _ field: String, default d: Double, _ range: ClosedRange<Double>) throws -> Double {
            let v = v ?? d
            guard range.contains(v), v.isFinite else {
                throw ModelError.field(layer: i, type: s.type, message: "'\(field)' = \(v) is outside \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        switch s.type {
        case .conv2d:
            let filters = try need(s.filters, "filters", 1...65536)
            let k = try need(s.kernel, "kernel", 1...64)
            let stride = try need(s.stride ?? 1, "stride", 1...64)
            return try Conv2D(input: input, filters: filters, kernel: k, stride: stride, padding: s.padding ?? .valid,
                              activation: s.activation ?? .linear, useBias: s.useBias ?? true,
                              l2: Float(try unit(s.l2, "l2", default: 0, 0...1e3)))
        case .dense:
            guard input.isFlat else {
                throw ModelError.field(layer: i, type: s.type, message: "input \(input) is not flat; add a flatten layer before it")
            }
            let units = try need(s.units, "units", 1...1 << 20)
            return Dense(input: input, units: units, activation: s.activation ?? .linear, useBias: s.useBias ?? true,
                         l2: Float(try unit(s.l2, "l2", default: 0, 0...1e3)))
        case .batchnorm:
            return BatchNorm(input: input, momentum: Float(try unit(s.momentum, "momentum", default: 0.99, 0...1)),
                             epsilon: Float(try unit(s.epsilon, "epsilon", default: 1e-3, 1e-12...1)))
        case .maxpool2d:
            let size = try need(s.size, "size", 1...64)
            return try MaxPool2D(input: input, size: size, stride: try need(s.stride ?? size, "stride", 1...64),
                                 padding: s.padding ?? .valid)
        case .lrn:
            // PyTorch nn.LocalResponseNorm defaults except size, which it also requires.
            return LocalResponseNorm(input: input, size: try need(s.size, "size", 1...4096),
                                     alpha: Float(try unit(s.alpha, "alpha", default: 1e-4, 0...1e6)),
                                     beta: Float(try unit(s.beta, "beta", default: 0.75, 0...16)),
                                     k: Float(try unit(s.k, "k", default: 1, 1e-9...1e6)))
        case .flatten:
            return FlattenLayer(input: input)
        case .dropout:
            return Dropout(input: input, rate: Float(try unit(s.rate, "rate", default: 0.5, 0...0.99)), layerIndex: i)
        case .relu:
            return ActivationLayer(.relu, input: input)
        case .elu:
            return ActivationLayer(.elu, alpha: Float(try unit(s.alpha, "alpha", default: 1, 0...100)), input: input)
        }
    }

    /// Sets every parameter and running statistic to its initial value, drawn from `seed`.
    public func initialize(seed: UInt64) {
        let rng = CounterRNG(seed: seed)
        for (i, layer) in layers.enumerated() { layer.initialize(rng: rng, layerIndex: i) }
    }

    /// Sizes activations and workspaces for batches of up to `batch` examples.
    public func reserve(batch: Int) {
        reserveGradientSlots(batch: batch)
        guard batch > capacity else { return }
        capacity = batch
        if batch > inferenceCapacity { input = FloatBuffer(count: batch * inputShape.count) }
        activations = []
        for (i, layer) in layers.enumerated() {
            activations.append(fused[i] ? activations[i - 1] : FloatBuffer(count: batch * layer.outputShape.count))
        }
        gradA = FloatBuffer(count: batch * widest); gradB = FloatBuffer(count: batch * widest)
        for (layer, allowance) in zip(layers, keptAllowances(batch: batch)) {
            layer.reserve(batch: batch, keeping: allowance)
        }
    }

    /// Floats each layer keeps from a training forward of `batch` for backward (the column
    /// matrices of im2col convolutions), in layer order while they fit in
    /// `Conv2D.keptColumnsBudget` together.
    func keptAllowances(batch: Int) -> [Int] {
        var left = Conv2D.keptColumnsBudget
        return layers.map { layer in
            let want = layer.keptFloats(batch: batch)
            guard want <= left else { return 0 }
            left -= want
            return want
        }
    }

    /// Floats of column matrices kept for backward when training with `batch` (`ModelSummary`).
    public func keptColumnFloats(batch: Int) -> Int { keptAllowances(batch: batch).reduce(0, +) }

    /// Sizes the inference path (evaluation, prediction) for batches of up to `batch`: input and
    /// two ping-pong buffers, no per-layer activations, no backward caches.
    public func reserveInference(batch: Int) {
        guard batch > inferenceCapacity else { return }
        inferenceCapacity = batch
        if batch > capacity { input = FloatBuffer(count: batch * inputShape.count) }
        inferA = FloatBuffer(count: batch * widest); inferB = FloatBuffer(count: batch * widest)
        if capacity == 0 {  // per-worker workspaces only: no training, so no kept column matrices
            for layer in layers { layer.reserve(batch: 1, keeping: 0) }
        }
        for layer in layers { layer.reserveInference(batch: batch) }
    }

    /// (N, classes) logits of the batch in `input`. In inference mode with `reserveInference`
    /// the activations live in two ping-pong buffers; training keeps every layer's output.
    @discardableResult
    public func forward(batch: Int, context: PassContext) throws -> UnsafeMutablePointer<Float> {
        let context = prepared(context)
        if !context.training && batch <= inferenceCapacity {
            var x = UnsafePointer(input.pointer)
            var out = inferA.pointer, spare = inferB.pointer
            let folds = foldsBatchNormInInference
            for (i, layer) in layers.enumerated() where !fused[i] && !(folds && foldedIntoConvolution[i]) {
                try timed(i, \.forward) {
                    if folds, let next = foldsNext[i] {
                        layer.forward(x, out, batch: batch, folding: next, context: context)
                    } else {
                        try layer.forward(x, out, batch: batch, context: context)
                    }
                }
                x = UnsafePointer(out)
                swap(&out, &spare)
            }
            return UnsafeMutablePointer(mutating: x)
        }
        precondition(batch <= capacity, "Model.forward: reserve(batch:) first")
        var x = UnsafePointer(input.pointer)
        for (i, (layer, y)) in zip(layers, activations).enumerated() where !fused[i] {
            try timed(i, \.forward) { try layer.forward(x, y.pointer, batch: batch, context: context) }
            x = UnsafePointer(y.pointer)
        }
        return activations.last!.pointer
    }

    /// Runs layer `i`'s forward or backward `body`, adding its seconds to that row of `profile`
    /// when one is set (in inference a folded batch norm's time is in its convolution's).
    @inline(__always)
    private func timed(_ i: Int, _ pass: ReferenceWritableKeyPath<LayerProfile, [Double]>,
                       _ body: () throws -> Void) rethrows {
        guard let profile else { return try body() }
        let watch = Stopwatch()
        try body()
        profile[keyPath: pass][i] += watch.seconds
    }

    public var logits: UnsafeMutablePointer<Float> { activations.last!.pointer }

    /// Back-propagates dlogits (N, classes): each micro-batch's parameter gradients land in its
    /// slot of `gradientBuffer`, and unless `context.sumsGradients` is off they are then summed
    /// exactly into slot 0 (`gradients`). The input's own gradient is written to `inputGradient`
    /// when asked for (tests), else skipped.
    public func backward(batch: Int, dlogits: UnsafePointer<Float>, context: PassContext,
                         inputGradient: UnsafeMutablePointer<Float>? = nil) throws {
        let context = prepared(context)
        precondition(context.firstSlot + context.microBatchCount(batch) <= gradientSlots, "Model.backward: reserve(batch:) first")
        var dy = gradA.pointer, spare = gradB.pointer
        dy.update(from: dlogits, count: batch * classes)
        for i in stride(from: layers.count - 1, through: 0, by: -1) where !fused[i] {
            let x = i == 0 ? UnsafePointer(input.pointer) : UnsafePointer(activations[i - 1].pointer)
            let dx: UnsafeMutablePointer<Float>? = i == 0 ? inputGradient : spare
            try timed(i, \.backward) {
                try layers[i].backward(x, activations[i].pointer, dy, dx, batch: batch, context: context)
            }
            swap(&dy, &spare)
        }
        if context.sumsGradients {
            MicroBatchGradients(self).sumLocally(slots: context.microBatchCount(batch))
        }
    }

    /// Zeroes every gradient slot (backward writes the slots it uses; tests start from zero).
    public func zeroGradients() { gradientBuffer.zero() }

    /// Keras L2: Σ λ·Σw² over kernels (Double), and its gradient 2λw added into `gradients`.
    public func l2Loss() -> Double {
        var total = 0.0
        for t in tensors where t.l2 > 0 {
            var s = 0.0
            let w = parameters.pointer + t.offset
            for i in 0..<t.count { s += Double(w[i]) * Double(w[i]) }
            total += Double(t.l2) * s
        }
        return total
    }

    /// Adds 2λw into the gradients of the kernels with L2, for the parameter indices in `range` (nil: all).
    public func addL2Gradients(in range: Range<Int>? = nil) {
        let range = range ?? 0..<parameterCount
        for t in tensors where t.l2 > 0 {
            let lo = max(t.offset, range.lowerBound), hi = min(t.offset + t.count, range.upperBound)
            guard lo < hi else { continue }
            let w = parameters.pointer, g = gradients, k = 2 * t.l2
            for i in lo..<hi { g[i] += k * w[i] }
        }
    }

    /// Multiply–adds of one example's forward pass.
    public var forwardFlopsPerExample: Int { layers.reduce(0) { $0 + $1.forwardFlops } }

    /// FLOPs (2 per multiply–add) of one example's training step in the GEMM layers: forward,
    /// weight gradient, and input gradient except for the first layer, which needs none.
    public var trainingFlopsPerExample: Int {
        layers.indices.reduce(0) { $0 + layers[$1].trainingFlops(inputGradient: $1 > 0) }
    }

    /// The layers of one kind, with their index in the spec.
    public func layers<T: Layer>(of type: T.Type) -> [(Int, T)] {
        layers.enumerated().compactMap { i, l in (l as? T).map { (i, $0) } }
    }

    /// SHA-256 of the parameter buffer's little-endian bytes (what `weights_sha256` reports).
    public func weightsSHA256() -> String {
        SHA256.hex(SHA256.hash(UnsafeRawBufferPointer(start: parameters.pointer, count: parameterCount * 4)))
    }

    public func tensor(named name: String) -> NamedTensor? { tensors.first { $0.name == name } }

    /// A pointer to a tensor's values in the parameter or state buffer.
    public func pointer(to t: NamedTensor) -> UnsafeMutablePointer<Float> {
        (t.region == .parameters ? parameters.pointer : state.pointer) + t.offset
    }
}

extension ModelSpec {
    /// A preset's name or a JSON model file's path.
    public static func load(_ nameOrPath: String) throws -> ModelSpec {
        if let preset = presets[nameOrPath] { return preset }
        guard FileManager.default.fileExists(atPath: nameOrPath) else {
            throw ModelError.spec("model '\(nameOrPath)': not a preset (\(presets.keys.sorted().joined(separator: ", "))) and no such file")
        }
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: nameOrPath),
              let size = attributes[.size] as? Int, size <= 1 << 20 else {
            throw ModelError.spec("\(nameOrPath): model file is unreadable or larger than 1 MiB")
        }
        guard let data = FileManager.default.contents(atPath: nameOrPath) else {
            throw ModelError.spec("\(nameOrPath): cannot read the model file")
        }
        return try decode(data, source: nameOrPath,
                          defaultName: URL(fileURLWithPath: nameOrPath).deletingPathExtension().lastPathComponent)
    }

    /// Decodes a JSON model, turning decoder errors into one line that names the place. A
    /// model without `name` is named `defaultName`, or refused when there is none.
    public static func decode(_ data: Data, source: String, defaultName: String? = nil) throws -> ModelSpec {
        do {
            let decoder = JSONDecoder()
            if let defaultName { decoder.userInfo[defaultNameKey] = defaultName }
            return try decoder.decode(ModelSpec.self, from: data)
        } catch let DecodingError.dataCorrupted(ctx) where !ctx.codingPath.isEmpty {
            // Well-formed JSON with a value out of its set (an unknown layer type, padding, activation).
            throw ModelError.spec("\(source): \(ctx.debugDescription) at \(path(ctx.codingPath))")
        } catch let DecodingError.dataCorrupted(ctx) {
            throw ModelError.spec("\(source): not valid JSON (\(ctx.debugDescription)) at \(path(ctx.codingPath))")
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw ModelError.spec("\(source): missing '\(key.stringValue)' at \(path(ctx.codingPath))")
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw ModelError.spec("\(source): wrong type at \(path(ctx.codingPath)): \(ctx.debugDescription)")
        } catch let DecodingError.valueNotFound(_, ctx) {
            throw ModelError.spec("\(source): null value at \(path(ctx.codingPath))")
        } catch {
            throw ModelError.spec("\(source): cannot read model: \(error)")
        }
    }

    static func path(_ p: [CodingKey]) -> String {
        p.isEmpty ? "top level" : p.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
    }

    /// Canonical JSON (sorted keys), stored in checkpoints and hashed to compare ranks.
    public func canonicalJSON() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try! enc.encode(self), as: UTF8.self)
    }
}

/// Seconds spent in each layer's forward and backward (collective waits inside batch norm
/// included), for `distcnn bench --profile`.
public final class LayerProfile {
    public var forward: [Double], backward: [Double]
    public init(layers: Int) {
        forward = [Double](repeating: 0, count: layers); backward = forward
    }
}

// MARK: - Memory check

extension Model {
    /// Bytes of physical memory on this machine (pages × page size), or `Int.max` when unknown.
    public static var physicalMemoryBytes: Int {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return .max }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: size)
        return overflow ? .max : bytes
    }

    /// Bytes `reserve(batch:)` and a training step allocate for `batch` (activations kept for
    /// backward, two gradient buffers, column matrices, parameters, one gradient slot per
    /// micro-batch, the Int64 fixed-point sum, Adam moments), or nil when the count overflows `Int`.
    /// `gradientSlots`: when a step runs its batch in several passes, the slots of all of them.
    public func trainingBytes(batch: Int, gradientSlots: Int? = nil) -> Int? {
        let kept = layers.reduce(inputShape.count) { $0 + $1.outputShape.count }
        let (perExample, o1) = (2 * widest).addingReportingOverflow(kept)
        let (activations, o2) = batch.multipliedReportingOverflow(by: perExample)
        guard !o1, !o2, batch >= 0 else { return nil }
        let slots = gradientSlots ?? max(1, (batch + microBatch - 1) / microBatch)
        let (slotFloats, o4) = slots.multipliedReportingOverflow(by: parameterCount)
        guard !o4 else { return nil }
        // Parameters, two Adam moments, the Int64 sum (two floats' worth), and the slots.
        let floats = [keptColumnFloats(batch: batch), 5 * parameterCount, slotFloats, stateCount].reduce(Optional(activations)) { sum, n in
            sum.flatMap { s in let (r, o) = s.addingReportingOverflow(n); return o ? nil : r }
        }
        guard let floats else { return nil }
        let (bytes, o3) = floats.multipliedReportingOverflow(by: 4)
        return o3 ? nil : bytes
    }

    /// Refuses, before anything is allocated, a training batch whose buffers (times `copies`:
    /// the ranks on this node) would need more than the machine's physical memory.
    public func checkMemory(batch: Int, copies: Int = 1, gradientSlots: Int? = nil) throws {
        let total = Model.physicalMemoryBytes
        let needed = trainingBytes(batch: batch, gradientSlots: gradientSlots).flatMap { b in
            let (r, o) = b.multipliedReportingOverflow(by: max(copies, 1)); return o ? nil : r
        }
        guard let needed, needed <= total else {
            func gib(_ b: Int) -> String { String(format: "%.1f GiB", Double(b) / Double(1 << 30)) }
            let what = copies > 1 ? "\(copies) ranks training batches of \(batch)" : "training a batch of \(batch)"
            throw ModelError.spec("model '\(spec.name)': \(what) needs \(needed.map(gib) ?? "more than Int.max bytes"), more than this machine's \(gib(total)) of memory; use a smaller --batch-size")
        }
    }
}

extension ModelSpec {
    /// `Model.checkMemory` for this spec (builds the model: parameters only, no activations).
    public func checkMemory(batch: Int, copies: Int = 1, microBatch: Int = Model.defaultMicroBatch,
                            gradientSlots: Int? = nil) throws {
        let model = try Model(spec: self)
        model.microBatch = microBatch
        try model.checkMemory(batch: batch, copies: copies, gradientSlots: gradientSlots)
    }
}
