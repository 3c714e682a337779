import ArgumentParser
import CNPAPluginABI
import Foundation
import NPAPluginBundle

/// `npa plugin build DIR [--out BUNDLE] [--key K]`: compiles a plugin's sources into the
/// freestanding image the shell maps (C with clang, or Embedded Swift: `DIR/*.c` or
/// `DIR/*.swift`, against the ABI headers), checks it as a host will (`PluginBinaryPolicy`),
/// and packs it with `DIR/plugin.json` (name, version, vendor, models, licence; the ABI version
/// and the binary's digest are filled in) into a bundle, signed if a key is given. The same
/// flags as `scripts/build-plugins.sh`: no OS calls, the entry point the only export.
struct PluginBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build a plugin bundle from a directory of C or Embedded Swift sources and its plugin.json.")

    @Argument(help: "The plugin's directory: *.c or *.swift, and plugin.json.") var directory: String
    @Option(help: "The bundle to write (default: <name>.npabundle in the current directory).") var out: String?
    @Option(help: "Sign with this private key (npa plugin keygen).") var key: String?
    @Option(help: "The directory holding npa_plugin_abi.h (default: the one next to this source tree).")
    var abiHeaders: String?

    func run() throws {
        let dir = URL(fileURLWithPath: directory)
        let description: PluginDescription
        do {
            description = try JSONDecoder().decode(
                PluginDescription.self, from: Data(readFile(dir.appendingPathComponent("plugin.json").path)))
        } catch let failure as CommandFailure {
            throw failure
        } catch {
            throw CommandFailure("\(directory)/plugin.json: \(error)")
        }
        let headers = abiHeaders ?? Self.defaultHeaders()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-plugin-build-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let image = try PluginCompiler(headers: headers, work: work).build(sourcesIn: dir, moduleName: description.name)
        let binary = try readFile(image.path)
        do { try PluginBinaryPolicy().check(binary) } catch {
            throw CommandFailure("\(directory): the image breaks the plugin rule: \(error)")
        }
        let manifest = description.manifest(abiVersion: NPA_PLUGIN_ABI_VERSION)
        do { try PluginLicence.check(manifest.licence) } catch { throw CommandFailure("\(directory): \(error)") }
        var bundle = PluginBundle(manifest: manifest, binary: binary)
        if let key {
            let signer: PluginSigningKey
            do { signer = try PluginSigningKey(contentsOfFile: key) } catch { throw CommandFailure("\(error)") }
            signer.sign(&bundle)
        }
        let path = out ?? "\(description.name).npabundle"
        let bytes = bundle.encode()
        try write(bytes, to: path)
        print(
            "built \(path) (\(bytes.count) bytes, binary \(binary.count)): \(description.name) \(description.version), \(bundle.signature.map { "signed by key \($0.keyID)" } ?? "unsigned")"
        )
    }

    /// Sources/CNPAPluginABI/include in the tree this binary was built from.
    static func defaultHeaders() -> String {
        // This file is Sources/npa/PluginBuildCommand.swift.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("CNPAPluginABI/include").path
    }
}
