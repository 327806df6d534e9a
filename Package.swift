// swift-tools-version:5.9
import PackageDescription

// The numeric engine and SHA-256 (Hashing, once part of Engine) are built -Ounchecked in
// release (no bounds checks, no preconditions in their hot loops); parsers of outside input
// (Data, Training) keep every check, so a hostile file traps instead of reading out of bounds.
//
// It is also compiled for the CPU of the machine that builds it, as llm.c's `-march=native`, so
// its SIMD loops (batch norm, activations, Winograd transforms, Adam) use AVX2/AVX-512 where the
// CPU has them. When the build machine's CPU is newer than the nodes' that run the binary, set
// DISTCNN_TARGET_CPU to theirs (for example `x86-64`, `haswell` or `znver3`). Data is compiled
// for that CPU too, keeping its checks: the augmentation's per-pixel warp is a visible part of a
// small model's step, and runs faster so (BENCHMARKS.md, "Measurements once quoted in code
// comments").
#if arch(x86_64)
let targetCPU = ["-target-cpu", Context.environment["DISTCNN_TARGET_CPU"] ?? "native"]
#else
let targetCPU: [String] = []
#endif
// DISTCNN_CHECKED=1 builds the engine -O instead, preconditions and bounds checks on: scripts/test
// runs the engine tests once so (in .build-checked), so a precondition that fires is seen.
let engineOptimization = Context.environment["DISTCNN_CHECKED"] == "1" ? "-O" : "-Ounchecked"
let optimize: [SwiftSetting] = [.unsafeFlags([engineOptimization] + targetCPU, .when(configuration: .release))]
let forThisCPU: [SwiftSetting] = [.unsafeFlags(targetCPU, .when(configuration: .release))]

let package = Package(
    name: "distcnn",
    products: [
        .executable(name: "distcnn", targets: ["distcnn"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // MARK: System libraries (found through pkg-config, no hard-coded paths)
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),

        // MARK: Libraries
        .target(name: "Hashing", swiftSettings: optimize),
        .target(name: "Engine", dependencies: ["CBLAS", "Hashing"], swiftSettings: optimize),
        .target(name: "Data", dependencies: ["Engine", "CZlib", "CPNG"], swiftSettings: forThisCPU),
        .target(name: "Collective", dependencies: ["CMPI"]),
        .target(name: "Training", dependencies: ["Engine", "Data", "Collective", "Hashing", "CPNG"]),
        .target(name: "DatasetDownload", dependencies: ["Data", "Hashing"]),

        // MARK: Command-line tool
        .target(name: "CLI", dependencies: [
            "Training", "DatasetDownload", "Collective",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], plugins: ["GitCommit"]),
        .executableTarget(name: "distcnn", dependencies: ["CLI"]),

        // MARK: Build tools
        // The git commit `distcnn --version` prints, written before every build.
        .plugin(name: "GitCommit", capability: .buildTool()),

        // MARK: Fuzzing (scripts/fuzz builds it with -DFUZZING --sanitize=fuzzer)
        .executableTarget(name: "fuzz-parsers", dependencies: [
            "Training", "CLI", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ],
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),

        // MARK: Tests
        .testTarget(name: "HashingTests", dependencies: ["Hashing"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Hashing"]),
        .testTarget(name: "DataTests", dependencies: ["Data", "Hashing"]),
        .testTarget(name: "CollectiveTests", dependencies: ["Collective"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "CLI"],
                    exclude: ["Fixtures"]),
    ]
)
