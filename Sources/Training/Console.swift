import Collective
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Rank 0's voice: everything a run prints goes through here, and other ranks stay silent.
/// On a terminal the progress line redraws in place; in a log file each update is a line.
public final class Console {
    public enum Level: Int, Comparable, Sendable {
        case quiet = 0, normal = 1, verbose = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public let enabled: Bool
    public let level: Level
    public let isTerminal: Bool
    var progressShown = false

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

    /// A line at `level` or below.
    public func line(_ text: String, level: Level = .normal) {
        guard enabled, level <= self.level else { return }
        clearProgress()
        print(text)
        fflush(stdout)
    }

    /// A transient status line (progress bar) on a terminal; nothing elsewhere.
    public func progress(_ text: String) {
        guard enabled, isTerminal, level >= .normal else { return }
        print("\r\u{1B}[2K" + text, terminator: "")
        fflush(stdout)
        progressShown = true
    }

    func clearProgress() {
        if progressShown { print("\r\u{1B}[2K", terminator: ""); progressShown = false }
    }

    /// One line on standard error, from any rank (errors must not be lost).
    public static func error(_ text: String) {
        FileHandle.standardError.write(Data(("error: " + text + "\n").utf8))
    }

    public static func warning(_ text: String) {
        FileHandle.standardError.write(Data(("warning: " + text + "\n").utf8))
    }
}

/// `12.3s`, `4m05s`, `1h02m`.
func formatDuration(_ s: Double) -> String {
    if !s.isFinite || s < 0 { return "?" }
    if s >= 1e9 { return String(format: "%.3gs", s) }   // beyond 31 years: no h/m to show
    if s < 60 { return String(format: "%.1fs", s) }
    if s < 3600 { return String(format: "%dm%02ds", Int(s) / 60, Int(s) % 60) }
    return String(format: "%dh%02dm", Int(s) / 3600, (Int(s) % 3600) / 60)
}
