import Collective
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a TensorBoard event file, `DIR/events.out.tfevents.<unix seconds>.<host>`, without
/// TensorFlow or a protobuf library: TFRecord framing around hand-encoded `tensorflow.Event`
/// messages (tensorboard/compat/proto/event.proto, summary.proto).
///
/// Events are buffered in memory; `flush()` hands them to the kernel and reports any failure,
/// so a full disk shows up as an error at a point the caller chose. Not thread-safe: rank 0's
/// training loop owns it.
public final class TensorBoardWriter {
    /// The event file.
    public let path: String
    private var fd: Int32
    private var pending: [UInt8] = []

    /// Creates the folder if needed and a new event file in it, starting with the
    /// `file_version` event readers require.
    public init(directory: String) throws {
        try AtomicFile.makeDirectory(directory)
        // Two writers started in the same second (a quick requeue) must not share a file;
        // readers take every file whose name holds "tfevents", in name order.
        let base = directory + "/events.out.tfevents.\(Int(Date().timeIntervalSince1970)).\(localHostName().replacingOccurrences(of: "/", with: "_"))"
        var candidate = base, attempt = 0
        var fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
        while fd < 0 && errno == EEXIST && attempt < 1000 {
            attempt += 1
            candidate = base + ".\(attempt)"
            fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
        }
        guard fd >= 0 else { throw IOFailure(path: candidate, action: "create event file") }
        self.fd = fd
        path = candidate
        var event = Protobuf()
        event.double(1, Date().timeIntervalSince1970)   // wall_time
        event.string(3, "brain.Event:2")                // file_version
        append(event)
        try flush()
    }

    deinit {
        try? flush()
        if fd >= 0 { Glibc.close(fd) }
    }

    /// One scalar at `step` (shown on TensorBoard's x axis).
    public func scalar(_ tag: String, _ value: Double, step: Int, wallTime: Double? = nil) {
        scalars([(tag, value)], step: step, wallTime: wallTime)
    }

    /// Several scalars at one step, in one event.
    public func scalars(_ values: [(String, Double)], step: Int, wallTime: Double? = nil) {
        var summary = Protobuf()
        for (tag, value) in values {
            var v = Protobuf()                       // Summary.Value
            v.string(1, tag)                         // tag
            v.float(2, Float(value))                 // simple_value
            summary.message(1, v)                    // repeated value
        }
        var event = Protobuf()
        event.double(1, wallTime ?? Date().timeIntervalSince1970)
        event.int64(2, Int64(step))
        event.message(5, summary)                    // summary
        append(event)
    }

    /// A histogram of `values` at `step` (TensorBoard's Histograms and Distributions tabs):
    /// `buckets` equal-width buckets between the smallest and largest finite value; non-finite
    /// values are left out.
    public func histogram(_ tag: String, _ values: UnsafeBufferPointer<Float>, step: Int, buckets: Int = 30,
                          wallTime: Double? = nil) {
        var lo = Double.infinity, hi = -Double.infinity, sum = 0.0, squares = 0.0, n = 0
        for v in values where v.isFinite {
            let d = Double(v)
            lo = min(lo, d); hi = max(hi, d); sum += d; squares += d * d; n += 1
        }
        var limits: [Double] = [], counts: [Double] = []
        if n > 0 {
            let k = hi > lo ? buckets : 1
            let width = hi > lo ? (hi - lo) / Double(k) : 1
            counts = [Double](repeating: 0, count: k)
            for v in values where v.isFinite {
                counts[min(Int((Double(v) - lo) / width), k - 1)] += 1
            }
            limits = (1...k).map { $0 == k ? hi : lo + Double($0) * width }
        } else {
            lo = 0; hi = 0
        }
        var histo = Protobuf()                       // HistogramProto
        histo.double(1, lo); histo.double(2, hi); histo.double(3, Double(n))
        histo.double(4, sum); histo.double(5, squares)
        histo.packedDoubles(6, limits); histo.packedDoubles(7, counts)
        var v = Protobuf()                           // Summary.Value
        v.string(1, tag)
        v.message(5, histo)                          // histo
        var summary = Protobuf()
        summary.message(1, v)
        var event = Protobuf()
        event.double(1, wallTime ?? Date().timeIntervalSince1970)
        event.int64(2, Int64(step))
        event.message(5, summary)
        append(event)
    }

    /// A hyperparameter's value for the hparams plugin.
    public enum HParam: Equatable, Sendable {
        case number(Double), string(String), bool(Bool)
    }

