import NPAControlProtocol
import NPAHost

/// The plugin store a command's in-process hosts inject from and the key files they trust (their
/// guests trust the same): the one `--plugin-store`/`--plugin-trust` name, or the in-tree
/// bundles with their test key. It reads the store (by the host's own store logic) and nothing else.
struct PluginSource {
    let directory: String
    let trustFiles: [String]

    /// The in-tree bundles in `directory`, trusting the test key kept beside them.
    static func inTree(_ directory: String) -> PluginSource {
        PluginSource(directory: directory, trustFiles: [InTreePlugins.trustFile(directory)])
    }

    /// Points a host configuration's `plugin_dir` and `plugin_trust` at this store.
    func configure(_ configuration: inout HostConfiguration) {
        configuration.pluginDirectory = directory
        configuration.pluginTrust = trustFiles
    }

    /// `--plugin-trust` for each key, for a guest in its own process.
    var guestArguments: [String] { trustFiles.flatMap { ["--plugin-trust", $0] } }

    /// The bundle a host configured with this store injects for each of `models` (in order, once
    /// each), decided by the host's own store logic; throws if a model has none, listing the store's
    /// refusals, one line each, rather than let the run fall back to emulation unnoticed.
    func injections(for models: [String]) throws -> [StatusReport.PluginInjection] {
        var configuration = HostConfiguration()
        configure(&configuration)
        let store = configuration.pluginStoreSurvey
        var seen: Set<String> = []
        return try models.filter { seen.insert($0).inserted }.map { model in
            guard let injection = store.injection(for: model) else {
                throw CommandFailure(store.noBundleLines(for: model).joined(separator: "\n"))
            }
            return injection
        }
    }
}
