/// What a plugin's directory says of it in `plugin.json` (name, version, vendor, models,
/// licence); a build adds the ABI version and the binary's digest to make the manifest.
public struct PluginDescription: Decodable, Sendable {
    public var name: String
    public var version: String
    public var vendor: String
    public var models: [PluginManifest.Model]
    public var licence: String

    /// The manifest of a build of this plugin for `abiVersion` (the digest is filled in when the
    /// bundle is made).
    public func manifest(abiVersion: UInt32) -> PluginManifest {
        PluginManifest(
            name: name, version: version, vendor: vendor, models: models, abiVersion: abiVersion, licence: licence, binarySHA256: "")
    }
}
