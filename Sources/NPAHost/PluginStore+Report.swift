import Logging
import NPAControlProtocol

extension PluginStore {
    /// The store as `npa status` shows it (`status`), with each accepted bundle's vendor and
    /// licence from its manifest: what a command that injects a plugin prints about it.
    var report: StatusReport.PluginStore {
        var report = status
        for i in report.bundles.indices {
            guard let entry = entries.first(where: { $0.file == report.bundles[i].file }), case .success(let accepted) = entry.verdict
            else { continue }
            report.bundles[i].vendor = accepted.manifest.vendor
            report.bundles[i].licence = accepted.manifest.licence
        }
        return report
    }
}

extension HostConfiguration {
    /// What a host started with this configuration makes of its plugin store (`plugin_dir`,
    /// `plugin_trust`), by the store's own logic, without starting one: which bundle it injects
    /// for each NIC model and why it refuses the others. Reads the store and the key files.
    package var pluginStoreSurvey: StatusReport.PluginStore {
        var quiet = Logger(label: "npa.plugin-store")
        quiet.logLevel = .critical  // the refusals are in the report; the caller says them its own way
        return PluginStore(directory: pluginDirectory, trustFiles: pluginTrust, logger: quiet).report
    }
}
