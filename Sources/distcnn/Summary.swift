import ArgumentParser
import Training

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Keras-style model table: output shapes, parameters, memory.")
    @OptionGroup var modelOption: ModelOption
    @Option(help: "Input as HxWxC (e.g. 200x300x3), replacing the model's.") var input: String?
    @Option(help: "Batch size for the training-memory estimate.") var batchSize = 32
    @Flag(help: "Print JSON.") var json = false

    var parsedInput: [Int]? {
        input.map { $0.lowercased().split(separator: "x").compactMap { Int($0) } }
    }

    func validate() throws {
        if let p = parsedInput, p.count != 3 || p.contains(where: { $0 < 1 }) {
            throw ValidationError("--input must look like 28x28x1 (height x width x channels)")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        try reportingErrors {
            let s = try Tool.summary(model: modelOption.model, input: parsedInput, batchSize: batchSize)
            if json { try printJSON(encoding: s) } else { print(s.table(), terminator: "") }
        }
    }
}
