// swift-tools-version: 6.1
import PackageDescription

// The hot pieces, in isolation, with package-benchmark (ordo-one/benchmark). A separate package
// so `swift test` in the main one stays fast. Run from this directory:
//   swift package --disable-sandbox benchmark --no-progress
// Gates are on counts that do not depend on machine noise: allocations, retains/releases and
// read/write system calls per burst. (`--no-progress`: with Swift 6.3 on Linux the retain hooks
// can crash inside the progress bar, ordo-one/benchmark#349; the interposer that avoids it is
// not in this machine's package mirror. The multi-threaded end-to-end bursts skip retain counts
// for the same reason.)
let package = Package(
    name: "npa-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "npa-swift", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPaths",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NPAShell", package: "npa-swift"),
                .product(name: "NPAHost", package: "npa-swift"),
                .product(name: "NPAPluginBundle", package: "npa-swift"),
                .product(name: "NPANICModel", package: "npa-swift"),
                .product(name: "NPARingFormats", package: "npa-swift"),
                .product(name: "NPAWorkload", package: "npa-swift"),
            ],
            path: "Benchmarks/HotPaths",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")])
    ],
    swiftLanguageModes: [.v6]
)
