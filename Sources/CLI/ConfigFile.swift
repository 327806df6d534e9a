import ArgumentParser
import Foundation
import Training

/// `distcnn train --config FILE`: a JSON object whose keys are `train`'s flag names and whose
/// values are what the flag takes (`true` for a bare flag), as `RUN_DIR/config.json` holds.
/// The file becomes arguments placed before the command line's, so the command line wins (a
/// later value of an option replaces an earlier one) and every check and message is the flag's.
enum ConfigFile {
    /// Largest file read: a configuration is a few hundred bytes.
    static let sizeLimit = 1 << 20
    /// Keys that are not settings.
    static let refused: Set<String> = ["config", "help", "version", "restarts"]

    /// Parses `train`'s `arguments` with the `--config` file's flags put first. A refusal the
    /// file causes (a combination of its settings, such as plateau without a validation set)
    /// names the file.
    static func parseTrain(_ arguments: [String]) throws -> ParsableCommand {
        let (path, expanded) = try expanding(arguments)
        do {
            return try Distcnn.parseAsRoot(["train"] + expanded)
        } catch {
            guard let path, Distcnn.exitCode(for: error) != .success, (try? Distcnn.parseAsRoot(["train"] + arguments)) != nil else { throw error }
            throw ValidationError("--config \(path): \(Distcnn.line(for: error))")
        }
    }

    /// `arguments` (after `train`) with the flags of the `--config` file they name put first,
    /// and the file's path.
    static func expanding(_ arguments: [String]) throws -> (path: String?, arguments: [String]) {
        var path: String?
        for (i, a) in arguments.enumerated() {
            if a == "--" { break }
            if a == "--config" {
                guard i + 1 < arguments.count else { return (nil, arguments) }   // ArgumentParser names the missing value
                path = arguments[i + 1]; break
            }
            if a.hasPrefix("--config=") { path = String(a.dropFirst("--config=".count)); break }
        }
        guard let path else { return (nil, arguments) }
        return (path, try flags(in: path) + arguments)
    }

    /// The file's keys and values as an argument vector, each key checked on its own so an
    /// error names the key and the file.
    static func flags(in path: String) throws -> [String] {
        func fail(_ why: String) -> ValidationError { ValidationError("--config \(path): \(why)") }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw fail("no such file")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw fail("cannot be read") }
        guard data.count <= sizeLimit else { throw fail("\(data.count) bytes, more than a configuration's \(sizeLimit)") }
        let entries: [String: Any]
        if path.lowercased().hasSuffix(".toml") {
            entries = try toml(data, fail)
        } else {
            guard let object = try? JSONSerialization.jsonObject(with: data), let json = object as? [String: Any] else {
                throw fail("not a JSON object of flag names and values, e.g. {\"model\": \"ref\", \"epochs\": 3}")
            }
            entries = json
        }
        var arguments: [String] = []
        for key in entries.keys.sorted() {
            guard !refused.contains(key), !key.hasPrefix("-"), !key.isEmpty else { throw fail("key '\(key)' is not a setting of train") }
            let flag = "--" + key
            func parses(_ argv: [String]) -> Error? {
                do { _ = try Train.parse(argv); return nil } catch { return error }
            }
            func refuse(_ error: Error) -> ValidationError {
                let line = Distcnn.line(for: error)
                guard line.hasPrefix("Unknown option") else { return fail("key '\(key)': " + line) }
                let hint = line.range(of: "Did you mean '--").map { "; did you mean '" + line[$0.upperBound...] } ?? " (keys are train's flag names without --)"
                return fail("key '\(key)' is not a flag of train" + hint)
            }
            let value = entries[key]!
            if let number = value as? NSNumber, ["c", "B"].contains(String(cString: number.objCType)) {
                // A bare flag (--standardize), or an option that takes true/false (--restore-best-weights).
                if parses([flag]) == nil {
                    if number.boolValue { arguments.append(flag) }
                    continue
                }
                let argv = [flag, number.boolValue ? "true" : "false"]
                if let error = parses(argv) { throw refuse(error) }
                arguments += argv
                continue
            }
            if parses([flag]) == nil { throw fail("key '\(key)' is a switch: give true or false") }
            let text: String
            if let s = value as? String {
                text = s
            } else if let n = value as? NSNumber {
                // Whole numbers as written (seeds beyond Int64 too); others in Swift's shortest form, which reads back to the same bits.
                text = ["d", "f"].contains(String(cString: n.objCType)) ? "\(n.doubleValue)" : n.stringValue
            } else {
                throw fail("key '\(key)' must be a string, a number or true/false")
            }
            let argv = [flag, text]
            if let error = parses(argv) { throw refuse(error) }
            arguments += argv
        }
        return arguments
    }

    /// The TOML subset a flat list of settings needs: `key = value` lines with bare keys,
    /// basic strings ("…" with \\ and \" escapes), true/false, integers and floats; `#` comments.
    static func toml(_ data: Data, _ fail: (String) -> ValidationError) throws -> [String: Any] {
        guard let text = String(data: data, encoding: .utf8) else { throw fail("not UTF-8 text") }
        var entries: [String: Any] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let where_ = "line \(i + 1)"
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else { throw fail("\(where_): not key = value (this TOML subset has no tables or arrays)") }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var rest = Substring(line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces))
            guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw fail("\(where_): key '\(key)' is not a bare key")
            }
            guard entries[key] == nil else { throw fail("\(where_): key '\(key)' appears twice") }
            let value: Any
            if rest.first == "\"" {
                var out = "", escaped = false, closed = false
                rest = rest.dropFirst()
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if escaped { guard c == "\"" || c == "\\" else { throw fail("\(where_): only \\\\ and \\\" escapes are read") }; out.append(c); escaped = false }
                    else if c == "\\" { escaped = true }
                    else if c == "\"" { closed = true; break }
                    else { out.append(c) }
                }
                guard closed else { throw fail("\(where_): unterminated string") }
                value = out
            } else {
                let word = rest.prefix { $0 != "#" && !$0.isWhitespace }
                rest = rest.dropFirst(word.count)
                let number = word.replacingOccurrences(of: "_", with: "")
                if word == "true" || word == "false" { value = word == "true" }
                else if let n = Int64(number) { value = NSNumber(value: n) }
                else if let n = UInt64(number) { value = NSNumber(value: n) }
                else if let d = Double(number), d.isFinite { value = NSNumber(value: d) }
                else { throw fail("\(where_): value '\(word)' of key '\(key)' is not a string, number or true/false") }
            }
            let tail = rest.trimmingCharacters(in: .whitespaces)
            guard tail.isEmpty || tail.hasPrefix("#") else { throw fail("\(where_): unexpected '\(tail)' after the value") }
            entries[key] = value
        }
        return entries
    }
}
