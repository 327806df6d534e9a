import ArgumentParser
import Training

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Keras-style model table: output shapes, parameters, memory.")
    @OptionGroup var modelOption: ModelOption
    @Option(help: "Input as HxWxC (e.g. 200x300x3), replacing the model's.") var input: String?
    @Option(parsing: .unconditional, help: "Batch size for the training-memory estimate (default: the one train uses, the model's own).")
    var batchSize: Int?
    @Flag(help: "Print JSON.") var json = false

    var parsedInput: [Int]? {
        input.map { $0.lowercased().split(separator: "x").compactMap { Int($0) } }
    }

    func validate() throws {
        if let p = parsedInput, p.count != 3 || p.contains(where: { $0 < 1 }) {
            throw ValidationError("--input must look like 28x28x1 (height x width x channels)")
        }
        if let p = parsedInput, p.contains(where: { $0 > 65536 }) || p[0] * p[1] > 1 << 32 || p[0] * p[1] * p[2] > 1 << 24 {
            throw ValidationError("--input must have each side in 1...65536 and at most 2^24 values (16777216), got \(input ?? "")")
        }
        if let batchSize { try check(batchSize, "batch-size", in: Limits.batchSize) }
    }

    func run() throws {
        try reportingErrors {
            let s = try Tool.summary(model: modelOption.model, input: parsedInput, batchSize: batchSize)
            if json { try printJSON(encoding: s) } else { print(s.table(), terminator: "") }
        }
    }
}
