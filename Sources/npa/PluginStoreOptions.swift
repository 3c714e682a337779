import ArgumentParser
import Foundation
import NPAPluginBundle

/// `--plugin-store` and `--plugin-trust`, for every command that injects a plugin (demo, bench,
/// soak) and for `npa host`: the directory of signed bundles the hosts inject from and the
/// public keys whose signatures they (and the commands' guests) accept. Without them the
/// commands inject the in-tree bundles signed with their test key (`InTreePlugins`); `npa host`
/// reads `plugin_dir` and `plugin_trust` from its configuration and these override and add.
struct PluginStoreOptions: ParsableArguments {
    @Option(
        name: .customLong("plugin-store"),
        help: ArgumentHelp(
            "A directory of signed plugin bundles (*.npabundle) to inject.",
            discussion:
                "demo, bench, soak: needs --plugin-trust; default: the in-tree bundles in ./.build/plugins, built and signed with the test key kept there. npa host: replaces plugin_dir.",
            valueName: "dir"))
    var pluginStore: String?

    @Option(
        name: .customLong("plugin-trust"),
        help: ArgumentHelp(
            "A public key file (K.pub), or a directory of .pub files, whose signatures the plugin store accepts (repeatable).",
            discussion: "The guests the command starts trust the same keys. npa host: added to plugin_trust.",
            valueName: "file-or-dir"))
    var pluginTrust: [String] = []

    /// Every key file `--plugin-trust` names, a directory giving its `*.pub` files; each is read
    /// now (`PluginTrustStore`'s loaders), so a missing or malformed key is an error before any run
    /// (one line, exit status 2).
    func trustFiles() throws -> [String] { try Self.trustFiles(pluginTrust) }

    /// `paths` as `--plugin-trust` takes them (key files, or directories of `*.pub`), expanded
    /// to key files and each read; shared with `npa guest --plugin-trust`.
    static func trustFiles(_ paths: [String]) throws -> [String] {
        var files: [String] = []
        do {
            for path in paths {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                    throw CommandFailure("--plugin-trust \(path): no such file or directory")
                }
                guard isDirectory.boolValue else {
                    files.append(path)
                    continue
                }
                let keys = try PluginTrustStore.keyFiles(in: path)
                guard !keys.isEmpty else { throw CommandFailure("--plugin-trust \(path): the directory holds no public key (*.pub)") }
                files += keys
            }
            _ = try PluginTrustStore(files: files)
        } catch let error as PluginKeyFileError {
            throw CommandFailure("--plugin-trust: \(error)")
        }
        return files
    }

    /// For a command that injects (demo, bench, soak): a store needs keys, and keys a store (the
    /// in-tree bundles are signed with, and trusted by, their own test key). Reads no file.
    func validatePairing() throws {
        if let pluginStore, pluginTrust.isEmpty {
            throw ValidationError(
                "--plugin-store \(pluginStore) needs --plugin-trust: the public key (K.pub), or a directory of keys, its bundles are signed with"
            )
        }
        if pluginStore == nil, !pluginTrust.isEmpty {
            throw ValidationError("--plugin-trust is for a --plugin-store: the in-tree bundles are trusted by their own test key")
        }
    }

    /// The store a command's hosts inject from: `--plugin-store` trusting `--plugin-trust`, or
    /// else the in-tree bundles (nil when they cannot be built here).
    func source() throws -> PluginSource? {
        try validatePairing()
        guard let pluginStore else { return InTreePlugins.directory().map(PluginSource.inTree) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: pluginStore, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CommandFailure("--plugin-store \(pluginStore): not a directory")
        }
        return PluginSource(directory: pluginStore, trustFiles: try trustFiles())
    }

    /// `source()`, for a command that cannot run without plugin bundles.
    func requiredSource() throws -> PluginSource {
        guard let source = try source() else {
            throw CommandFailure(
                "no plugin bundles in .build/plugins (run from the repository: scripts/build-plugins.sh builds the images, npa signs them; or give --plugin-store and --plugin-trust)"
            )
        }
        return source
    }
}
