import Foundation
import NPAPluginBundle
import Testing

/// The plugin binary rule on real compiler output, not patched images: tiny C plugins built at
/// test time with the flags of scripts/build-plugins.sh (freestanding, -nostdlib, shared), one
/// breaking each symbol rule the way a vendor's mistake would.
struct CompiledPluginBinaryTests {
    static let entry = "int npa_plugin_main(void *abi) { return abi != 0; }\n"

    @Test func aPluginCallingWriteIsRefusedNamingWrite() throws {
        let bytes = try compile(
            "long write(int, const void *, unsigned long);\n" + "__attribute__((visibility(\"default\"))) int npa_plugin_main(void *abi) "
                + "{ return (int)write(1, abi, 1); }\n")
        #expect(throws: PluginBinaryPolicy.Refusal.forbiddenImport("write")) { try PluginBinaryPolicy().check(bytes) }
    }

    @Test func aPluginCallingMallocIsRefusedNamingMalloc() throws {
        let bytes = try compile(
            "void *malloc(unsigned long);\n" + "__attribute__((visibility(\"default\"))) int npa_plugin_main(void *abi) "
                + "{ return malloc(8) != abi; }\n")
        #expect(throws: PluginBinaryPolicy.Refusal.forbiddenImport("malloc")) { try PluginBinaryPolicy().check(bytes) }
    }

    @Test func aPluginExportingASecondFunctionIsRefusedNamingIt() throws {
        let bytes = try compile(
            "__attribute__((visibility(\"default\"))) int npa_plugin_helper(void) { return 7; }\n"
                + "__attribute__((visibility(\"default\"))) " + Self.entry, exports: ["npa_plugin_main", "npa_plugin_helper"])
        #expect(throws: PluginBinaryPolicy.Refusal.unexpectedExport("npa_plugin_helper")) { try PluginBinaryPolicy().check(bytes) }
    }

    @Test func aMinimalFreestandingPluginPasses() throws {
        try PluginBinaryPolicy().check(compile("__attribute__((visibility(\"default\"))) " + Self.entry))
    }

    /// Without build-plugins.sh's export map the linker exports its own symbols (`_end`,
    /// `_edata`, `__bss_start`): the rule sees them as exports, which is why the script has the map.
    @Test func aPluginLinkedWithoutTheExportMapIsRefusedForTheLinkersSymbols() throws {
        let bytes = try compile("__attribute__((visibility(\"default\"))) " + Self.entry, exports: nil)
        guard case .unexpectedExport(let name) = refusal(bytes) else { Issue.record("not refused as an export"); return }
        #expect(["_end", "_edata", "__bss_start"].contains(name))
    }

    func refusal(_ bytes: [UInt8]) -> PluginBinaryPolicy.Refusal? {
        do {
            try PluginBinaryPolicy().check(bytes)
            return nil
        } catch {
            return error
        }
    }

    /// Builds `source` as build-plugins.sh builds a plugin, with an export map that makes
    /// `exports` global (the script's is npa_plugin_main alone; nil: no map), and returns the
    /// image's bytes.
    func compile(_ source: String, exports: [String]? = ["npa_plugin_main"]) throws -> [UInt8] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-elf-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (c, so) = (dir.appendingPathComponent("plugin.c"), dir.appendingPathComponent("plugin.so"))
        try source.write(to: c, atomically: true, encoding: .utf8)
        var map: [String] = []
        if let exports {
            let path = dir.appendingPathComponent("exports.map")
            try "{ global: \(exports.joined(separator: "; ")); local: *; };\n".write(to: path, atomically: true, encoding: .utf8)
            map = ["-Wl,--version-script=\(path.path)"]
        }
        let clang = Process()
        // The compiler build-plugins.sh picks: $CC, else clang on PATH, else the toolchain's.
        clang.executableURL = URL(fileURLWithPath: "/bin/bash")
        clang.arguments =
            ["-c", #"exec "${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}" "$@""#, "clang"] + [
                "-O2", "-fPIC", "-ffreestanding", "-fno-builtin", "-fno-stack-protector", "-fvisibility=hidden", "-shared", "-nostdlib",
                "-Wl,-z,norelro", "-o", so.path, c.path,
            ] + map
        try clang.run()
        clang.waitUntilExit()
        try #require(clang.terminationStatus == 0, "clang failed on \(source)")
        return [UInt8](try Data(contentsOf: so))
    }
}
