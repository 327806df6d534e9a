#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This machine's host name from `gethostname`, without the DNS lookups of
/// `ProcessInfo.hostName` (which can stall for seconds on a cluster node).
public func localHostName() -> String {
    var name = [CChar](repeating: 0, count: 256)
    guard gethostname(&name, name.count - 1) == 0 else { return "localhost" }
    return String(cString: name)
}
