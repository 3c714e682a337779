import Logging
import NPAControlProtocol

extension HostConfiguration {
    /// What a host started with this configuration makes of its plugin store (`plugin_dir`,
    /// `plugin_trust`), by the store's own logic, without starting one: which bundle it injects
    /// for each NIC model and why it refuses the others. Reads the store and the key files.
    package var pluginStoreSurvey: StatusReport.PluginStore {
        var quiet = Logger(label: "npa.plugin-store")
        quiet.logLevel = .critical  // the refusals are in the report; the caller says them its own way
        return PluginStore(directory: pluginDirectory, trustFiles: pluginTrust, logger: quiet).status
    }
}
