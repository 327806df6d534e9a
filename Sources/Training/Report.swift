import Collective
import Data
import Engine
import Foundation

/// What `RUN_DIR/report.json` holds: the final test evaluation's confusion matrix and the
/// misclassified test images (by index into the test set of `data`), so `report.html` can be
/// rebuilt from the run folder and the data set alone.
public struct RunReportData: Codable, Sendable, Equatable {
    /// confusion[true][predicted]
    public var confusion: [[Int]]
    public var mistakes: [Misclassification]
    /// The data folder whose test set the indices refer to.
    public var data: String
    public var title: String
    /// Who ran what, where and when; nil in reports written before it was recorded.
    public var run: RunFacts?
    public init(confusion: [[Int]], mistakes: [Misclassification], data: String, title: String, run: RunFacts? = nil) {
        self.confusion = confusion; self.mistakes = mistakes; self.data = data; self.title = title; self.run = run
    }
}

/// What a reader needs to trust a report: the command, the program's version, when and where
/// it ran, every setting of the run, and where this attempt's wall time went.
public struct RunFacts: Codable, Sendable, Equatable {
    public var commandLine: [String]
    public var version: String
    /// ISO 8601, UTC.
    public var started: String, ended: String
    /// This attempt continued from a checkpoint (its times are this attempt's alone).
    public var resumed: Bool
    public var hosts: [HostRanks]
    /// Every setting, as (name, value) in a fixed order; names as the flags spell them.
    public var configuration: [[String]]
    /// This attempt: all of it, set-up (data, agreement, restore), training steps, evaluation.
    public var wallSeconds: Double, startUpSeconds: Double, trainingSeconds: Double, evaluationSeconds: Double

    public struct HostRanks: Codable, Sendable, Equatable {
        public var host: String, ranks: Int
    }

    enum CodingKeys: String, CodingKey {
        case commandLine = "command_line", version, started, ended, resumed, hosts, configuration
        case wallSeconds = "wall_seconds", startUpSeconds = "start_up_seconds", trainingSeconds = "training_seconds"
        case evaluationSeconds = "evaluation_seconds"
    }

    public init(commandLine: [String], version: String, started: Date, ended: Date, resumed: Bool, hosts: [HostRanks],
                configuration: [[String]], wallSeconds: Double, startUpSeconds: Double, trainingSeconds: Double,
                evaluationSeconds: Double) {
        let iso = ISO8601DateFormatter()
        self.commandLine = commandLine; self.version = version
        self.started = iso.string(from: started); self.ended = iso.string(from: ended); self.resumed = resumed
        self.hosts = hosts; self.configuration = configuration
        self.wallSeconds = wallSeconds; self.startUpSeconds = startUpSeconds; self.trainingSeconds = trainingSeconds
        self.evaluationSeconds = evaluationSeconds
    }

    /// Hosts in the order of their first rank, with how many ranks each ran.
    public static func ranksPerHost(_ hosts: [String]) -> [HostRanks] {
        var out: [HostRanks] = []
        for h in hosts {
            if let i = out.firstIndex(where: { $0.host == h }) { out[i].ranks += 1 } else { out.append(HostRanks(host: h, ranks: 1)) }
        }
        return out
    }

    /// Every field of `config` (nested ones as `adam.beta1`; the model by name), with names
    /// in the flags' spelling, then the run options that shape how it ran.
    static func rows(_ config: TrainConfig, options: RunOptions, threads: Int) -> [[String]] {
        var rows: [[String]] = []
        func add(_ name: String, _ value: Any) {
            let mirror = Mirror(reflecting: value)
            if mirror.displayStyle == .optional {
                if let some = mirror.children.first { add(name, some.value) } else { rows.append([name, "none"]) }
            } else if let raw = value as? any RawRepresentable {
                rows.append([name, "\(raw.rawValue)"])
            } else if mirror.displayStyle == .struct, !mirror.children.isEmpty {
                for child in mirror.children { add(name + "." + flagName(child.label ?? "?"), child.value) }
            } else {
                rows.append([name, "\(value)"])
            }
        }
        for child in Mirror(reflecting: config).children {
            let name = flagName(child.label ?? "?")
            if child.label == "model" { rows.append(["model", "\(config.model.name)"]); continue }
            add(name, child.value)
        }
        rows += [["threads-per-rank", "\(threads)"], ["test-every-epoch", "\(options.testEveryEpoch)"],
                 ["checkpoint-every", options.checkpointEvery.map(String.init) ?? "each epoch"], ["keep", "\(options.keep)"],
                 ["log-every", "\(options.logEvery)"], ["run-dir", options.runDirectory]]
        return rows
    }

