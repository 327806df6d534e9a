import Dispatch
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Receives a response body into the part file: appended after a 206 that continues where the
/// part ends, from the start after a 200. A part that would grow past `limit` bytes is deleted.
final class PartSink: NSObject, URLSessionDataDelegate, @unchecked Sendable {
    let path: String, have: Int, limit: Int
    let done = DispatchSemaphore(value: 0)
    private var fd: Int32 = -1
    private var received = 0
    /// Bytes of the part before this response: `have` after a 206, none after a 200.
    private var before = 0
    private var failure: Downloader.FetchFailure?
    var result: Result<Int, Downloader.FetchFailure> = .failure(.init(message: "no response", retryable: true))

    init(path: String, have: Int, limit: Int) { self.path = path; self.have = have; self.limit = limit }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                    completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
        guard let http = response as? HTTPURLResponse else {
            failure = .init(message: "not an HTTP response", retryable: false); return completionHandler(.cancel)
        }
        var append = false
        switch http.statusCode {
        case 200:
            break
        case 206:
            // Content-Range: bytes START-END/TOTAL must continue the part exactly.
            let range = http.value(forHTTPHeaderField: "Content-Range") ?? ""
            let start = range.split(whereSeparator: { $0 == " " || $0 == "-" }).dropFirst().first.flatMap { Int($0) }
            guard start == have else {
                unlink(path)
                failure = .init(message: "server answered the range request with '\(range)'", retryable: true, restart: have > 0)
                return completionHandler(.cancel)
            }
            append = true
        case 416:
            unlink(path)   // the part is not a prefix the server knows; start over
            failure = .init(message: "server refused to resume (HTTP 416)", retryable: true, restart: have > 0)
            return completionHandler(.cancel)
        default:
            let retry = http.statusCode >= 500 || http.statusCode == 429 || http.statusCode == 408
            failure = .init(message: "HTTP \(http.statusCode) \(HTTPURLResponse.localizedString(forStatusCode: http.statusCode))",
                            retryable: retry)
            return completionHandler(.cancel)
        }
        before = append ? have : 0
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0o644)
        guard fd >= 0 else {
            failure = .init(message: DownloadError.system(path: path, action: "create").description, retryable: false)
            return completionHandler(.cancel)
        }
        completionHandler(.allow)
    }

    func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
        guard failure == nil, fd >= 0 else { return }
        received += data.count
        if before + received > limit {
            unlink(path)   // not a prefix of the file: nothing to resume
            failure = .init(message: "response is larger than \(limit) bytes, more than this file can be", retryable: false)
            dataTask.cancel(); return
        }
        let ok = data.withUnsafeBytes { raw -> Bool in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 { if errno == EINTR { continue }; return false }
                done += n
            }
            return true
        }
        if !ok {
            failure = .init(message: DownloadError.system(path: path, action: "write").description, retryable: false)
            dataTask.cancel()
        }
    }

    func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
        if fd >= 0 { close(fd); fd = -1 }
        if let failure {
            result = .failure(failure)
        } else if let error {
            // The bytes so far stay in the part file; the next try resumes after them.
            result = .failure(.init(message: error.localizedDescription, retryable: true))
        } else if let expected = (task.response as? HTTPURLResponse)?.expectedContentLength, expected >= 0, Int64(received) != expected {
            result = .failure(.init(message: "connection closed after \(received) of \(expected) bytes", retryable: true))
        } else {
            result = .success(received)
        }
        done.signal()
    }
}
