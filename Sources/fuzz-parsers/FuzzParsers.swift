import Data
import Engine
import Foundation
import Training

/// Fuzz targets for every parser of outside input: IDX files, checkpoints (safetensors header,
/// offsets, metadata), model JSON and the run files `report` reads (`metrics.csv`,
/// `summary.json`, `report.json`, each through to the page it draws) and the command line
/// (`CommandLineTarget`). Built with `-DFUZZING` and `--sanitize=fuzzer` it is a
/// libFuzzer binary (`scripts/fuzz`); built normally it replays the files it is given, so the
/// corpus doubles as a regression test. The target comes from `DISTCNN_FUZZ_TARGET`.
enum FuzzTarget: String {
    case idx, checkpoint, model
    case metrics, summary, report
    case cli

    static let current: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["DISTCNN_FUZZ_TARGET"] ?? "idx"
        guard let t = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("DISTCNN_FUZZ_TARGET must be idx, checkpoint, model, metrics, summary, report or cli\n".utf8))
            exit(2)
        }
        return t
    }()

    /// Scratch file for the IDX reader, which reads paths (in memory-backed /dev/shm when possible).
    static let scratch: String = {
        let dir = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return dir + "/distcnn-fuzz-\(getpid()).idx"
    }()

    /// Parses one input; every failure must be a thrown error, never a crash or a huge allocation.
    func run(_ bytes: [UInt8]) {
        switch self {
        case .idx:
            guard FileManager.default.createFile(atPath: FuzzTarget.scratch, contents: Data(bytes)) else { return }
            if let images = try? IDXReader.readImages(path: FuzzTarget.scratch) {
                precondition(images.pixels.count == images.count * images.height * images.width * images.channels)
            }
            if let labels = try? IDXReader.readLabels(path: FuzzTarget.scratch) {
                precondition(labels.count <= bytes.count * 1100)
            }
        case .checkpoint:
            guard let ckpt = try? Checkpoint.parse(bytes, source: "fuzz") else { return }
            if let model = try? Model(spec: ckpt.spec) {
                try? ckpt.restore(into: model, adam: Adam(parameterCount: model.parameterCount, config: AdamConfig()),
                                  source: "fuzz")
            }
        case .model:
            guard let spec = try? ModelSpec.decode(Data(bytes), source: "fuzz"),
                  let model = try? Model(spec: spec) else { return }
            _ = ModelSummary(model: model, batchSize: 2)
        case .metrics:
            guard let history = try? RunReport.parseMetrics(bytes, path: "fuzz") else { return }
            _ = RunReport.html(history: history, confusion: [], mistakes: [], title: "fuzz", summary: [])
        case .summary:
            guard let rows = try? RunReport.summaryRows(summary: bytes, path: "fuzz", history: []) else { return }
            _ = RunReport.html(history: [], confusion: [], mistakes: [], title: "fuzz", summary: rows)
        case .report:
            guard let data = try? RunReport.decodeReport(bytes, path: "fuzz") else { return }
            _ = RunReport.html(history: [], confusion: data.confusion, mistakes: [], title: data.title, summary: [])
        case .cli:
            CommandLineTarget.run(bytes)
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    FuzzTarget.current.run(Array(UnsafeBufferPointer(start: data, count: count)))
    return 0
}
#else
@main
struct ReplayCorpus {
    static func main() {
        var files = 0
        for path in CommandLine.arguments.dropFirst() {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                fputs("fuzz-parsers: \(path): no such file or folder\n", stderr)
                exit(1)
            }
            let paths = isDir.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for p in paths {
                guard let data = FileManager.default.contents(atPath: p) else { continue }
                FuzzTarget.current.run([UInt8](data))
                files += 1
            }
        }
        print("replayed \(files) inputs for \(FuzzTarget.current.rawValue) without a crash")
    }
}
#endif
