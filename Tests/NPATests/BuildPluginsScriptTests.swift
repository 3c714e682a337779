import Foundation
import NPAPluginBundle
import NPATestSupport
import Testing

/// scripts/build-plugins.sh builds a plugin directory with more than one C file (each file to
/// its own object, then linked together, as `npa plugin build` does): a vendor's plugin need
/// not be one file.
struct BuildPluginsScriptTests {
    @Test func aPluginOfTwoCFilesBuildsIntoOneImageExportingOnlyTheEntryPoint() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-build-script-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugin = dir.appendingPathComponent("plugins/split")
        try FileManager.default.createDirectory(at: plugin, withIntermediateDirectories: true)
        // The entry point in one file calls a helper defined in the other.
        try """
        #include "npa_plugin_abi.h"
        int32_t split_fill(npa_plugin_ops *ops);
        __attribute__((visibility("default"))) int32_t npa_plugin_main(npa_plugin_ops *ops) { return split_fill(ops); }
        """.write(to: plugin.appendingPathComponent("entry.c"), atomically: true, encoding: .utf8)
        try """
        #include "npa_plugin_abi.h"
        int32_t split_fill(npa_plugin_ops *ops) { ops->tx_offloads = 0; return NPA_OK; }
        """.write(to: plugin.appendingPathComponent("ops.c"), atomically: true, encoding: .utf8)

        let out = dir.appendingPathComponent("out")
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/bin/bash")
        build.arguments = [
            PluginImages.root.appendingPathComponent("scripts/build-plugins.sh").path, out.path, plugin.deletingLastPathComponent().path,
        ]
        let errors = Pipe()
        build.standardOutput = FileHandle.nullDevice
        build.standardError = errors
        try build.run()
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        build.waitUntilExit()
        #expect(build.terminationStatus == 0, "\(said)")

        let image = try ELFSharedObject(bytes: [UInt8](Data(contentsOf: out.appendingPathComponent("npa-split.so"))))
        #expect(image.fileType == .sharedObject)
        #expect(image.dynamicSymbols.filter(\.isDefined).map(\.name) == ["npa_plugin_main"])
        #expect(image.dynamicSymbols.filter { !$0.isDefined }.isEmpty)
    }
}
