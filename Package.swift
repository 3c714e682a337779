// swift-tools-version: 6.0
import PackageDescription

// The data-path modules run per-frame loops over class state; in release builds their dynamic
// exclusivity checks (swift_beginAccess per property access, a TLS lookup each) were a tenth of
// every thread's profile in `npa bench`. Debug builds (the tests) keep the checks.
let dataPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// Modules follow the roles in docs/architecture.md. The shell (guest side) and the host never
// import each other; both speak only the ring formats, the control protocol and the plugin ABI.
let package = Package(
    name: "npa-swift",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "npa", targets: ["npa"]),
        .library(name: "NPAShell", targets: ["NPAShell"]),
        .library(name: "NPAHost", targets: ["NPAHost"]),
        .library(name: "NPANICModel", targets: ["NPANICModel"]),
        .library(name: "NPARingFormats", targets: ["NPARingFormats"]),
        .library(name: "NPAWorkload", targets: ["NPAWorkload"]),
        .library(name: "NPAMigration", targets: ["NPAMigration"]),
        .library(name: "NPAPluginBundle", targets: ["NPAPluginBundle"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // C where Swift cannot reach: memfd, eventfd, epoll, SCM_RIGHTS, fences, shared-memory
        // atomics. Only NPASystem imports it: every other module reaches the OS through that funnel.
        .target(name: "CNPAShim"),
        // The shell/plugin ABI: one versioned header, shared by the shell and every plugin.
        .target(name: "CNPAPluginABI"),
        .target(
            name: "NPASystem",
            dependencies: ["CNPAShim", .product(name: "SystemPackage", package: "swift-system")]),
        // Ring layouts and guest memory: no system calls; NPASystem only for the shared-memory atomics.
        .target(name: "NPARingFormats", dependencies: ["NPASystem"], swiftSettings: dataPath),
        .target(name: "NPAControlProtocol"),
        // The host-to-host migration channel: HMAC-authenticated records over a stream socket and
        // the messages they carry. Reaches the OS only through NPASystem.
        .target(
            name: "NPAMigration",
            dependencies: ["NPASystem", "NPAControlProtocol", .product(name: "Crypto", package: "swift-crypto")]),
        // Plugin bundles: the manifest, the signature, the licence rule and the ELF checks that
        // the host (its plugin store) and the shell (before it maps an injected image) both apply.
        // Pure codecs and checks: no system calls.
        .target(name: "NPAPluginBundle", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        // The admin socket's client (`npa status`, `npa vnic`, the soaks, the tests).
        .target(name: "NPAAdmin", dependencies: ["NPASystem", "NPAControlProtocol"]),
        // The software SR-IOV NIC ("hardware"): never imports the host or the shell.
        .target(
            name: "NPANICModel", dependencies: ["NPASystem", "NPARingFormats", "NPAControlProtocol", "CNPAPluginABI"],
            swiftSettings: dataPath),
        .target(
            name: "NPAHost",
            dependencies: [
                "NPASystem", "NPARingFormats", "NPAControlProtocol", "NPANICModel", "NPAMigration", "NPAPluginBundle", "CNPAPluginABI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: dataPath),
        // The operator's scrape endpoint: `GET /metrics` over SwiftNIO's HTTP/1 server, rendering
        // whatever exposition it is given. Knows nothing of the host: the CLI wires it to one.
        .target(
            name: "NPAMetricsEndpoint",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .target(
            name: "NPAShell",
            dependencies: [
                "NPASystem", "NPARingFormats", "NPAControlProtocol", "CNPAPluginABI", "NPAPluginBundle",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: dataPath),
        .target(name: "NPAWorkload", dependencies: ["NPAShell", "NPASystem", "NPARingFormats"], swiftSettings: dataPath),
        .executableTarget(
            name: "npa",
            dependencies: [
                "NPAHost", "NPANICModel", "NPAShell", "NPAWorkload", "NPASystem", "NPAAdmin", "NPAPluginBundle", "CNPAPluginABI",
                "NPAMetricsEndpoint",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .target(name: "CVMXNET3Mirror", path: "Tests/CVMXNET3Mirror"),
        // The vendor plugins, also linked into the tests under their own entry names; as
        // injected images they are built freestanding by scripts/build-plugins.sh.
        .target(
            name: "DRingPlugin", dependencies: ["CNPAPluginABI"], path: "Plugins/dring", exclude: ["plugin.json"],
            cSettings: [.define("NPA_PLUGIN_ENTRY_NAME", to: "npa_dring_plugin_main")]),
        .target(
            name: "CQPlugin", dependencies: ["CNPAPluginABI"], path: "Plugins/cq", exclude: ["plugin.json"],
            cSettings: [.define("NPA_PLUGIN_ENTRY_NAME", to: "npa_cq_plugin_main")]),
        // What the tests share: in-process hosts and the fixtures built on them, VF guests, the
        // plugin images, child `npa` processes. A regular target under Tests/ that only the tests
        // depend on, so no product, benchmark or fuzzer builds it.
        .target(
            name: "NPATestSupport",
            dependencies: [
                "NPAHost", "NPAShell", "NPAWorkload", "NPANICModel", "NPARingFormats", "NPAControlProtocol", "NPASystem",
                "NPAAdmin", "CNPAPluginABI", "DRingPlugin", "CQPlugin", "NPAPluginBundle",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Tests/NPATestSupport"),
        .testTarget(
            name: "NPATests",
            dependencies: [
                "NPATestSupport", "CVMXNET3Mirror", "NPANICModel", "DRingPlugin", "CQPlugin",
                .product(name: "SystemPackage", package: "swift-system"),
                "NPAHost", "NPAShell", "NPAWorkload", "NPARingFormats", "NPAControlProtocol",
                "NPASystem", "CNPAPluginABI", "npa", "NPAAdmin", "NPAMigration", "NPAPluginBundle", "NPAMetricsEndpoint",
            ]),
    ],
    swiftLanguageModes: [.v6]
)
