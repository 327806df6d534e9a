import ArgumentParser
import DatasetDownload
import Foundation
import Training

struct Download: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch MNIST or Fashion-MNIST (four gzipped IDX files), verified by SHA-256.",
        discussion: """
            Files already present and valid are kept. Each file is downloaded to \
            DIR/.tmp-NAME.gz.part (a partial one is resumed when the server allows), checked \
            against the SHA-256 of its decompressed content, and only then renamed into place.

            Example:
              distcnn download --dataset fashion-mnist --to data/fashion-mnist
            """)
    @Option(help: "Dataset to fetch.") var dataset: DownloadableDataset
    @Option(help: "Folder to put the files in (created if missing).") var to: String
    @Option(help: "Base URL serving the .gz files, tried before the public mirrors.") var mirror: String?
    @Flag(help: "Use only --mirror, never the public mirrors.") var mirrorOnly = false
    @Option(parsing: .unconditional, help: "Further tries per mirror after a network error (with backoff).") var retries = 3
    @Option(parsing: .unconditional, help: "Seconds without progress before a connection is given up.") var timeout = 60.0
    func validate() throws {
        try check(retries, "retries", in: 0...100)
        try check(timeout, "timeout", in: 0.001...86_400)
        if mirrorOnly && mirror == nil { throw ValidationError("--mirror-only needs --mirror") }
    }
    func run() throws {
        try reportingErrors {
            try downloadDataset(dataset.name, to: to, mirror: mirror, mirrorOnly: mirrorOnly, retries: retries, timeout: timeout,
                                warning: { Console.warning($0) }, fileDone: { print($0); fflush(stdout) })
        }
    }
}
