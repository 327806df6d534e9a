import ArgumentParser
import Foundation
import Training

@main
struct Distcnn: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distcnn",
        abstract: "Data-parallel CNN training on CPUs, for MNIST-style data; run under mpirun or alone.",
        discussion: """
            Examples:
              distcnn train --model ref --data data/mnist --epochs 3 --run-dir runs/ref
              mpirun -np 2 distcnn train --model ref --data data/mnist --run-dir runs/ref2
              distcnn evaluate --checkpoint runs/ref/checkpoints/final.safetensors
            """,
        subcommands: [Train.self, Evaluate.self, Summary.self, Bench.self, Inspect.self, Predict.self, Report.self,
                      Download.self])
}

extension Distcnn {
    /// Like ArgumentParser's `main()`, but a usage error is one line on standard error.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }   // --help, --version
            let text = message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("error: \(text) (see --help)\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }
}

/// Exits with `code` unless it is 0.
func finish(_ code: Int32) throws {
    if code != 0 { throw ExitCode(code) }
}

/// `seed`, `ref`, or a JSON model file.
struct ModelOption: ParsableArguments {
    @Option(name: .long, help: "Model: a preset (seed, ref) or a JSON model file.")
    var model: String = "ref"
}
