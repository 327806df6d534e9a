#if canImport(Glibc)
import Glibc
#endif

/// Why a download failed; one line each, naming the file.
public enum DownloadError: Error, CustomStringConvertible {
    case unknownDataset(String)
    /// Every mirror was tried; `attempts` says what each one did.
    case failed(file: String, attempts: [String])
    case io(String)

    public var description: String {
        switch self {
        case let .unknownDataset(name):
            return "unknown dataset '\(name)' (known: \(DownloadableDataset.all.map(\.name).joined(separator: ", ")))"
        case let .failed(file, attempts):
            return "\(file): download failed: " + attempts.joined(separator: "; ")
        case let .io(message):
            return message
        }
    }

    /// A failed system call on `path`, with the system's reason: `PATH: cannot ACTION: REASON`.
    static func system(path: String, action: String) -> DownloadError {
        .io("\(path): cannot \(action): \(String(cString: strerror(errno)))")
    }
}
