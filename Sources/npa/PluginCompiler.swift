import Foundation

/// Compiles one plugin directory into a freestanding, position-independent shared object: C
/// with clang (`-ffreestanding -fno-builtin`, hidden visibility), Embedded Swift with swiftc,
/// linked with `-nostdlib` and a version script that exports only `npa_plugin_main`. The
/// compilers are found on PATH (or `CC`, `SWIFTC`) or under /opt/swift. Writes only in `work`.
struct PluginCompiler {
    let headers: String
    let work: URL

    func build(sourcesIn dir: URL, moduleName: String) throws -> URL {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path))?.sorted() ?? []
        let swift = files.filter { $0.hasSuffix(".swift") }.map { dir.appendingPathComponent($0).path }
        let c = files.filter { $0.hasSuffix(".c") }.map { dir.appendingPathComponent($0).path }
        guard !(swift.isEmpty && c.isEmpty) else { throw CommandFailure("\(dir.path): no .c or .swift sources") }
        guard swift.isEmpty || c.isEmpty else {
            throw CommandFailure("\(dir.path): both C and Swift sources; a plugin is one or the other")
        }
        let object = work.appendingPathComponent("plugin.o").path
        let cc = Self.tool("CC", "clang")
        if swift.isEmpty {
            var objects: [String] = []
            for (i, file) in c.enumerated() {
                let o = work.appendingPathComponent("c\(i).o").path
                try run(
                    cc,
                    [
                        "-O2", "-fPIC", "-ffreestanding", "-fno-builtin", "-fno-stack-protector", "-ffunction-sections",
                        "-fvisibility=hidden", "-I", headers, "-c", file, "-o", o,
                    ])
                objects.append(o)
            }
            try run(cc, ["-r", "-nostdlib", "-o", object] + objects)
        } else {
            try writeModuleMap()
            let module = "plugin_" + moduleName.map { $0.isLetter || $0.isNumber ? $0 : "_" }.map(String.init).joined()
            try run(
                Self.tool("SWIFTC", "swiftc"),
                [
                    "-enable-experimental-feature", "Embedded", "-wmo", "-parse-as-library", "-O", "-Xcc", "-fPIC",
                    "-Xfrontend", "-function-sections", "-Xfrontend", "-disable-stack-protector",
                    "-I", work.path, "-module-name", module, "-c",
                ] + swift + ["-o", object])
        }
        let exports = work.appendingPathComponent("exports.map")
        try Data("{ global: npa_plugin_main; local: *; };\n".utf8).write(to: exports)
        let image = work.appendingPathComponent("plugin.so")
        try run(
            cc,
            [
                "-shared", "-nostdlib", "-Wl,--gc-sections", "-Wl,--version-script=\(exports.path)", "-Wl,-z,norelro",
                "-o", image.path, object,
            ])
        return image
    }

    /// Embedded Swift imports the ABI headers through a module map.
    private func writeModuleMap() throws {
        let headerNames = ["npa_plugin_abi.h", "npa_nic_models.h", "npa_plugin_atomics.h", "npa_plugin_support.h"]
        let map = "module CNPAPluginABI {\n" + headerNames.map { "    header \"\(headers)/\($0)\"\n" }.joined() + "    export *\n}\n"
        try Data(map.utf8).write(to: work.appendingPathComponent("module.modulemap"))
    }

    private func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do { try process.run() } catch { throw CommandFailure("\(tool) could not be started: \(error)") }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailure(
                "\((tool as NSString).lastPathComponent) failed: \(text.split(separator: "\n").prefix(3).joined(separator: " / "))")
        }
    }

    /// `$VARIABLE`, else `name` on PATH, else /opt/swift/usr/bin/`name`.
    static func tool(_ variable: String, _ name: String) -> String {
        if let path = ProcessInfo.processInfo.environment[variable], !path.isEmpty { return path }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return "/opt/swift/usr/bin/\(name)"
    }
}
