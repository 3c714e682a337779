import Foundation

/// The in-tree plugins as signed bundles: after `scripts/build-plugins.sh` has built
/// `npa-<dir>.so` for each `Plugins/<dir>`, packs each with its `plugin.json` into
/// `npa-<dir>.npabundle` beside it, signed by a test key kept in the same directory
/// (`test-signing.key`, `test-signing.pub`; made once if missing). The test key means nothing
/// outside this machine: the tests, the demo, bench and soak trust it. Touches only that directory.
public enum InTreeBundles {
    public static let keyName = "test-signing.key"
    public static let publicKeyName = "test-signing.pub"

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Bundles every `npa-<dir>.so` in `directory` for which `pluginsRoot/<dir>/plugin.json`
    /// exists, signed by `key` (or the directory's test key, made if missing). Returns the bundle
    /// paths.
    @discardableResult
    public static func build(
        in directory: String, pluginsRoot: String, abiVersion: UInt32, key: PluginSigningKey? = nil
    ) throws -> [String] {
        let signer = try key ?? testKey(in: directory)
        let dirs = try FileManager.default.contentsOfDirectory(atPath: pluginsRoot).sorted()
        var written: [String] = []
        for dir in dirs {
            let image = "\(directory)/npa-\(dir).so"
            let json = "\(pluginsRoot)/\(dir)/plugin.json"
            guard FileManager.default.fileExists(atPath: image), FileManager.default.fileExists(atPath: json) else { continue }
            let description: PluginDescription
            do {
                description = try JSONDecoder().decode(PluginDescription.self, from: Data(contentsOf: URL(fileURLWithPath: json)))
            } catch {
                throw Failure(description: "\(json): \(error)")
            }
            let binary = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
            var bundle = PluginBundle(manifest: description.manifest(abiVersion: abiVersion), binary: binary)
            signer.sign(&bundle)
            let path = "\(directory)/npa-\(dir).npabundle"
            try Data(bundle.encode()).write(to: URL(fileURLWithPath: path), options: .atomic)
            written.append(path)
        }
        return written
    }

    /// The directory's test key, made (with its `.pub`) if there is none yet.
    public static func testKey(in directory: String) throws -> PluginSigningKey {
        let path = "\(directory)/\(keyName)"
        let key: PluginSigningKey
        if FileManager.default.fileExists(atPath: path) {
            key = try PluginSigningKey(contentsOfFile: path)
        } else {
            key = PluginSigningKey.generate()
            try key.writeKeyFiles(at: path)
            // writeKeyFiles names the public key `K.pub`; the trust lists name test-signing.pub.
            try? FileManager.default.removeItem(atPath: path + ".pub")
        }
        try key.publicKey.write(to: "\(directory)/\(publicKeyName)")
        return key
    }
}
