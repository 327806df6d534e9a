import ArgumentParser
import Foundation
import Training

/// The whole command line; `Sources/distcnn/main.swift` runs it. A library, so the tests and the
/// command-line fuzz target parse argument vectors with the real commands.
public struct Distcnn: ParsableCommand {
    public init() {}
    public static let configuration = CommandConfiguration(
        commandName: "distcnn",
        abstract: "Data-parallel CNN training on CPUs, for MNIST-style data; run under mpirun or alone.",
        discussion: """
            Examples:
              distcnn train --model ref --data data/mnist --epochs 3 --run-dir runs/ref
              mpirun -np 2 distcnn train --model ref --data data/mnist --run-dir runs/ref2
              distcnn evaluate --checkpoint runs/ref/checkpoints/final.safetensors
              distcnn launch --hostfile hosts --min-nodes 2 -- train --run-dir runs/ref3
            """,
        subcommands: [Train.self, Evaluate.self, Summary.self, Bench.self, Inspect.self, Predict.self, Report.self,
                      Download.self, Launch.self])
}

extension Distcnn {
    /// Like ArgumentParser's `main()`, but a usage error is one line on standard error.
    public static func main() {
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

/// Runs a single-process command's body: an error it throws becomes one line on standard
/// error and exit code 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do { try body() } catch let code as ExitCode { throw code } catch {
        Console.error("\(error)")
        throw ExitCode(1)
    }
}

/// `object` (dictionaries, arrays, strings, numbers) as JSON on standard output.
func printJSON(_ object: Any, options: JSONSerialization.WritingOptions) throws {
    print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: options), as: UTF8.self))
}

/// `value` as pretty, key-sorted JSON on standard output.
func printJSON<T: Encodable>(encoding value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}
