import CNPAPluginABI
import Foundation
import NPAPluginBundle

/// The in-tree plugins as the demo, bench and soak inject them: `.build/plugins` of the current
/// directory (a checkout), the images built by scripts/build-plugins.sh when missing, then
/// bundled with their plugin.json and signed by the test key kept there (`test-signing.key`,
/// made once; never committed). Their hosts trust `test-signing.pub`, and so do their guests.
/// Touches only that directory (and runs the build script).
enum InTreePlugins {
    /// The bundle directory, ready; nil if the images cannot be built here.
    static func directory() -> String? {
        let cwd = FileManager.default.currentDirectoryPath
        let dir = cwd + "/.build/plugins"
        if !FileManager.default.fileExists(atPath: dir + "/npa-dring.so") {
            let script = cwd + "/scripts/build-plugins.sh"
            guard FileManager.default.fileExists(atPath: script) else { return bundled(dir) }
            let build = Process()
            build.executableURL = URL(fileURLWithPath: "/bin/bash")
            build.arguments = [script, dir]
            build.standardOutput = FileHandle.nullDevice
            build.standardError = FileHandle.nullDevice
            guard (try? build.run()) != nil else { return nil }
            build.waitUntilExit()
            guard build.terminationStatus == 0 else { return nil }
        }
        // Bundled again each time: cheap, and it follows edits to the images and plugin.json.
        if FileManager.default.fileExists(atPath: cwd + "/Plugins") {
            do {
                try InTreeBundles.build(in: dir, pluginsRoot: cwd + "/Plugins", abiVersion: NPA_PLUGIN_ABI_VERSION)
            } catch {
                FileHandle.standardError.write(Data("npa: cannot bundle the in-tree plugins: \(error)\n".utf8))
                return nil
            }
        }
        return bundled(dir)
    }

    private static func bundled(_ dir: String) -> String? {
        FileManager.default.fileExists(atPath: dir + "/npa-dring.npabundle") && FileManager.default.fileExists(atPath: trustFile(dir))
            ? dir : nil
    }

    /// The public key the bundles in `directory` are signed with.
    static func trustFile(_ directory: String) -> String { directory + "/" + InTreeBundles.publicKeyName }

    /// The trust store of that key (empty if it cannot be read: such a guest stays emulated).
    static func trust(_ directory: String) -> PluginTrustStore {
        (try? PluginTrustStore(files: [trustFile(directory)])) ?? PluginTrustStore()
    }
}
