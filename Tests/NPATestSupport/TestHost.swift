import Foundation
import Logging
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem

/// A host daemon running on its own thread for one test, on a fresh socket path.
package final class TestHost: @unchecked Sendable {
    package let daemon: HostDaemon
    package let socketPath: String
    /// The admin socket and its client: status, switches and VF resets go there.
    package var adminSocketPath: String { daemon.adminSocketPath }
    package let admin: AdminClient
    private var thread: pthread_t?

    /// `trustingTestKey` false leaves `plugin_trust` as the configuration has it, even empty.
    package init(
        configuration: HostConfiguration = HostConfiguration(), socketPath: String? = nil, trustingTestKey: Bool = true,
        metrics: HostMetrics? = nil, label: String = #function
    ) throws {
        // Time limits that protect a host from stuck guests (a receiver that stops taking frames,
        // a guest that stops answering a switch) are set far beyond any pause a loaded CI
        // machine imposes, so no outcome here depends on timing; tests of those limits set their own.
        var configuration = configuration
        let defaults = HostConfiguration()
        if configuration.receiverStallMilliseconds == defaults.receiverStallMilliseconds {
            configuration.receiverStallMilliseconds = 60_000
        }
        if configuration.switchTimeoutMilliseconds == defaults.switchTimeoutMilliseconds {
            configuration.switchTimeoutMilliseconds = 60_000
        }
        // A host with NICs trusts the test signing key of the bundles built for this process
        // unless the test names its own keys.
        if trustingTestKey && configuration.pluginTrust.isEmpty && !configuration.nics.isEmpty {
            configuration.pluginTrust = [try PluginImages.publicKeyPath()]
        }
        self.socketPath = socketPath ?? Self.freshSocketPath()
        var logger = Logger(label: "npa.test.host")
        logger.logLevel = ProcessInfo.processInfo.environment["NPA_TEST_LOG"] != nil ? .debug : .critical
        daemon = try HostDaemon(socketPath: self.socketPath, configuration: configuration, metrics: metrics, logger: logger)
        admin = AdminClient(socketPath: daemon.adminSocketPath)
        let d = daemon
        thread = EngineThread.start(name: "npa-host") {
            do { try d.run() } catch { print("host failed: \(error)") }
        }
    }

    /// A socket path no other test uses.
    package static func freshSocketPath() -> String {
        NSTemporaryDirectory() + "npa-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
    }

    package func stop() {
        daemon.stop()
        if let t = thread { EngineThread.join(t) }
        thread = nil
    }

    deinit { stop() }
}

extension HostConfiguration {
    /// A host with one software NIC (`nic0`) whose PF is the vswitch's uplink, and the plugin
    /// bundles built for this test process (or `pluginDirectory`), trusting the test signing key.
    package static func withNIC(
        model: String, vfs: Int = 8, autoPassthrough: Bool = false, policies: [String: GuestPolicy] = [:], pluginDirectory: String? = nil
    ) throws -> HostConfiguration {
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: model, vfs: vfs)]
        config.uplink = .nic("nic0")
        config.autoPassthrough = autoPassthrough
        config.guestPolicies = policies
        config.pluginDirectory = try pluginDirectory ?? PluginImages.directory().path
        config.pluginTrust = [try PluginImages.publicKeyPath()]
        return config
    }
}

extension TestHost {
    /// Asks the host (on the admin socket) to switch `guest` to passthrough, then lets the
    /// guest's next data-path call carry the switch out. Returns whether the guest is now in
    /// passthrough; the caller asserts on it (with `guest.lastSwitchError` to say why not).
    @discardableResult
    package func switchIn(_ guest: VirtualNIC) throws -> Bool {
        try admin.switchVNIC(name: guest.name, toPassthrough: true)
        _ = guest.reclaimTransmitted()  // the next data-path call carries the switch out
        return guest.mode == "passthrough"
    }

    /// What `npa status` reports for the vNIC named `name`; nil if the host has none.
    package func status(of name: String) throws -> StatusReport.VNIC? {
        try admin.status().vnics.first { $0.name == name }
    }

    /// The index of the VF the vNIC named `name` is on (its status's `vf`, e.g. "nic0:vf3" is 3);
    /// nil if it is on none.
    package func vfIndex(of name: String) throws -> Int? {
        try status(of: name)?.vf?.split(separator: "f").last.flatMap { Int($0) }
    }
}
