// swift-tools-version: 6.0
import PackageDescription

// libFuzzer targets, one executable each. A separate package so `swift test` in the main one
// stays fast; built only by scripts/fuzz.sh, which passes the sanitizer flags.
let targets = [
    "control-message", "host-config", "vmxnet3-registers", "vmxnet3-descriptors", "vf-dring", "vf-cq", "device-state", "tcp-segmentation",
    "tcp-coalescing",
    "migration-records", "plugin-elf", "plugin-bundle",
]
// What a target needs beyond FuzzSupport.
let extraDependencies: [String: [Target.Dependency]] = [
    "migration-records": [.product(name: "NPAMigration", package: "npa-swift")],
    "plugin-elf": [.product(name: "NPAPluginBundle", package: "npa-swift")],
    "plugin-bundle": [.product(name: "NPAPluginBundle", package: "npa-swift")],
]
let package = Package(
    name: "npa-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "npa-swift", path: ".."),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "NPAHost", package: "npa-swift"),
                .product(name: "NPANICModel", package: "npa-swift"),
                .product(name: "NPARingFormats", package: "npa-swift"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ])
    ]
        + targets.map { name in
            .executableTarget(name: "fuzz-\(name)", dependencies: ["FuzzSupport"] + (extraDependencies[name] ?? []))
        },
    swiftLanguageModes: [.v6]
)
