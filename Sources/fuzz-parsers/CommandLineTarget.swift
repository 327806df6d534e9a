import ArgumentParser
import CLI
import Foundation

/// The `cli` fuzz target: an input is an argument vector, one argument a line (the format of
/// `Fuzz/corpus/cli/*.args`, so the reproductions replay exactly). The first line becomes a
/// subcommand and every line starting with `-` a flag of that subcommand, both taken from
/// ArgumentParser's own description of `distcnn` (its `--experimental-dump-help`): a name that
/// is not a real one is mapped onto one by its bytes, so mutations keep hitting real flags
/// while the values (every other line, and whatever follows a flag's `=`) are the fuzzer's
/// bytes. Each vector is parsed and validated by `Distcnn.parseAsRoot` (never run); an error
/// must render as a message and an exit code, and only a request for help or the version may
/// exit 0.
enum CommandLineTarget {
    /// Each subcommand's flag names (`--epochs`, `-h`), hidden ones included, by command name.
    static let flags: [String: [String]] = {
        do {
            _ = try Distcnn.parseAsRoot(["--experimental-dump-help"])
        } catch {
            let json = Distcnn.fullMessage(for: error)
            guard let tool = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                  let root = tool["command"] as? [String: Any],
                  let subcommands = root["subcommands"] as? [[String: Any]] else {
                fatalError("distcnn's --experimental-dump-help is not the JSON expected: \(json.prefix(200))")
            }
            var flags: [String: [String]] = [:]
            for command in subcommands {
                guard let name = command["commandName"] as? String else { continue }
                let arguments = command["arguments"] as? [[String: Any]] ?? []
                flags[name] = arguments.flatMap { argument -> [String] in
                    (argument["names"] as? [[String: Any]] ?? []).compactMap { n in
                        guard let kind = n["kind"] as? String, let name = n["name"] as? String else { return nil }
                        return kind == "short" ? "-" + name : "--" + name
                    }
                }.sorted()
            }
            return flags
        }
        fatalError("--experimental-dump-help was not refused as a request for the tool's description")
    }()

    static let commands = flags.keys.sorted()

    /// A real name for `text`: itself when it is one, else the one its bytes select.
    static func real(_ text: Substring, among names: [String]) -> String {
        if names.contains(where: { $0 == text }) { return String(text) }
        let h = text.utf8.reduce(UInt32(2166136261)) { ($0 ^ UInt32($1)) &* 16777619 }   // FNV-1a
        return names[Int(h % UInt32(names.count))]
    }

    /// The argument vector the bytes describe.
    static func argumentVector(_ bytes: [UInt8]) -> [String] {
        var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last == "" { lines.removeLast() }
        guard let first = lines.first else { return [] }
        let command = real(first, among: commands)
        let names = flags[command] ?? []
        var argv = [command]
        for line in lines.dropFirst() {
            // Values stay as they are, negative numbers (`-1`, `-inf`) and `--` among them.
            let name = line.firstIndex(of: "=").map { line[..<$0] } ?? line
            guard name.hasPrefix("-"), name != "-", name != "--", Double(name) == nil, !names.isEmpty else {
                argv.append(String(line)); continue
            }
            argv.append(real(name, among: names) + line[name.endIndex...])
        }
        return argv
    }

    static func run(_ bytes: [UInt8]) {
        let argv = argumentVector(bytes)
        do {
            _ = try Distcnn.parseAsRoot(argv)
        } catch {
            let code = Distcnn.exitCode(for: error)
            let message = Distcnn.message(for: error)
            if code == .success {
                // Only --help, -h, --version and the dump of the tool's description end well.
                precondition(argv.contains { ["--help", "-h", "--help-hidden", "--version", "--experimental-dump-help"].contains($0.split(separator: "=").first.map(String.init) ?? $0) }
                             || argv.first == "help", "\(argv) exits 0 without asking for help: \(message)")
            } else {
                precondition(!message.isEmpty, "\(argv) is refused without a message")
            }
        }
    }
}
