import Foundation

/// The public keys whose signatures a host (or a guest's shell) accepts on plugin bundles, found
/// by key id. Built from key files or a directory of `.pub` files; touches the file system only
/// while loading. An empty store accepts nothing.
public struct PluginTrustStore: Sendable {
    public private(set) var keys: [PluginKeyID: PluginPublicKey] = [:]

    public init(keys: [PluginPublicKey] = []) {
        for k in keys { self.keys[k.keyID] = k }
    }

    /// Every key in `files` (each a `.pub` file); the first unreadable or malformed one throws.
    public init(files: [String]) throws(PluginKeyFileError) {
        var keys: [PluginPublicKey] = []
        for f in files { keys.append(try PluginPublicKey(contentsOfFile: f)) }
        self.init(keys: keys)
    }

    /// Every `*.pub` file in `directory` (other files are ignored: a private key kept beside its
    /// public one is not a trusted key).
    public init(directory: String) throws(PluginKeyFileError) {
        try self.init(files: Self.keyFiles(in: directory))
    }

    /// The `*.pub` files in `directory`, by name: the key files `init(directory:)` loads.
    public static func keyFiles(in directory: String) throws(PluginKeyFileError) -> [String] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw PluginKeyFileError(directory, "cannot list the trust directory")
        }
        return names.filter { $0.hasSuffix(".pub") }.sorted().map { directory + "/" + $0 }
    }

    public func key(for id: PluginKeyID) -> PluginPublicKey? { keys[id] }
    public var isEmpty: Bool { keys.isEmpty }
}
