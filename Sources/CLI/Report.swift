import ArgumentParser
import Training

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild RUN_DIR/report.html: learning curves, confusion matrix, misclassified test images.",
        discussion: """
            The page is self-contained (no scripts, nothing fetched). It is built from RUN_DIR's \
            metrics.csv, summary.json and report.json (written when a run ends; without it the \
            page has the learning curves only), and the test images of the run's data folder.
            """)
    @Argument(help: "Run folder written by distcnn train.") var runDir: String
    @Option(help: "Data folder of the misclassified test images (default: the one in report.json).") var data: String?
    func run() throws {
        try reportingErrors {
            let path = try RunReport.write(runDirectory: runDir, dataDirectory: data)
            print("wrote \(path)")
        }
    }
}
