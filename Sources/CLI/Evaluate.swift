import ArgumentParser
import Foundation
import Training

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Score a checkpoint on the test set: loss, accuracy, confusion matrix.")
    @Option(help: "Checkpoint file (safetensors).") var checkpoint: String
    @Option(help: "Data folder (default: the one the checkpoint was trained on).") var data: String?
    @Option(parsing: .unconditional, help: "Images per forward pass.") var batchSize = 500
    @Flag(help: "Print JSON.") var json = false

    func validate() throws { try check(batchSize, "batch-size", in: Limits.batchSize) }

    func run() throws {
        try reportingErrors {
            let e = try Tool.evaluate(checkpoint: checkpoint, data: data, batchSize: batchSize)
            let pairs = e.mostConfused(limit: 5)
            if json {
                let out: [String: Any] = ["test_loss": e.loss, "test_accuracy": e.accuracy, "count": e.count,
                                          "confusion": e.confusion, "model": e.model, "checkpoint": e.checkpoint,
                                          "per_class_recall": e.perClassAccuracy,
                                          "most_confused": pairs.map { ["true": $0.trueClass, "predicted": $0.predicted, "count": $0.count] }]
                try printJSON(out, options: [.sortedKeys])
            } else {
                print(String(format: "%@: test accuracy %.2f%% (%d images), loss %.4f", e.checkpoint, e.accuracy * 100, e.count, e.loss))
                print("per-class recall (each class's images predicted right): " + e.perClassAccuracy.enumerated().map { String(format: "%d %.2f%%", $0, $1 * 100) }.joined(separator: ", "))
                if !pairs.isEmpty {
                    print("most confused (true → predicted): " + pairs.map { "\($0.trueClass) → \($0.predicted) (\($0.count))" }.joined(separator: ", "))
                }
                print(Self.confusionTable(e.confusion))
            }
        }
    }

    /// The matrix with class numbers along both edges.
    static func confusionTable(_ m: [[Int]]) -> String {
        var out = "confusion (rows: true, columns: predicted)\n      " + (0..<m.count).map { String(format: "%6d", $0) }.joined() + "\n"
        for (t, row) in m.enumerated() { out += String(format: "%6d", t) + row.map { String(format: "%6d", $0) }.joined() + "\n" }
        return out
    }
}