    /// `batchSize` → `batch-size`.
    static func flagName(_ label: String) -> String {
        var out = ""
        for ch in label {
            if ch.isUppercase { out += "-" + ch.lowercased() } else { out.append(ch) }
        }
        return out
    }
}

/// A report that cannot be built: which file, and why, in one line.
public struct ReportError: Error, CustomStringConvertible {
    public var path: String, reason: String
    public var description: String { "\(path): \(reason)" }
}

/// `report.html`: one self-contained page (inline CSS and SVG, images as data URIs, no
/// scripts, nothing fetched) with the learning curves, the confusion matrix and the
/// misclassified test images of a run.
public enum RunReport {
    public typealias Mistake = (image: [UInt8], height: Int, width: Int, label: Int, predicted: Int, confidence: Double)

    /// The page for a run's history, final confusion matrix (rows: true class) and mistakes
    /// (images (H, W, C) bytes, C = image.count / (H·W)), with `summary` as a key–value table.
    public static func html(history: [EpochMetrics], confusion: [[Int]], mistakes: [Mistake], title: String,
                            summary: [(String, String)], run: RunFacts? = nil) -> String {
        var out = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(escape(title))</title>
            <style>\(css)</style>
            </head>
            <body>
            <h1>\(escape(title))</h1>

            """
        if !summary.isEmpty {
            out += "<table class=\"summary\">\n"
            for (k, v) in summary { out += "<tr><th>\(escape(k))</th><td>\(escape(v))</td></tr>\n" }
            out += "</table>\n"
        }
        if let run { out += factsSection(run) }

        out += "<h2>Learning curves</h2>\n"
        if history.isEmpty {
            out += "<p class=\"none\">No epoch has finished yet.</p>\n"
        } else {
            func series(_ name: String, _ color: String, _ value: (EpochMetrics) -> Double?) -> Chart.Series {
                Chart.Series(name: name, color: color, points: history.map { (Double($0.epoch), value($0)) })
            }
            let loss = [series("train", Chart.train, { $0.trainLoss }), series("validation", Chart.validation, { $0.valLoss }),
                        series("test", Chart.test, { $0.testLoss })]
            let accuracy = [series("train", Chart.train, { $0.trainAccuracy }),
                            series("validation", Chart.validation, { $0.valAccuracy }),
                            series("test", Chart.test, { $0.testAccuracy })]
            out += "<div class=\"charts\">\n"
            out += Chart(title: "Loss", series: loss, percent: false).svg() + "\n"
            out += Chart(title: "Accuracy", series: accuracy, percent: true).svg() + "\n"
            out += "</div>\n"
        }

        out += "<h2>Confusion matrix</h2>\n"
        out += confusion.isEmpty ? "<p class=\"none\">Not available: the run has not written report.json (it is written when a run ends).</p>\n"
                                 : confusionTable(confusion)

        out += "<h2>Misclassified test images</h2>\n"
        if mistakes.isEmpty {
            out += "<p class=\"none\">\(confusion.isEmpty ? "Not available." : "None to show.")</p>\n"
        } else {
            out += "<p class=\"note\">\(mistakes.count) shown, as true class → predicted class (softmax probability of the prediction).</p>\n"
            out += "<div class=\"mistakes\">\n"
            for m in mistakes { out += mistakeFigure(m) + "\n" }
            out += "</div>\n"
        }
        if let run { out += configurationSection(run) }
        out += "<footer>Written by <code>distcnn report</code>.</footer>\n</body>\n</html>\n"
        return out
    }

    // MARK: From a run folder

    /// Rebuilds `RUN_DIR/report.html` from `metrics.csv`, `report.json` (confusion matrix and
    /// mistakes; optional, so a run in progress gets its curves) and `summary.json` (optional),
    /// loading the mistakes' images from the test set of `dataDirectory` (default: the
    /// folder report.json names). Returns the path written.
    @discardableResult
    public static func write(runDirectory: String, dataDirectory: String? = nil) throws -> String {
        try write(runDirectory: runDirectory, dataDirectory: dataDirectory, testSet: nil, history: nil)
    }

    /// Writes `RUN_DIR/report.json` and then `report.html`. A run passes its `history` and its
    /// `testSet` (as loaded), so nothing it has in memory is read back from the folder.
    @discardableResult
    public static func save(_ data: RunReportData, runDirectory: String, history: [EpochMetrics]? = nil,
                            testSet: Dataset? = nil) throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(Array(try enc.encode(data)) + [0x0A], to: runDirectory + "/report.json")
        return try write(runDirectory: runDirectory, dataDirectory: nil, testSet: testSet, history: history)
    }

    static func write(runDirectory dir: String, dataDirectory: String?, testSet: Dataset?, history: [EpochMetrics]?) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw ReportError(path: dir, reason: "no such run folder")
        }
        let history = try history ?? readMetrics(path: dir + "/metrics.csv")
        let reportPath = dir + "/report.json"
        var data: RunReportData?
        if FileManager.default.fileExists(atPath: reportPath) {
            data = try decodeReport(try readRunFile(reportPath, what: "report"), path: reportPath)
        }
        var mistakes: [Mistake] = []
        if let data, !data.mistakes.isEmpty {
            let test: Dataset
            if let testSet, dataDirectory == nil { test = testSet } else {
                test = try loadTestSet(directory: dataDirectory ?? data.data, reportPath: reportPath)
            }
            for m in data.mistakes {
                guard m.index >= 0 && m.index < test.count else {
                    throw ReportError(path: reportPath, reason: "mistake index \(m.index) is outside the \(test.count) test images of \(dataDirectory ?? data.data); pass the run's data folder with --data")
                }
                guard Int(test.labels[m.index]) == m.label else {
                    throw ReportError(path: reportPath, reason: "test image \(m.index) has label \(test.labels[m.index]) in \(dataDirectory ?? data.data), not \(m.label): not the data set the run was evaluated on; pass it with --data")
                }
                mistakes.append((Array(test.image(m.index)), test.height, test.width, m.label, m.predicted, m.confidence))
            }
        }
        let title = data?.title ?? URL(fileURLWithPath: dir).standardized.lastPathComponent
        let summaryPath = dir + "/summary.json"
        let summary = FileManager.default.fileExists(atPath: summaryPath) ? try readRunFile(summaryPath, what: "summary") : nil
        let page = html(history: history, confusion: data?.confusion ?? [], mistakes: mistakes, title: title,
                        summary: try summaryRows(summary: summary, path: summaryPath, history: history), run: data?.run)
        let path = dir + "/report.html"
        try AtomicFile.write(page, to: path)
        return path
    }

    public static func loadTestSet(directory: String, reportPath: String) throws -> Dataset {
        do {
            guard let images = MNISTFiles.locate(base: MNISTFiles.testImages, in: directory),
                  let labels = MNISTFiles.locate(base: MNISTFiles.testLabels, in: directory) else {
                throw ReportError(path: directory, reason: "no \(MNISTFiles.testImages)[.gz] and \(MNISTFiles.testLabels)[.gz] here")
            }
            return try MNISTFiles.loadPair(images: images, labels: labels, classes: 256)
        } catch {
            throw ReportError(path: reportPath, reason: "cannot load the test images of the misclassified examples: \(error); pass the data folder with --data")
        }
    }

    /// The largest run file (`metrics.csv`, `report.json`, `summary.json`) read.
    static let maxRunFileSize = 64 << 20

    /// A run file's bytes: a regular file within `maxRunFileSize`, else one line.
    static func readRunFile(_ path: String, what: String) throws -> [UInt8] {
        do { return try FileReader.contents(of: path, limit: maxRunFileSize, what: what) } catch let e as DataError {
            throw ReportError(path: path, reason: ioProblem(e, what: what))
        }
    }

    /// Epochs, global steps and confusion counts have these ranges wherever they are read.
    static let epochRange = 0...Int(Int32.max), stepRange = 0...(1 << 48), countRange = 0...(1 << 40)

    /// A number read from a run file that must be a whole number within `range`.
    static func wholeNumber(_ v: Double, _ range: ClosedRange<Int>, _ what: String, path: String) throws -> Int {
        guard v.isFinite, v == v.rounded(), v >= Double(range.lowerBound), v <= Double(range.upperBound) else {
            throw ReportError(path: path, reason: "\(what) is \(v), not a whole number in \(range.lowerBound)...\(range.upperBound)")
        }
        return Int(v)
    }

    /// Checks `report.json`'s bytes: a RunReportData whose confusion matrix has at most 256
    /// classes of counts within `countRange`, and mistakes within it.
    public static func decodeReport(_ bytes: [UInt8], path: String) throws -> RunReportData {
        let data: RunReportData
        do { data = try JSONDecoder().decode(RunReportData.self, from: Data(bytes)) } catch {
            throw ReportError(path: path, reason: "not a distcnn report file (\(jsonReason(error)))")
        }
        let m = data.confusion
        guard m.count <= 256, m.allSatisfy({ $0.count <= 256 }) else {
            throw ReportError(path: path, reason: "the confusion matrix is \(m.count)×\(m.map(\.count).max() ?? 0), more than the 256×256 classes accepted")
        }
        for (t, row) in m.enumerated() {
            if let p = row.firstIndex(where: { !countRange.contains($0) }) {
                throw ReportError(path: path, reason: "confusion[\(t)][\(p)] is \(row[p]), outside \(countRange.lowerBound)...\(countRange.upperBound)")
            }
        }
        guard data.mistakes.count <= 100_000 else {
            throw ReportError(path: path, reason: "\(data.mistakes.count) mistakes listed, more than the 100000 accepted")
        }
        for (i, x) in data.mistakes.enumerated() {
            guard (0...255).contains(x.label), (0...255).contains(x.predicted), x.confidence.isFinite, (0...1).contains(x.confidence) else {
                throw ReportError(path: path, reason: "mistake \(i) has label \(x.label), predicted \(x.predicted), confidence \(x.confidence): labels must be in 0...255 and the confidence in 0...1")
            }
        }
        if let run = data.run {
            for (name, v) in [("wall_seconds", run.wallSeconds), ("start_up_seconds", run.startUpSeconds),
                              ("training_seconds", run.trainingSeconds), ("evaluation_seconds", run.evaluationSeconds)] {
                guard v.isFinite, (0...1e9).contains(v) else {
                    throw ReportError(path: path, reason: "run.\(name) is \(v), outside 0...1e9")
                }
            }
            guard run.commandLine.count <= 10_000, run.configuration.count <= 10_000, run.hosts.count <= 1 << 20 else {
                throw ReportError(path: path, reason: "run lists \(run.commandLine.count) arguments, \(run.configuration.count) settings and \(run.hosts.count) hosts; at most 10000, 10000 and 1048576 are accepted")
            }
        }
        return data
    }

    /// The epochs of `metrics.csv` (as `RunFiles.writeMetrics` writes it; columns found by name).
    public static func readMetrics(path: String) throws -> [EpochMetrics] {
        guard FileManager.default.fileExists(atPath: path) else {
            throw ReportError(path: path, reason: "not found: not a run folder, or no epoch has finished")
        }
        return try parseMetrics(try readRunFile(path, what: "metrics"), path: path)
    }

    /// Parses `metrics.csv`'s bytes: epochs are whole numbers in `epochRange`, global steps in
    /// `stepRange`; metrics may be any number (nan and inf included: the charts leave them out).
    public static func parseMetrics(_ bytes: [UInt8], path: String) throws -> [EpochMetrics] {
        let text = String(decoding: bytes, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        guard let header = lines.first, !header.isEmpty else { throw ReportError(path: path, reason: "empty file, no header line") }
        let columns = header.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let required = ["epoch", "train_loss", "train_accuracy"]
        let missing = required.filter { !columns.contains($0) }
        guard missing.isEmpty else {
            throw ReportError(path: path, reason: "the header lacks \(missing.joined(separator: ", ")) (has \(columns.joined(separator: ",")))")
        }
        var history: [EpochMetrics] = []
        for (n, line) in lines.enumerated().dropFirst() where !line.isEmpty {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == columns.count else {
                throw ReportError(path: path, reason: "line \(n + 1) has \(fields.count) fields, the header \(columns.count)")
            }
            func value(_ name: String) throws -> Double? {
                guard let i = columns.firstIndex(of: name), !fields[i].isEmpty else { return nil }
                guard let v = Double(fields[i]) else {
                    throw ReportError(path: path, reason: "line \(n + 1): \(name) is '\(fields[i].prefix(40))', not a number")
                }
                return v
            }
            func need(_ name: String) throws -> Double {
                guard let v = try value(name) else { throw ReportError(path: path, reason: "line \(n + 1): \(name) is empty") }
                return v
            }
            history.append(EpochMetrics(
                epoch: try wholeNumber(try need("epoch"), epochRange, "line \(n + 1): epoch", path: path),
                globalStep: try wholeNumber(try value("global_step") ?? 0, stepRange, "line \(n + 1): global_step", path: path),
                trainLoss: try need("train_loss"), trainAccuracy: try need("train_accuracy"),
                valLoss: try value("val_loss"), valAccuracy: try value("val_accuracy"),
                testLoss: try value("test_loss"), testAccuracy: try value("test_accuracy"),
                learningRate: try value("learning_rate") ?? .nan, seconds: try value("seconds") ?? .nan,
                imagesPerSecond: try value("images_per_second"), evaluationSeconds: try value("evaluation_seconds"),
                partial: try value("partial").map { $0 != 0 }))
        }
        return history
    }

    /// Key facts for the page's header, from `summary.json` when the run has ended (its bytes,
    /// nil when there is none), else from the history. A summary that is not a JSON object, or
    /// a number in it outside its range, is refused with one line.
    public static func summaryRows(summary bytes: [UInt8]?, path: String, history: [EpochMetrics]) throws -> [(String, String)] {
        var rows: [(String, String)] = []
        var json: [String: Any]?
        if let bytes {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
                throw ReportError(path: path, reason: "not a JSON object (not a distcnn summary file)")
            }
            json = object
        }
        func number(_ key: String) -> Double? {
            (json?[key] as? NSNumber)?.doubleValue
        }
        func whole(_ key: String, _ range: ClosedRange<Int>) throws -> String? {
            try number(key).map { String(try wholeNumber($0, range, key, path: path)) }
        }
        func real(_ key: String, _ range: ClosedRange<Double>) throws -> Double? {
            guard let v = number(key) else { return nil }
            guard v.isFinite, range.contains(v) else {
                throw ReportError(path: path, reason: "\(key) is \(v), outside \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        func percent(_ v: Double?) -> String? { v.map { String(format: "%.2f%%", $0 * 100) } }
        func fixed(_ v: Double?) -> String? { v.map { String(format: "%.4f", $0) } }
        func add(_ key: String, _ value: String?) { if let value { rows.append((key, value)) } }
        let loss = -1e12...1e12
        // Per-epoch throughput: the median is what an epoch typically ran at; the range shows
        // how much the epochs differed.
        let rates = history.compactMap { $0.imagesPerSecond }.filter { $0.isFinite && $0 >= 0 && $0 <= 1e12 }.sorted()
        var perEpoch: String?
        if let lo = rates.first, let hi = rates.last {
            let median = rates.count % 2 == 1 ? rates[rates.count / 2] : (rates[rates.count / 2 - 1] + rates[rates.count / 2]) / 2
            perEpoch = rates.count == 1 ? String(format: "%.0f (1 epoch)", median)
                : String(format: "median %.0f, range %.0f–%.0f over %d epochs", median, lo, hi, rates.count)
        }
        if let json {
            add("model", json["model"] as? String)
            add("ranks", try whole("world_size", 1...(1 << 20)))
            add("epochs", try whole("epochs_run", epochRange))
            add("global steps", try whole("global_steps", stepRange))
            add("ended by", json["ended_by"] as? String)
            add("best epoch", try whole("best_epoch", epochRange))
            add("test accuracy", percent(try real("test_accuracy", 0...1)))
            add("test loss", fixed(try real("test_loss", loss)))
            add("validation accuracy", percent(try real("val_accuracy", 0...1)))
            add("validation loss", fixed(try real("val_loss", loss)))
            add("training images/s per epoch", perEpoch)
            add("training images/s, all steps", try real("images_per_second", 0...1e12).map { String(format: "%.0f", $0) })
            add("wall time from the first step, all attempts", try real("train_seconds", 0...1e9).map(formatDuration))
            add("weights SHA-256", (json["weights_sha256"] as? String).map { String($0.prefix(16)) + "…" })
            if let partial = history.last, partial.partial == true {
                add("stopped within", "epoch \(partial.epoch), at global step \(partial.globalStep) (its row covers the steps taken)")
            }
        } else if let last = history.last {
            add("status", "in progress or interrupted (no summary.json)")
            add("epochs", String(history.count))
            add("validation accuracy (last epoch)", percent(last.valAccuracy))
            add("validation loss (last epoch)", fixed(last.valLoss))
            add("test accuracy (last epoch)", percent(last.testAccuracy))
            add("test loss (last epoch)", fixed(last.testLoss))
            add("training images/s per epoch", perEpoch)
        }
        return rows
    }

    /// The run's facts: the command, version, dates, hosts, where the wall time went.
    static func factsSection(_ run: RunFacts) -> String {
        var out = "<h2>Run</h2>\n<table class=\"summary\">\n"
        func row(_ k: String, _ v: String, code: Bool = false) {
            out += "<tr><th>\(escape(k))</th><td>\(code ? "<code>\(escape(v))</code>" : escape(v))</td></tr>\n"
        }
        row("command", run.commandLine.map(shellQuoted).joined(separator: " "), code: true)
        row("version", run.version.isEmpty ? "not recorded in this build" : run.version)
        row("started", run.started)
        row("ended", run.ended)
        row("hosts", run.hosts.map { "\($0.host) (\($0.ranks) rank\($0.ranks == 1 ? "" : "s"))" }.joined(separator: ", "))
        let other = max(run.wallSeconds - run.startUpSeconds - run.trainingSeconds - run.evaluationSeconds, 0)
        row(run.resumed ? "wall time of this attempt (resumed)" : "wall time",
            "\(formatDuration(run.wallSeconds)): start-up \(formatDuration(run.startUpSeconds)), training steps "
            + "\(formatDuration(run.trainingSeconds)), evaluation \(formatDuration(run.evaluationSeconds)), "
            + "checkpoints and files \(formatDuration(other))")
        return out + "</table>\n"
    }

    /// Every setting of the run, in columns.
    static func configurationSection(_ run: RunFacts) -> String {
        var out = "<h2>Configuration</h2>\n<div class=\"config\">\n"
        for pair in run.configuration where pair.count == 2 {
            out += "<div><span class=\"k\">\(escape(pair[0]))</span> \(escape(pair[1]))</div>\n"
        }
        return out + "</div>\n"
    }

    /// An argument as a shell would need it written.
    static func shellQuoted(_ s: String) -> String {
        let plain = s.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,@+%".contains($0) }
        return plain && !s.isEmpty ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func jsonReason(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "no '\(key.stringValue)'"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "wrong type at \(c.codingPath.map(\.stringValue).joined(separator: "."))"
        case DecodingError.dataCorrupted: return "not valid JSON"
        default: return "\(error)"
        }
    }

    // MARK: Page parts

    static func confusionTable(_ m: [[Int]]) -> String {
        let k = m.count
        let total = m.joined().reduce(0, +)
        let correct = (0..<k).reduce(0) { $0 + (m[$1].count > $1 ? m[$1][$1] : 0) }
        var maxOff = 0
        for t in 0..<k { for (p, c) in m[t].enumerated() where p != t { maxOff = max(maxOff, c) } }
        let columns = m.map(\.count).max() ?? 0
        var out = "<table class=\"confusion\">\n<caption>Rows: true class; columns: predicted class. "
        out += String(format: "Accuracy %.2f%% of %d.", total > 0 ? Double(correct) / Double(total) * 100 : 0, total)
        out += "</caption>\n<thead><tr><th class=\"corner\">true \\ predicted</th>"
        for p in 0..<columns { out += "<th>\(p)</th>" }
        out += "<th class=\"margin\">recall</th></tr></thead>\n<tbody>\n"
        for (t, row) in m.enumerated() {
            let rowSum = row.reduce(0, +)
            out += "<tr><th>\(t)</th>"
            for p in 0..<columns {
                let c = p < row.count ? row[p] : 0
                // Diagonal: share of the class recognised (blue). Off the diagonal: errors,
                // scaled to the worst confusion so that small ones stay visible (red).
                let a = p == t ? (rowSum > 0 ? Double(c) / Double(rowSum) : 0)
                               : (maxOff > 0 ? (Double(c) / Double(maxOff)).squareRoot() * 0.85 : 0)
                if c == 0 {
                    out += "<td class=\"zero\">0</td>"
                } else {
                    let rgb = p == t ? "31,119,180" : "214,39,40"
                    let text = a > 0.5 ? ";color:#fff" : ""
                    out += String(format: "<td style=\"background:rgba(%@,%.3f)%@\" title=\"true %d, predicted %d: %d\">%d</td>",
                                  rgb, max(a, 0.06), text, t, p, c, c)
                }
            }
            let recall = t < row.count && rowSum > 0 ? String(format: "%.1f%%", Double(row[t]) / Double(rowSum) * 100) : "–"
            out += "<td class=\"margin\">\(recall)</td></tr>\n"
        }
        out += "<tr><th class=\"margin\">precision</th>"
        for p in 0..<columns {
            let colSum = m.reduce(0) { $0 + (p < $1.count ? $1[p] : 0) }
            let hit = p < k && p < m[p].count ? m[p][p] : 0
            out += "<td class=\"margin\">" + (colSum > 0 ? String(format: "%.1f%%", Double(hit) / Double(colSum) * 100) : "–") + "</td>"
        }
        out += "<td class=\"margin\"></td></tr>\n</tbody>\n</table>\n"
        return out
    }

    static func mistakeFigure(_ m: Mistake) -> String {
        let channels = max(1, m.image.count / max(m.height * m.width, 1))
        let scale = max(1, 96 / max(m.height, m.width))
        let png = PNG.encode(pixels: m.image, height: m.height, width: m.width, channels: channels)
        let p = String(format: "%.2f", m.confidence)
        return "<figure><img src=\"data:image/png;base64,\(Data(png).base64EncodedString())\" width=\"\(m.width * scale)\" "
            + "height=\"\(m.height * scale)\" alt=\"true \(m.label), predicted \(m.predicted)\">"
            + "<figcaption>\(m.label) → \(m.predicted) <span class=\"p\">(p=\(p))</span></figcaption></figure>"
    }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }

    static let css = """

        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; color: #222;
               max-width: 1180px; margin: 24px auto; padding: 0 16px; background: #fff; }
        h1 { font-size: 22px; margin: 0 0 12px; }
        h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
        table.summary { border-collapse: collapse; }
        table.summary th, table.summary td { text-align: left; padding: 1px 18px 1px 0; vertical-align: top; }
        table.summary th { font-weight: 600; color: #555; }
        table.summary code { font-size: 13px; word-break: break-all; }
        .config { columns: 3 250px; column-gap: 28px; font-size: 13px; }
        .config div { break-inside: avoid; padding: 1px 0; }
        .config .k { font-weight: 600; color: #555; }
        .charts { display: flex; flex-wrap: wrap; gap: 16px; }
        .charts svg { border: 1px solid #e3e3e3; border-radius: 4px; max-width: 100%; height: auto; }
        table.confusion { border-collapse: collapse; font-variant-numeric: tabular-nums; }
        table.confusion caption { caption-side: bottom; text-align: left; color: #666; padding-top: 6px; }
        table.confusion th, table.confusion td { min-width: 42px; height: 28px; padding: 1px 6px; text-align: center;
                                                 border: 1px solid #fff; }
        table.confusion th { background: #f1f1f1; font-weight: 600; }
        table.confusion th.corner { font-weight: 400; color: #666; font-size: 12px; }
        table.confusion td.zero { color: #c4c4c4; }
        table.confusion .margin { background: #f8f8f8; color: #555; font-size: 12px; }
        .mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(108px, 1fr)); gap: 10px; }
        .mistakes figure { margin: 0; padding: 6px 4px; text-align: center; background: #f8f8f8; border: 1px solid #eee;
                           border-radius: 4px; }
        .mistakes img { display: block; margin: 0 auto 4px; image-rendering: crisp-edges; image-rendering: pixelated; }
        .mistakes figcaption { font-size: 13px; }
        .mistakes .p { color: #777; font-size: 12px; }
        .none, .note { color: #666; }
        .none { font-style: italic; }
        footer { margin-top: 32px; color: #999; font-size: 12px; }

        """
}

// MARK: Line charts

/// An SVG line chart of values against epochs, with axes, grid, legend and a tooltip per
/// point. Missing values (nil) break a line.
struct Chart {
    struct Series { var name: String, color: String, points: [(x: Double, y: Double?)] }
    static let train = "#1f77b4", validation = "#ff7f0e", test = "#2ca02c"

    var title: String
    var series: [Series]
    /// Values in 0…1 shown as percentages; the y axis then fits the data, else it starts at 0.
    var percent: Bool
    var width = 540.0, height = 320.0
    let left = 62.0, right = 18.0, top = 40.0, bottom = 46.0

    /// Values beyond this magnitude are left out like nan and inf: no loss or accuracy is that
    /// large, and axes spanning ±1e308 have no ticks a reader could use.
    static let plottable = 1e12

    static func drawn(_ v: Double?) -> Double? { v.flatMap { $0.isFinite && abs($0) <= plottable ? $0 : nil } }

    func svg() -> String {
        let shown = series.filter { $0.points.contains { Chart.drawn($0.y) != nil } }
        let ys = shown.flatMap { $0.points.compactMap { Chart.drawn($0.y) } }
        let xs = series.flatMap { $0.points.map(\.x) }.filter { $0.isFinite && abs($0) <= Chart.plottable }
        let plotW = width - left - right, plotH = height - top - bottom
        var out = String(format: "<svg viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" role=\"img\" aria-label=\"%@\" font-family=\"system-ui, sans-serif\" font-size=\"12\">\n",
                         width, height, width, height, RunReport.escape(title + " by epoch"))
        out += String(format: "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", width, height)
        out += "<text x=\"\(left)\" y=\"22\" font-size=\"15\" font-weight=\"600\" fill=\"#222\">\(RunReport.escape(title))</text>\n"
        guard let xMin = xs.min(), let xMax = xs.max(), let yLo = ys.min(), let yHi = ys.max() else {
            return out + "<text x=\"\(left)\" y=\"\(top + 20)\" fill=\"#777\">no values</text>\n</svg>"
        }

        // Axes: whole epochs on x; rounded ticks on y.
        let (x0, x1) = xMin == xMax ? (xMin - 1, xMax + 1) : (xMin, xMax)
        let xStep = max(1, Chart.niceStep((x1 - x0) / 8).rounded(.up))
        var (y0, y1) = percent ? (yLo, yHi) : (min(0, yLo), yHi)
        if y1 - y0 < 1e-9 { let pad = max(abs(y1) * 0.05, 1e-3); y0 -= pad; y1 += pad }
        let yStep = Chart.niceStep((y1 - y0) / 5)
        y0 = (y0 / yStep).rounded(.down) * yStep
        y1 = (y1 / yStep).rounded(.up) * yStep
        if percent, yHi <= 1, y1 > 1 { y1 = 1 }
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * plotW }
        func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * plotH }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }

        let decimals = max(0, Int((-log10(yStep * (percent ? 100 : 1))).rounded(.up)))
        // Ticks by index, so that no rounding can keep the loop from ending.
        let yTicks = min(50, Int(((y1 - y0) / yStep).rounded()))
        for i in 0...max(0, yTicks) {
            let y = y0 + Double(i) * yStep
            out += "<line x1=\"\(f(left))\" x2=\"\(f(left + plotW))\" y1=\"\(f(py(y)))\" y2=\"\(f(py(y)))\" stroke=\"#e8e8e8\"/>\n"
            let label = percent ? String(format: "%.\(decimals)f%%", y * 100) : String(format: "%.\(decimals)f", y)
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\" fill=\"#555\">\(label)</text>\n"
        }
        let xFirst = (x0 / xStep).rounded(.up) * xStep
        let xTicks = min(50, Int(((x1 - xFirst) / xStep).rounded(.down) + 1e-9))
        for i in 0...max(0, xTicks) {
            let x = xFirst + Double(i) * xStep
            guard x <= x1 + 1e-9 else { break }
            out += "<line x1=\"\(f(px(x)))\" x2=\"\(f(px(x)))\" y1=\"\(f(top + plotH))\" y2=\"\(f(top + plotH + 4))\" stroke=\"#888\"/>\n"
            out += "<text x=\"\(f(px(x)))\" y=\"\(f(top + plotH + 17))\" text-anchor=\"middle\" fill=\"#555\">\(Int(x))</text>\n"
        }
        out += "<polyline points=\"\(f(left)),\(f(top)) \(f(left)),\(f(top + plotH)) \(f(left + plotW)),\(f(top + plotH))\" fill=\"none\" stroke=\"#888\"/>\n"
        out += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 8))\" text-anchor=\"middle\" fill=\"#444\">epoch</text>\n"

        // Lines (broken at missing values) and points with tooltips.
        for s in shown {
            var runs: [[(Double, Double)]] = [[]]
            for p in s.points {
                if let v = Chart.drawn(p.y), Chart.drawn(p.x) != nil { runs[runs.count - 1].append((p.x, v)) } else if !runs.last!.isEmpty { runs.append([]) }
            }
            for run in runs where run.count > 1 {
                let pts = run.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
                out += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n"
            }
            for run in runs {
                for (px_, v) in run {
                    let shownValue = percent ? String(format: "%.2f%%", v * 100) : String(format: "%.4f", v)
                    out += "<circle cx=\"\(f(px(px_)))\" cy=\"\(f(py(v)))\" r=\"3\" fill=\"\(s.color)\"><title>\(s.name), epoch \(Int(px_)): \(shownValue)</title></circle>\n"
                }
            }
        }

        // Legend, right-aligned in the title row.
        var lx = width - right
        for s in shown.reversed() {
            lx -= Double(s.name.count) * 7 + 4
            out += "<text x=\"\(f(lx))\" y=\"22\" fill=\"#333\">\(RunReport.escape(s.name))</text>\n"
            lx -= 20
            out += "<line x1=\"\(f(lx))\" x2=\"\(f(lx + 16))\" y1=\"18\" y2=\"18\" stroke=\"\(s.color)\" stroke-width=\"3\"/>\n"
            lx -= 14
        }
        return out + "</svg>"
    }

    /// 1, 2 or 5 times a power of ten, at least `raw`.
    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        let n = raw / magnitude
        return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * magnitude
    }
}
