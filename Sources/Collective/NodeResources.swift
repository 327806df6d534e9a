import Foundation

/// Threads per rank when `--threads` is not given: the node's cores shared among its
/// `ranksOnNode` ranks (`Communicator.localSize`), or, when the launcher bound this rank to
/// fewer cores than that (`--bind-to core` with `PE=n`), the cores it was given.
public func defaultThreads(ranksOnNode: Int) -> Int {
    let online = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    if let allowed = allowedCPUs(), allowed < online { return allowed }
    return max(1, online / max(ranksOnNode, 1))
}

/// CPUs in this process's affinity mask (`Cpus_allowed` in /proc/self/status, hex words), or
/// nil when it cannot be read.
func allowedCPUs() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) else { return nil }
    let count = line.dropFirst("Cpus_allowed:".count).reduce(0) { n, ch in n + (ch.hexDigitValue?.nonzeroBitCount ?? 0) }
    return count > 0 ? count : nil
}
