import ArgumentParser
import Foundation
import Training

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify digit images (PNG or PGM) with a checkpoint.",
        discussion: """
            Each image is prepared as MNIST's digits were: grayscale, inverted if the page is light, \
            cropped to the digit, scaled so its longer side is 20 pixels, and placed in a 28×28 \
            field with its centre of mass at the centre. Any size and PNG colour type is accepted.

            Example:
              distcnn predict --checkpoint runs/ref/checkpoints/final.safetensors digit.png
            """)
    @Option(help: "Checkpoint file (safetensors).") var checkpoint: String
    @Argument(help: "Image files: PNG (any bit depth and colour type) or PGM (P2, P5).") var images: [String]
    @Option(parsing: .unconditional, help: "Classes to show per image, most probable first.") var top = 3
    @Flag(help: "Print JSON: file, prediction, probabilities, top.") var json = false
    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image file") }
        try check(top, "top", in: 1...1000)
    }

    /// An image that cannot be read gets one error line naming it (and, with `--json`, an entry
    /// with `error`); the others are still predicted, and the exit code is 1 if any failed.
    func run() throws {
        var prepared: [(file: String, pixels: [UInt8])] = [], failures: [String: String] = [:]
        var predictions: [String: Prediction] = [:]
        try reportingErrors {
            let classifier = try DigitClassifier(checkpoint: checkpoint)
            for file in images {
                do { prepared.append((file, try classifier.prepare(imageAt: file))) } catch {
                    failures[file] = "\(error)"
                    Console.error("\(error)")
                }
            }
            for (p, probabilities) in zip(prepared, try classifier.classify(prepared.map(\.pixels))) {
                predictions[p.file] = Prediction(file: p.file, probabilities: probabilities)
            }
        }

        if json {
            let entries: [[String: Any]] = images.map { file in
                guard let p = predictions[file] else { return ["file": file, "error": failures[file] ?? "not predicted"] }
                return ["file": file, "prediction": p.predicted, "probabilities": p.probabilities,
                        "top": p.top(top).map { ["class": $0.class, "probability": $0.probability] }]
            }
            try printJSON(entries, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        } else {
            for file in images {
                guard let p = predictions[file] else { continue }
                print("\(file): " + p.top(top).map { String(format: "%d (%.1f%%)", $0.class, $0.probability * 100) }
                    .joined(separator: ", "))
            }
        }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}
