import Collective
import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Rank 0's voice: everything a run prints goes through here, and other ranks stay silent.
/// On a terminal the progress bar redraws in place (at most `RedrawLimiter.interval` apart,
/// sized to the terminal's width at each redraw); in a log file each update is a line.
public final class Console {
    public enum Level: Int, Comparable, Sendable {
        case quiet = 0, normal = 1, verbose = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public let enabled: Bool
    public let level: Level
    public let isTerminal: Bool
    /// The live line on screen now, redrawn after a warning; nil when none is.
    private(set) var shownProgress: String?
    private var limiter = RedrawLimiter()
    private let clock = Stopwatch()

    /// Progress display: `auto` draws a bar on a terminal; under mpirun, whose pseudo-terminal
    /// looks like one even when the job's output goes to a file, `auto` prints lines.
    public enum Progress: String, Sendable, CaseIterable { case auto, bar, lines }

    public init(enabled: Bool, level: Level = .normal, progress: Progress = .auto) {
        self.enabled = enabled; self.level = level
        switch progress {
        case .bar: isTerminal = true
        case .lines: isTerminal = false
        case .auto:
            isTerminal = isatty(STDOUT_FILENO) == 1 && !launchedByMPIRun()
        }
    }

    /// A line at `level` or below; it ends the live line (the next `progress` draws a new one).
    public func line(_ text: String, level: Level = .normal) {
        guard enabled, level <= self.level else { return }
        clearProgress()
        print(text)
        fflush(stdout)
    }

    /// The live progress line on a terminal, nothing elsewhere: `make` gets the terminal's
    /// width and is called only when a redraw is due (at most every `RedrawLimiter.interval`).
    public func progress(_ make: (_ columns: Int) -> String) {
        guard enabled, isTerminal, level >= .normal, limiter.due(at: clock.seconds) else { return }
        draw(make(Console.terminalColumns()))
    }

    private func draw(_ text: String) {
        print("\r\u{1B}[2K" + text, terminator: "")
        fflush(stdout)
        shownProgress = text
    }

    /// Removes the live line; the next redraw is due at once.
    func clearProgress() {
        if shownProgress != nil { print("\r\u{1B}[2K", terminator: ""); fflush(stdout); shownProgress = nil }
        limiter.reset()
    }

    /// Leaves the live line on screen as it is and moves below it (before an error is printed).
    public func endProgress() {
        if shownProgress != nil { print(""); fflush(stdout); shownProgress = nil }
        limiter.reset()
    }

    /// A warning on standard error on a line of its own: the live line is cleared first and
    /// drawn again after it.
    public func warning(_ text: String) {
        guard enabled else { Console.warning(text); return }
        let live = shownProgress
        if live != nil { print("\r\u{1B}[2K", terminator: ""); fflush(stdout) }
        Console.warning(text)
        if let live { draw(live) }
    }

    /// One line on standard error, from any rank (errors must not be lost).
    public static func error(_ text: String) {
        FileHandle.standardError.write(Data(("error: " + text + "\n").utf8))
    }

    public static func warning(_ text: String) {
        FileHandle.standardError.write(Data(("warning: " + text + "\n").utf8))
    }

    /// Standard output's width in columns (read anew each time, so a resized window is
    /// followed), else `$COLUMNS`, else 80.
    static func terminalColumns() -> Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
        if let c = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), c > 0 { return c }
        return 80
    }
}

/// Lets a redraw through when `interval` seconds have passed since the last one it let
/// through: a step every millisecond still redraws about ten times a second.
public struct RedrawLimiter: Sendable {
    public static let interval = 0.1
    private var last: Double?

    public init() {}

    /// Whether to redraw at time `now` (seconds on any monotonic clock); records it if so.
    public mutating func due(at now: Double) -> Bool {
        if let last, now - last < RedrawLimiter.interval { return false }
        last = now
        return true
    }

    /// The next call is due whatever the time.
    public mutating func reset() { last = nil }
}

/// What the progress bar shows after a step.
public struct ProgressFrame: Equatable, Sendable {
    public var epoch: Int, epochs: Int          // 1-based
    public var step: Int, steps: Int            // steps done in this epoch, of
    public var elapsed: Double                  // seconds in this epoch so far
    public var epochETA: Double?, runETA: Double?
    public var imagesPerSecond: Double
    public var loss: Double, accuracy: Double

    public init(epoch: Int, epochs: Int, step: Int, steps: Int, elapsed: Double, epochETA: Double?, runETA: Double?,
                imagesPerSecond: Double, loss: Double, accuracy: Double) {
        self.epoch = epoch; self.epochs = epochs; self.step = step; self.steps = steps; self.elapsed = elapsed
        self.epochETA = epochETA; self.runETA = runETA; self.imagesPerSecond = imagesPerSecond
        self.loss = loss; self.accuracy = accuracy
    }

    /// The line for a terminal `columns` wide, shorter than that so it never wraps: Keras's
    /// `[=====>......]` bar fills what the fields leave; when they do not fit, the least
    /// needed go first (throughput, the elapsed time, accuracy, the run's ETA, loss, the
    /// epoch's ETA), then the bar.
    public func line(columns: Int) -> String {
        let width = max(columns - 1, 1)   // the last column would make some terminals wrap
        let head = "\(epoch)/\(epochs) " + "\(step)/\(steps)".leftPadded(to: 2 * String(steps).count + 1)
        // (priority, text), in display order; the lowest priority is dropped first.
        var fields: [(Int, String)] = [
            (3, formatDuration(elapsed)),
            (7, "eta " + formatDuration(epochETA ?? .nan)),
            (5, "run eta " + formatDuration(runETA ?? .nan)),
            (6, String(format: "loss %.4f", loss)),
            (4, String(format: "acc %.4f", accuracy)),
            (2, String(format: "%.0f img/s", imagesPerSecond)),
        ]
        if runETA == nil { fields.removeAll { $0.0 == 5 } }
        let minBar = 10, maxBar = 32
        func text(bar: Int) -> String {
            var parts = [head]
            if bar > 0 { parts.append(ProgressFrame.bar(done: step, of: steps, width: bar)) }
            parts += fields.map(\.1)
            return parts.joined(separator: " ")
        }
        while text(bar: minBar).count > width, let lowest = fields.indices.min(by: { fields[$0].0 < fields[$1].0 }) {
            fields.remove(at: lowest)
        }
        let rest = width - text(bar: 0).count - 1
        let line = rest >= minBar ? text(bar: min(rest, maxBar)) : text(bar: 0)
        return line.count > width ? String(line.prefix(width)) : line
    }

    /// `[=====>......]`, `width` characters in all.
    public static func bar(done: Int, of total: Int, width: Int) -> String {
        let inner = max(width - 2, 1)
        let fraction = total > 0 ? min(max(Double(done) / Double(total), 0), 1) : 0
        let filled = Int((fraction * Double(inner)).rounded(.down))
        let body = filled >= inner ? String(repeating: "=", count: inner)
                                   : String(repeating: "=", count: filled) + ">" + String(repeating: ".", count: inner - filled - 1)
        return "[" + body + "]"
    }
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

/// `12.3s`, `4m05s`, `1h02m`.
func formatDuration(_ s: Double) -> String {
    if !s.isFinite || s < 0 { return "?" }
    if s >= 1e9 { return String(format: "%.3gs", s) }   // beyond 31 years: no h/m to show
    if s < 60 { return String(format: "%.1fs", s) }
    if s < 3600 { return String(format: "%dm%02ds", Int(s) / 60, Int(s) % 60) }
    return String(format: "%dh%02dm", Int(s) / 3600, (Int(s) % 3600) / 60)
}
