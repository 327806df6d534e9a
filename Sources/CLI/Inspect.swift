import ArgumentParser
import Foundation
import Training

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tell what a checkpoint holds and whether it is valid.")
    @Argument(help: "Checkpoint file.") var file: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let i: CheckpointInspection
        do { i = try Tool.inspect(path: file) } catch {
            // The JSON says "not valid" on standard output too, for scripts that read only it.
            if json { try printJSON(["valid": false, "file": file, "error": "\(error)"], options: [.sortedKeys]) }
            Console.error("\(error)")
            throw ExitCode(1)
        }
        if json {
            let out: [String: Any] = [
                "valid": true, "file": i.file, "model": i.model,
                "next_epoch": i.nextEpoch, "next_step_in_epoch": i.stepInEpoch, "global_step": i.globalStep,
                "optimizer_state": i.adamStep != nil, "adam_step": i.adamStep.map { $0 as Any } ?? NSNull(),
                "tensors": i.tensors.map {
                    ["name": $0.name, "layer": $0.layer.map { $0 as Any } ?? NSNull(), "shape": $0.shape, "first": $0.first, "mean": $0.mean]
                },
                "data_sha256": i.dataSHA256, "seed": i.seed, "history_epochs": i.historyEpochs, "version": i.version,
                "hashes": i.hashes.map { ["name": $0.name, "sha256": $0.value, "covers": $0.covers] },
            ]
            try printJSON(out, options: [.sortedKeys, .prettyPrinted])
        } else {
            print("\(i.file): valid distcnn checkpoint (version \(i.version)): every hash matches and every value is finite")
            for h in i.hashes {
                print("\(h.name) \(h.value.isEmpty ? "-" : h.value): \(h.covers)")
            }
            print("model \(i.model); next: epoch \(i.nextEpoch), step \(i.stepInEpoch); global step \(i.globalStep); "
                  + (i.adamStep.map { "Adam step \($0)" } ?? "no optimizer state (weights only: not resumable)"))
            print("seed \(i.seed), batch \(i.batchSize), \(i.historyEpochs) epoch\(i.historyEpochs == 1 ? "" : "s") of history"
                  + (i.best.map { String(format: ", best %@ %.4f at epoch %d", $0.monitor.rawValue, $0.value, $0.epoch) } ?? ""))
            for t in i.tensors {
                let shape = t.shape.map(String.init).joined(separator: "×")
                let name = t.name + (t.layer.map { " (\($0))" } ?? "")
                print("  " + name.padding(toLength: max(44, name.count), withPad: " ", startingAt: 0) + " "
                      + shape.padding(toLength: max(18, shape.count), withPad: " ", startingAt: 0) + String(format: " mean %+.6f", t.mean))
            }
        }
    }
}
