import ArgumentParser
import Foundation
import Training

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure training throughput (images/s, GFLOP/s); works under mpirun.")
    @OptionGroup var step: StepOptions
    @Option(parsing: .unconditional, help: "Timed steps.") var steps = 50
    @Option(parsing: .unconditional, help: "Untimed warm-up steps.") var warmup = 5
    @Flag(help: "Time each layer's forward and backward.") var profile = false
    @Flag(help: "Measure inference (evaluation) instead of training.") var eval = false
    @Option(help: "Convolution algorithm: auto, im2col, shifted (stride-1 `same` layers) or winograd (3×3 stride-1 `same` layers); layers the choice does not fit use im2col.")
    var convolution: ConvolutionAlgorithm = .auto
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try check(steps, "steps", in: 1...1_000_000)
        try check(warmup, "warmup", in: 0...1_000_000)
    }

    func run() throws {
        // A model file that cannot be read is one line before MPI starts.
        do { _ = try ModelSpec.load(step.model) } catch {
            Console.error("\(error)"); throw ExitCode(1)
        }
        var o = BenchOptions()
        o.model = step.model; o.batchSize = step.batchSize; o.threads = step.threads
        o.augmentation = step.augment.config; o.bnSync = step.bnSync; o.microBatch = step.microBatch
        o.steps = steps; o.warmup = warmup; o.profile = profile; o.eval = eval; o.convolution = convolution
        try finish(Tool.bench(o) { r in
            if json { try printJSON(encoding: r) } else { Self.printText(r) }
        })
    }

    static func printText(_ r: BenchResult) {
        print(String(format: "%@ %@: %d rank(s) × %d thread(s), batch %d: %.0f images/s, %.1f GFLOP/s (%.0f%% of sgemm peak %.1f), all-reduce %.1f%% of step (%.1f%% on the rank waiting least), peak RSS %.0f MiB",
                     r.model, r.mode, r.worldSize, r.threadsPerRank, r.batchSize, r.imagesPerSecond, r.gflops,
                     r.peakShare * 100, r.sgemmPeakGflops, r.allReduceShare * 100, r.allReduceShareLeast * 100,
                     r.peakRSSMiB))
        func label(_ name: String) -> String { "  " + name.padding(toLength: 34, withPad: " ", startingAt: 0) }
        for row in r.profile ?? [] {
            print(label(row.name) + String(format: "forward %8.3f ms  backward %8.3f ms", row.forwardMs, row.backwardMs))
        }
        for row in r.phases ?? [] { print(label(row.name) + String(format: "%8.3f ms", row.ms)) }
    }
}
