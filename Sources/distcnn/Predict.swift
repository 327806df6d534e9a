import ArgumentParser
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
    @Option(help: "Classes to show per image, most probable first.") var top = 3
    @Flag(help: "Print JSON: file, prediction, probabilities, top.") var json = false
    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("give at least one image file") }
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
    }
    func run() throws { try finish(Tool.predict(checkpoint: checkpoint, images: images, top: top, json: json)) }
}
