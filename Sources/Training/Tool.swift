import Collective
import Data
import Engine
import Foundation

/// Entry points for the command-line tool: each sets up what it needs, runs, and turns any
/// error into one line on standard error and an exit code. The tool itself only parses flags.
public enum Tool {
    /// `distcnn train`: returns the process exit code.
    public static func train(config: TrainConfig, options: RunOptions) -> Int32 {
        let comm: Communicator
        do { comm = try makeCommunicator() } catch {
            Console.error("cannot start MPI: \(error)"); return 1
        }
        defer { comm.finalize() }
        do {
            _ = try Trainer(config: config, options: options, comm: comm).run()
            return 0
        } catch let f as RunFinished {
            if comm.rank == 0 { print(f.description) }
            return 0
        } catch let p as Preempted {
            if comm.rank == 0 { Console.warning(p.description) }
            return p.exitCode
        } catch {
            return fail(error, comm: comm)
        }
    }

    /// Reports an error. Errors every rank reached together (bad flags, data, checkpoints
    /// refused, a NaN loss) are printed once by rank 0; an error on one rank alone is printed
    /// by that rank and ends the whole job, since the others would wait for it forever.
    static func fail(_ error: Error, comm: Communicator) -> Int32 {
        let collective = error is RunError
        if comm.size > 1 && !collective {
            Console.error("rank \(comm.rank): \(error)")
            // MPI_Abort needs mpirun's daemon; if this host is cut off it never returns, so a
            // watchdog ends the process regardless after a grace period.
            Thread.detachNewThread { sleep(3); _exit(1) }
            comm.abort(code: 1)
        }
        if comm.rank == 0 { Console.error("\(error)") }
        return 1
    }

    /// Errors printed as one line, for commands that run in a single process.
    static func single(_ body: () throws -> Void) -> Int32 {
        do { try body(); return 0 } catch {
            Console.error("\(error)"); return 1
        }
    }

    /// `distcnn evaluate --checkpoint FILE`.
    public static func evaluate(checkpoint path: String, data: String?, batchSize: Int, json: Bool) -> Int32 {
        single {
            let ckpt = try Checkpoint.read(path: path)
            let model = try Model(spec: ckpt.spec)
            try requireClassifier(model)
            try ckpt.restore(into: model, source: path)
            let dataDirectory = data ?? ckpt.state.config.dataDirectory
            let (_, test) = try MNISTFiles.load(directory: dataDirectory)
            try requireFits(model, [test], directory: dataDirectory)
            let r = try Training.evaluate(model: model, dataset: test, normalizer: ckpt.state.normalizer,
                                          batchSize: batchSize, comm: SingleProcessCommunicator())
            let perClass = r.confusion.enumerated().map { t, row in Double(row[t]) / Double(max(row.reduce(0, +), 1)) }
            let pairs = confusedPairs(r.confusion, limit: 5)
            if json {
                let out: [String: Any] = ["test_loss": r.loss, "test_accuracy": r.accuracy, "count": r.count,
                                          "confusion": r.confusion, "model": ckpt.spec.name, "checkpoint": path,
                                          "per_class_accuracy": perClass,
                                          "most_confused": pairs.map { ["true": $0.0, "predicted": $0.1, "count": $0.2] }]
                print(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(String(format: "%@: test accuracy %.2f%% (%d images), loss %.4f", path, r.accuracy * 100, r.count, r.loss))
                print("per class: " + perClass.enumerated().map { String(format: "%d %.2f%%", $0, $1 * 100) }.joined(separator: ", "))
                if !pairs.isEmpty {
                    print("most confused (true → predicted): " + pairs.map { "\($0.0) → \($0.1) (\($0.2))" }.joined(separator: ", "))
                }
                print(confusionTable(r.confusion))
            }
        }
    }

    /// Off-diagonal cells of the confusion matrix, largest first.
    static func confusedPairs(_ m: [[Int]], limit: Int) -> [(Int, Int, Int)] {
        var cells: [(Int, Int, Int)] = []
        for (t, row) in m.enumerated() { for (p, n) in row.enumerated() where p != t && n > 0 { cells.append((t, p, n)) } }
        return Array(cells.sorted { $0.2 != $1.2 ? $0.2 > $1.2 : ($0.0, $0.1) < ($1.0, $1.1) }.prefix(limit))
    }

    static func confusionTable(_ m: [[Int]]) -> String {
        var out = "confusion (rows: true, columns: predicted)\n      " + (0..<m.count).map { String(format: "%6d", $0) }.joined() + "\n"
        for (t, row) in m.enumerated() { out += String(format: "%6d", t) + row.map { String(format: "%6d", $0) }.joined() + "\n" }
        return out
    }

    /// `distcnn summary`.
    public static func summary(model name: String, input: [Int]?, batchSize: Int, json: Bool) -> Int32 {
        single {
            var spec = try ModelSpec.load(name)
            if let input { spec.input = input }
            let model = try Model(spec: spec)
            let s = ModelSummary(model: model, batchSize: batchSize)
            if json {
                let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(s), as: UTF8.self))
            } else {
                print(s.table(), terminator: "")
            }
        }
    }

    /// `distcnn inspect FILE`: what a checkpoint holds and whether it is valid.
    public static func inspect(path: String, json: Bool) -> Int32 {
        do {
            let ckpt = try Checkpoint.read(path: path)
            let st = ckpt.state
            let tensors = ckpt.file.entries.map { e -> [String: Any] in
                let v = ckpt.file.values(e)
                let mean = v.isEmpty ? 0 : v.reduce(0.0) { $0 + Double($1) } / Double(v.count)
                return ["name": e.name, "shape": e.shape, "first": v.first.map { Double($0) } ?? 0, "mean": mean]
            }
            if json {
                let out: [String: Any] = [
                    "valid": true, "file": path, "model": ckpt.spec.name, "epoch": st.epoch, "step_in_epoch": st.stepInEpoch,
                    "global_step": st.globalStep, "adam_step": st.adamStep, "tensors": tensors,
                    "data_sha256": ckpt.file.metadata["data_sha256"] ?? "", "seed": st.config.seed,
                    "history_epochs": st.history.count,
                ]
                print(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys, .prettyPrinted]), as: UTF8.self))
            } else {
                print("\(path): valid distcnn checkpoint (version \(Checkpoint.version)), data SHA-256 \(ckpt.file.metadata["data_sha256"] ?? "")")
                print("model \(ckpt.spec.name); next: epoch \(st.epoch + 1), step \(st.stepInEpoch); global step \(st.globalStep); Adam step \(st.adamStep)")
                print("seed \(st.config.seed), batch \(st.config.batchSize), \(st.history.count) epochs of history"
                      + (st.earlyStopping.best.map { String(format: ", best %@ %.4f at epoch %d", st.config.monitor.rawValue, $0, st.earlyStopping.bestEpoch) } ?? ""))
                for t in tensors {
                    let shape = (t["shape"] as! [Int]).map(String.init).joined(separator: "×")
                    print(String(format: "  %-40@ %-18@ mean %+.6f", t["name"] as! String, shape, t["mean"] as! Double))
                }
            }
            return 0
        } catch {
            if json {
                print(String(decoding: try! JSONSerialization.data(withJSONObject: ["valid": false, "file": path, "error": "\(error)"], options: [.sortedKeys]), as: UTF8.self))
            }
            Console.error("\(error)")
            return 1
        }
    }
}
