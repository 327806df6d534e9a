import ArgumentParser
import Foundation
import Training

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify digit images (PNG or PGM) with a checkpoint.",
        discussion: """
            Each image is prepared as MNIST's digits were, robust to photos: grayscale, inverted \
            if the page is light, the paper's uneven lighting estimated and subtracted, ink told \
            from paper by Otsu's threshold, the largest connected ink shape kept as the digit \
            (specks and other marks dropped), scaled so its longer side is 20 pixels, and placed \
            in a 28×28 field with its centre of mass at the centre. Any size and PNG colour type \
            is accepted. A warning names an image whose digit looks doubtful (other marks on the \
            page, a blot, a digit cut off); --save-prepared shows what the model saw.

            Example:
              distcnn predict --checkpoint runs/ref/checkpoints/final.safetensors digit.png
            """)
    @Option(help: "Checkpoint file (safetensors).") var checkpoint: String
    @Argument(help: "Image files: PNG (any bit depth and colour type) or PGM (P2, P5).") var images: [String]
    @Option(parsing: .unconditional, help: "Classes to show per image, most probable first.") var top = 3
    @Option(help: ArgumentHelp("Write each image's prepared model input to this folder as PNG (NAME.png, created if missing).",
                               valueName: "dir"))
    var savePrepared: String?
    @Flag(help: "Print JSON: file, prediction, probabilities, top, doubts.") var json = false
    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image file") }
        try check(top, "top", in: 1...1000)
        if savePrepared == "" { throw ValidationError("--save-prepared is empty; name the folder to write the prepared images to") }
    }

    /// An image that cannot be read gets one error line naming it (and, with `--json`, an entry
    /// with `error`); the others are still predicted, and the exit code is 1 if any failed. A
    /// doubtful digit gets a warning line and is still predicted.
    func run() throws {
        var prepared: [(file: String, pixels: [UInt8], doubts: [String])] = [], failures: [String: String] = [:]
        var predictions: [String: Prediction] = [:], doubts: [String: [String]] = [:]
        try reportingErrors {
            let classifier = try DigitClassifier(checkpoint: checkpoint)
            if let folder = savePrepared { try AtomicFile.makeDirectory(folder) }
            for file in images {
                do {
                    let digit = try classifier.prepare(imageAt: file)
                    prepared.append((file, digit.pixels, digit.doubts))
                } catch {
                    failures[file] = "\(error)"
                    Console.error("\(error)")
                }
            }
            if let folder = savePrepared {
                let (height, width) = classifier.inputSize
                for (p, name) in zip(prepared, Self.outputNames(prepared.map(\.file))) {
                    try AtomicFile.write(PNG.encode(pixels: p.pixels, height: height, width: width), to: folder + "/" + name)
                }
            }
            for p in prepared where !p.doubts.isEmpty {
                doubts[p.file] = p.doubts
                Console.warning("\(p.file): the prepared digit is doubtful: " + p.doubts.joined(separator: "; ")
                                + (savePrepared == nil ? " (see it with --save-prepared DIR)" : ""))
            }
            for (p, probabilities) in zip(prepared, try classifier.classify(prepared.map(\.pixels))) {
                predictions[p.file] = Prediction(file: p.file, probabilities: probabilities)
            }
        }

        if json {
            let entries: [[String: Any]] = images.map { file in
                guard let p = predictions[file] else { return ["file": file, "error": failures[file] ?? "not predicted"] }
                return ["file": file, "prediction": p.predicted, "probabilities": p.probabilities,
                        "top": p.top(top).map { ["class": $0.class, "probability": $0.probability] },
                        "doubts": doubts[file] ?? []]
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

    /// A PNG name per image: its base name with `.png`, `-2`, `-3`… added when two images share
    /// one (`a/1.png` and `b/1.pgm` become `1.png` and `1-2.png`).
    static func outputNames(_ files: [String]) -> [String] {
        var used: Set<String> = []
        return files.map { file in
            let url = URL(fileURLWithPath: file)
            var base = url.deletingPathExtension().lastPathComponent
            if base.isEmpty || base.hasPrefix(".") { base = "image" + base }
            var name = base + ".png", n = 1
            while used.contains(name) { n += 1; name = "\(base)-\(n).png" }
            used.insert(name)
            return name
        }
    }
}
