import Foundation
import Logging
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAPluginBundle
import NPAShell
import NPASystem

/// A host daemon on its own engine thread ("npa-host") inside this process, on a fresh socket:
/// what `npa demo`, `npa soak` and `npa bench` run their guests against.
final class InProcessHost {
    let daemon: HostDaemon
    let socket: String
    /// The host's admin socket: status, switches and VF resets.
    let admin: AdminClient
    let thread: pthread_t
    /// The keys the host trusts; the guests attached here trust the same.
    let pluginTrust: PluginTrustStore

    init(label: String, configuration: HostConfiguration, metrics: HostMetrics? = nil) throws {
        pluginTrust = (try? PluginTrustStore(files: configuration.pluginTrust)) ?? PluginTrustStore()
        socket =
            NSTemporaryDirectory() + "npa-\(label)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max)).sock"
        var logger = Logger(label: "npa.\(label).host")
        logger.logLevel = .warning
        daemon = try HostDaemon(socketPath: socket, configuration: configuration, metrics: metrics, logger: logger)
        admin = AdminClient(socketPath: daemon.adminSocketPath)
        let d = daemon
        thread = EngineThread.start(name: "npa-host") {
            do { try d.run() } catch { print("host failed: \(error)") }
        }
    }

    /// A host whose uplink is the PF of one software NIC, with the signed bundles in `plugins`,
    /// trusting the key files `trust` (nil: the test key beside them, `InTreePlugins`).
    static func withNIC(
        label: String, model: String, vfs: Int = 8, autoPassthrough: Bool = false, plugins: String, trust: [String]? = nil
    ) throws -> InProcessHost {
        var config = HostConfiguration()
        config.nics = [.init(name: "nic0", model: model, vfs: vfs)]
        config.uplink = .nic("nic0")
        config.autoPassthrough = autoPassthrough
        config.pluginDirectory = plugins
        config.pluginTrust = trust ?? [InTreePlugins.trustFile(plugins)]
        return try InProcessHost(label: label, configuration: config)
    }

    /// Attaches a guest in this process (1024-descriptor rings; jumbo buffers for large frames).
    /// `configure` may adjust the rest (queues, spinning) before the guest attaches.
    func attach(
        _ name: String, mac: String, memoryMiB: Int = 32, frameBytes: Int = 1514,
        configure: (inout VirtualNIC.Configuration) -> Void = { _ in }
    ) throws -> VirtualNIC {
        var c = VirtualNIC.Configuration(name: name, mac: MACAddress(mac))
        c.ringSize = 1024
        c.memoryBytes = memoryMiB << 20
        if frameBytes > 2030 {
            c.bufferSize = 9216
            c.mtu = 9000
        }
        c.pluginTrust = pluginTrust
        configure(&c)
        return try VirtualNIC.attach(hostSocket: socket, configuration: c)
    }

    func stop() {
        daemon.stop()
        EngineThread.join(thread)
    }
}