    /// The hparams plugin's session start (tensorboard/plugins/hparams/plugin_data.proto): this
    /// folder is one session with these hyperparameters, started at `startTime`.
    public func hparamsSessionStart(_ hparams: [(String, HParam)], startTime: Double) {
        var start = Protobuf()                       // SessionStartInfo
        for (name, value) in hparams {
            var v = Protobuf()                       // google.protobuf.Value
            switch value {
            case .number(let x): v.double(2, x)
            case .string(let x): v.string(3, x)
            case .bool(let x): v.int64(4, x ? 1 : 0)
            }
            var entry = Protobuf()                   // map<string, Value> entry
            entry.string(1, name); entry.message(2, v)
            start.message(1, entry)
        }
        start.double(5, startTime)                   // start_time_secs
        var data = Protobuf()                        // HParamsPluginData (version 0)
        data.message(3, start)                       // session_start_info
        pluginSummary("_hparams_/session_start_info", plugin: "hparams", content: data, step: 0)
    }

    /// The hparams plugin's session end: STATUS_SUCCESS, or STATUS_FAILURE when not `success`.
    public func hparamsSessionEnd(success: Bool, endTime: Double, step: Int) {
        var end = Protobuf()                         // SessionEndInfo
        end.int64(1, success ? 1 : 2)                // status
        end.double(2, endTime)                       // end_time_secs
        var data = Protobuf()
        data.message(4, end)                         // session_end_info
        pluginSummary("_hparams_/session_end_info", plugin: "hparams", content: data, step: step)
    }

    /// A summary whose meaning is in its metadata's plugin data, with the empty float tensor
    /// the plugins expect as its value.
    private func pluginSummary(_ tag: String, plugin: String, content: Protobuf, step: Int) {
        var pluginData = Protobuf()                  // SummaryMetadata.PluginData
        pluginData.string(1, plugin); pluginData.message(2, content)
        var metadata = Protobuf()                    // SummaryMetadata
        metadata.message(1, pluginData)
        var shape = Protobuf()                       // TensorShapeProto with one dimension of size 0
        shape.message(2, Protobuf())
        var tensor = Protobuf()                      // TensorProto
        tensor.int64(1, 1)                           // dtype DT_FLOAT
        tensor.message(2, shape)
        var v = Protobuf()
        v.string(1, tag); v.message(9, metadata); v.message(8, tensor)
        var summary = Protobuf()
        summary.message(1, v)
        var event = Protobuf()
        event.double(1, Date().timeIntervalSince1970)
        event.int64(2, Int64(step))
        event.message(5, summary)
        append(event)
    }

    /// Marks a (re)start at `step`: TensorBoard drops the events logged earlier, in this
    /// folder, at `step` or later, since they belong to an attempt that was lost (the events
    /// a killed run logged after its last checkpoint).
    public func sessionStart(step: Int) {
        var log = Protobuf()
        log.int64(1, 1)                              // SessionLog.status = START
        var event = Protobuf()
        event.double(1, Date().timeIntervalSince1970)
        event.int64(2, Int64(step))
        event.message(7, log)                        // session_log
        append(event)
    }

    /// Writes the buffered events to the file.
    public func flush() throws {
        guard fd >= 0 else { throw IOFailure(path: path, action: "write (closed)", reason: "the writer is closed") }
        var written = 0
        defer { pending.removeFirst(written) }
        try pending.withUnsafeBytes { raw in
            while written < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw IOFailure(path: path, action: "write")
                }
                written += n
            }
        }
    }

    /// Flushes and closes the file; later writes fail.
    public func close() throws {
        guard fd >= 0 else { return }
        defer { fd = -1 }
        try flush()
        guard Glibc.close(fd) == 0 else { throw IOFailure(path: path, action: "close") }
    }

    /// TFRecord framing: length (uint64 LE), masked CRC-32C of those 8 bytes, the data,
    /// masked CRC-32C of the data.
    private func append(_ event: Protobuf) {
        let length = UInt64(event.bytes.count)
        let lengthBytes = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) }
        pending += lengthBytes
        pending += littleEndian(CRC32.masked(CRC32.castagnoli.checksum(lengthBytes)))
        pending += event.bytes
        pending += littleEndian(CRC32.masked(CRC32.castagnoli.checksum(event.bytes)))
    }

    private func littleEndian(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

}

/// The few protobuf wire-format encodings an Event needs.
struct Protobuf {
    private(set) var bytes: [UInt8] = []

    private mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    private mutating func key(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    /// int64 and enums: wire type 0, two's complement for negatives.
    mutating func int64(_ field: Int, _ v: Int64) { key(field, 0); varint(UInt64(bitPattern: v)) }
    /// double: wire type 1, 8 bytes little-endian.
    mutating func double(_ field: Int, _ v: Double) {
        key(field, 1)
        let b = v.bitPattern
        for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: b >> (8 * i))) }
    }
    /// float: wire type 5, 4 bytes little-endian.
    mutating func float(_ field: Int, _ v: Float) {
        key(field, 5)
        let b = v.bitPattern
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: b >> (8 * i))) }
    }
    /// repeated double, packed: one length-delimited run of 8-byte little-endian values.
    mutating func packedDoubles(_ field: Int, _ values: [Double]) {
        var data: [UInt8] = []
        data.reserveCapacity(8 * values.count)
        for v in values { for i in 0..<8 { data.append(UInt8(truncatingIfNeeded: v.bitPattern >> (8 * i))) } }
        lengthDelimited(field, data)
    }
    /// string, bytes and messages: wire type 2, length-delimited.
    mutating func string(_ field: Int, _ s: String) { lengthDelimited(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ m: Protobuf) { lengthDelimited(field, m.bytes) }
    private mutating func lengthDelimited(_ field: Int, _ data: [UInt8]) {
        key(field, 2); varint(UInt64(data.count)); bytes += data
    }
}

