import CNPAPluginABI
import Foundation
import NPAPluginBundle
import NPASystem
import SystemPackage

/// The freestanding plugin images, built once per test process with the project's script
/// (scripts/build-plugins.sh), and bundled beside them as the host's store takes them: each
/// `npa-<dir>.so` with its `Plugins/<dir>/plugin.json` into `npa-<dir>.npabundle`, signed by a
/// key generated once per test process (its public key in `test-signing.pub`). Also the host's
/// way of handing an image to a shell (a memfd). Touches only the file system and its own
/// temporary directory.
package enum PluginImages {
    private static let built = Result { try buildNow() }

    /// The key the in-tree bundles of this test process are signed with.
    package static let signingKey = PluginSigningKey.generate()

    /// A trust store holding only the test signing key (what test guests trust).
    package static var trust: PluginTrustStore { PluginTrustStore(keys: [signingKey.publicKey]) }

    /// The directory holding `<image>.so` and `<image>.npabundle` for every plugin; built on first use.
    package static func directory() throws -> URL { try built.get() }

    /// The test signing key's public key file (what test hosts list in `plugin_trust`).
    package static func publicKeyPath() throws -> String {
        try directory().appendingPathComponent(InTreeBundles.publicKeyName).path
    }

    /// The repository's root: this file is Tests/NPATestSupport/PluginImages.swift.
    package static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    private static func buildNow() throws -> URL {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-plugins-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let build = Process()
        build.executableURL = URL(fileURLWithPath: "/bin/bash")
        build.arguments = [root.appendingPathComponent("scripts/build-plugins.sh").path, out.path]
        build.standardOutput = FileHandle.nullDevice
        try build.run()
        build.waitUntilExit()
        guard build.terminationStatus == 0 else { throw CocoaError(.executableLoad) }
        try InTreeBundles.build(
            in: out.path, pluginsRoot: root.appendingPathComponent("Plugins").path, abiVersion: NPA_PLUGIN_ABI_VERSION, key: signingKey)
        try signingKey.publicKey.write(to: out.appendingPathComponent(InTreeBundles.publicKeyName).path)
        return out
    }

    /// The manifest `Plugins/<dir>/plugin.json` describes (e.g. "dring"), for this build's ABI.
    package static func manifest(of dir: String) throws -> PluginManifest {
        let json = try Data(contentsOf: root.appendingPathComponent("Plugins/\(dir)/plugin.json"))
        return try JSONDecoder().decode(PluginDescription.self, from: json).manifest(abiVersion: NPA_PLUGIN_ABI_VERSION)
    }

    /// A bundle of `binary` described by `manifest`, signed by `key` (unsigned if nil), encoded.
    package static func bundle(_ manifest: PluginManifest, binary: [UInt8], key: PluginSigningKey?) -> [UInt8] {
        var bundle = PluginBundle(manifest: manifest, binary: binary)
        key?.sign(&bundle)
        return bundle.encode()
    }

    /// What the host does to inject an image: put its bytes in a memfd.
    package static func memfd(holding path: String) throws -> FileDescriptor {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let memory = try SharedMemory(name: "plugin-image", size: bytes.count)
        bytes.withUnsafeBytes { memory.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        return try memory.fd.duplicate()
    }

    /// The built image named `name` (e.g. "npa-cq-swift"), in a memfd.
    package static func memfd(named name: String) throws -> FileDescriptor {
        try memfd(holding: directory().appendingPathComponent("\(name).so").path)
    }
}
