import Dispatch

/// The one clock the program reads for durations: monotonic wall time.
public struct Stopwatch: Sendable {
    public private(set) var start: UInt64

    /// Starts now.
    public init() { start = DispatchTime.now().uptimeNanoseconds }

    /// Seconds since the start.
    public var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds &- start) * 1e-9 }

    /// Returns the seconds since the start and starts again.
    public mutating func lap() -> Double {
        let now = DispatchTime.now().uptimeNanoseconds
        defer { start = now }
        return Double(now &- start) * 1e-9
    }

    /// Runs `body` and adds its wall time to `total`.
    @inline(__always)
    public static func add<T>(to total: inout Double, _ body: () throws -> T) rethrows -> T {
        let watch = Stopwatch()
        defer { total += watch.seconds }
        return try body()
    }
}