/// A run's TensorBoard logs in Keras's layout: `train/`, `validation/` and `test/` folders
/// with the same tags (`epoch_loss`, `epoch_accuracy`), so TensorBoard draws one chart per
/// metric with a line per split. The x axis is the global step, which does not depend on
/// the world size; epoch metrics sit at the step that ended the epoch.
public final class TensorBoardLog {
    public let directory: String
    let startStep: Int
    private var writers: [String: TensorBoardWriter] = [:]
    private var order: [String] = []

    /// `globalStep` is where this attempt starts: 0 for a fresh run, the checkpoint's global
    /// step on resume. Events an earlier attempt logged after it are dropped by TensorBoard,
    /// so a requeued run shows each step once.
    public init(directory: String, globalStep: Int) {
        self.directory = directory
        startStep = globalStep
    }

    /// The splits' event files (`""`: the log folder itself), created on first use.
    func writer(_ split: String) throws -> TensorBoardWriter {
        if let w = writers[split] { return w }
        let w = try TensorBoardWriter(directory: split.isEmpty ? directory : directory + "/" + split)
        w.sessionStart(step: startStep + 1)
        writers[split] = w; order.append(split)
        return w
    }

    /// Logs an epoch's metrics (learning rate under train; test only when it was evaluated) and flushes.
    public func epoch(_ m: EpochMetrics) throws {
        try writer("train").scalars([("epoch_loss", m.trainLoss), ("epoch_accuracy", m.trainAccuracy),
                                     ("epoch_learning_rate", m.learningRate)], step: m.globalStep)
        if let vl = m.valLoss, let va = m.valAccuracy {
            try writer("validation").scalars([("epoch_loss", vl), ("epoch_accuracy", va)], step: m.globalStep)
        }
        if let tl = m.testLoss, let ta = m.testAccuracy { try test(step: m.globalStep, loss: tl, accuracy: ta) }
        try flush()
    }

    /// The test set's loss and accuracy at `step` (the run's end, unless `--test-every-epoch`).
    public func test(step: Int, loss: Double, accuracy: Double) throws {
        try writer("test").scalars([("epoch_loss", loss), ("epoch_accuracy", accuracy)], step: step)
    }

    /// Logs the training loss and accuracy (e.g. the running epoch averages) after global
    /// step `step`; buffered until the next `flush()` or `epoch(_:)`.
    public func batch(step: Int, loss: Double, accuracy: Double, learningRate: Double? = nil,
                      imagesPerSecond: Double? = nil, allReduceShare: Double? = nil) throws {
        var values = [("batch_loss", loss), ("batch_accuracy", accuracy)]
        if let learningRate { values.append(("batch_learning_rate", learningRate)) }
        if let imagesPerSecond { values.append(("batch_images_per_second", imagesPerSecond)) }
        if let allReduceShare { values.append(("batch_all_reduce_share", allReduceShare)) }
        try writer("train").scalars(values, step: step)
    }

    /// Histograms of the weights under train/ at `step` (Keras's `histogram_freq=1`, one per
    /// epoch), tagged with the tensors' checkpoint names.
    public func weights(step: Int, _ tensors: [(name: String, values: UnsafeBufferPointer<Float>)]) throws {
        let w = try writer("train")
        for t in tensors { w.histogram(t.name, t.values, step: step) }
    }

    /// The run's hyperparameters for TensorBoard's HParams tab, in the log folder itself (the
    /// session whose metrics are the train/ and validation/ scalars below it).
    public func hparams(_ values: [(String, TensorBoardWriter.HParam)], startTime: Double) throws {
        try writer("").hparamsSessionStart(values, startTime: startTime)
        try flush()
    }

    /// Ends the HParams session (`success`: the run ended by itself, not by a signal or error).
    public func hparamsEnd(success: Bool, step: Int) throws {
        guard writers[""] != nil else { return }
        try writer("").hparamsSessionEnd(success: success, endTime: Date().timeIntervalSince1970, step: step)
        try flush()
    }

    /// Throughput figures of an epoch, under train/.
    public func epochSpeed(step: Int, imagesPerSecond: Double, allReduceShare: Double) throws {
        try writer("train").scalars([("epoch_images_per_second", imagesPerSecond),
                                     ("epoch_all_reduce_share", allReduceShare)], step: step)
    }

    public func flush() throws {
        for split in order { try writers[split]!.flush() }
    }
}
