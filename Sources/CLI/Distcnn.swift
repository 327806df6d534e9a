import ArgumentParser
import Collective
import Foundation
import Training

/// The whole command line; `Sources/distcnn/main.swift` runs it. A library, so the tests and the
/// command-line fuzz target parse argument vectors with the real commands.
public struct Distcnn: ParsableCommand {
    public init() {}
    /// The release; `--version` adds the git commit the binary was built from (`gitCommit`,
    /// written at build time by Plugins/GitCommit).
    public static let version = "0.1.0"
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
        version: "distcnn \(version) (commit \(gitCommit))",
        subcommands: [Train.self, Evaluate.self, Summary.self, Bench.self, Inspect.self, Predict.self, Report.self,
                      Download.self, Launch.self])
}

extension Distcnn {
    /// Like ArgumentParser's `main()`, but a usage error is one line on standard error, and
    /// under mpirun only rank 0's: every rank parses the same command line, so the others exit
    /// silently with the same code (a parse error leaves MPI unstarted). mpirun still adds its
    /// own report of a non-zero exit whatever the ranks do: calling MPI_Abort, or MPI_Init and
    /// MPI_Finalize before exiting, were tried and print as much or more.
    public static func main() {
        var command: ParsableCommand
        do {
            command = try parseCommandLine(Array(CommandLine.arguments.dropFirst()))
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }   // --help, --version
            if launcherRank() == 0 {
                FileHandle.standardError.write(Data("error: \(line(for: error)) (see --help)\n".utf8))
            } else {
                // Rank 0 exits first, so its line comes before mpirun's report of the job's end
                // and that report names the rank that explained it.
                usleep(300_000)
            }
            Foundation.exit(code.rawValue)
        }
        do {
            try command.run()
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }   // `distcnn help COMMAND`
            FileHandle.standardError.write(Data("error: \(line(for: error)) (see --help)\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }

    /// `parseAsRoot`, but a first argument that names no command is refused as an unknown
    /// command (ArgumentParser would complain about the first option after it instead).
    public static func parseCommandLine(_ arguments: [String]) throws -> ParsableCommand {
        if let first = arguments.first, !first.hasPrefix("-") {
            let names = configuration.subcommands.map { $0._commandName }
            if !names.contains(first) && first != "help" {
                let near = names.map { (name: $0, distance: editDistance(first, $0)) }.min { $0.distance < $1.distance }
                let suggestion = near.flatMap { $0.distance <= 2 ? "; did you mean '\($0.name)'?" : nil }
                    ?? " (commands: \(names.joined(separator: ", ")))"
                throw ValidationError("unknown command '\(first)'\(suggestion)")
            }
        }
        if arguments.first == "train" { return try ConfigFile.parseTrain(Array(arguments.dropFirst())) }
        return try parseAsRoot(arguments)
    }

    /// The first line of the message for `error`.
    static func line(for error: Error) -> String {
        message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    }

    /// This process's rank when a launcher (mpirun, srun) started it, read from the
    /// environment (MPI is not started yet); 0 otherwise.
    static func launcherRank(environment: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        guard launchedByMPIRun(environment: environment) || environment["PMI_RANK"] != nil else { return 0 }
        for key in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] {
            if let rank = environment[key].flatMap({ Int($0) }) { return rank }
        }
        return 0
    }
}

/// Levenshtein distance: the fewest insertions, deletions and substitutions from `a` to `b`.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
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
