import Crypto
import NPAPluginBundle

/// Bundles and keys the plugin-bundle tests build on: a small fake binary, a manifest that passes
/// every check, a trusted signing key, and a verifier set up like the host's.
enum PluginBundleFixtures {
    static let abi: UInt32 = 1
    static let models: Set<String> = ["npa-dring", "npa-cq"]
    static let binary: [UInt8] = Array("\u{7f}ELF not really a plugin, but bytes to sign".utf8)

    static func manifest(
        schemaVersion: Int = PluginManifest.currentSchemaVersion, licence: String = "GPL-2.0-only", abi: UInt32 = abi,
        models: [PluginManifest.Model] = [.init(model: "npa-dring", vfDeviceIDs: [0x7b10, 0x7b11])]
    ) -> PluginManifest {
        PluginManifest(
            schemaVersion: schemaVersion, name: "dring-c", version: "1.0.0", vendor: "Example NIC Co.", models: models,
            abiVersion: abi, licence: licence, binarySHA256: String(repeating: "0", count: 64))
    }

    /// A bundle of `binary` described by `manifest`, signed by `key` (unsigned if nil).
    static func bundle(_ manifest: PluginManifest = manifest(), binary: [UInt8] = binary, key: PluginSigningKey?) -> PluginBundle {
        var bundle = PluginBundle(manifest: manifest, binary: binary)
        key?.sign(&bundle)
        return bundle
    }

    static func verifier(trusting keys: [PluginSigningKey], maxSize: Int = PluginBundle.defaultMaxSize) -> PluginBundleVerifier {
        PluginBundleVerifier(trust: PluginTrustStore(keys: keys.map(\.publicKey)), expectedABI: abi, knownModels: models, maxSize: maxSize)
    }

    /// The refusal reason `verify` throws for `bytes`, or nil if it accepts them.
    static func refusal(_ bytes: [UInt8], by verifier: PluginBundleVerifier) -> PluginBundleRefusal? {
        do {
            _ = try verifier.verify(bytes, name: "test.npab")
            return nil
        } catch {
            return error
        }
    }
}
