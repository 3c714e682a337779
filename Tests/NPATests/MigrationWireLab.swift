import Foundation
import NPAHost
import NPASystem
import NPATestSupport

/// Two in-process hosts that migrate guests to each other over their TAP wires: host A with a
/// `npa-dring` NIC, host B with a `npa-cq` NIC, each NIC's wire a TAP the host made, moved into a
/// LAN namespace and joined there by a Linux bridge, with a plain namespace on the bridge (veth)
/// as a machine on the LAN (`10.<subnet>.0.100/24`). Both hosts share one key file and listen
/// for migrations on Unix socket paths of their own. The guests are driven by the test, so it
/// can keep them sending while they migrate.
///
/// Owns the hosts, the key file and (through its `NetworkLab`) every namespace; `tearDown`
/// (call it in a `defer`) stops the hosts and removes them all.
final class MigrationWireLab {
    let lab = NetworkLab()
    let keyFile = ScriptedDestination.writeKeyFile()
    private(set) var hosts: [TestHost] = []
    private(set) var lan = ""
    private(set) var machine = ""
    let subnet: UInt8
    var a: TestHost { hosts[0] }
    var b: TestHost { hosts[1] }
    var machineAddress: String { "10.\(subnet).0.100" }

    static let models = ["npa-dring", "npa-cq"]

    init(subnet: UInt8) throws {
        self.subnet = subnet
        do { try build() } catch {
            tearDown()
            throw error
        }
    }

    private func build() throws {
        let plugins = try PluginImages.directory().path
        let taps = ["nmw\(lab.tag)a", "nmw\(lab.tag)b"]
        for (i, tap) in taps.enumerated() {
            var configuration = try HostConfiguration.withNIC(model: Self.models[i], vfs: 4, pluginDirectory: plugins)
            configuration.nics[0].wireTAP = tap
            configuration.migrationKeyFile = keyFile
            configuration.migrationListen = TestHost.freshSocketPath() + ".migrate"
            // No phase of these migrations may fail for a loaded machine's pauses.
            configuration.migrationTimeoutMilliseconds = 60_000
            hosts.append(try TestHost(configuration: configuration))
            guard eventually(timeoutMilliseconds: 60_000, { (try? lab.ip(["-o", "link", "show", tap]))?.contains(",UP") == true }) else {
                throw LabFailure(description: "\(tap) never came up")
            }
        }
        lan = try lab.addNamespace("lan")
        try lab.ip(["-n", lan, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
        try lab.ip(["-n", lan, "link", "set", "br0", "up"])
        for tap in taps {
            try lab.ip(["link", "set", tap, "netns", lan])
            try lab.ip(["-n", lan, "link", "set", tap, "master", "br0", "up"])
        }
        machine = try lab.addNamespace("m")
        let (machineEnd, bridgeEnd) = ("nmw\(lab.tag)vm", "nmw\(lab.tag)vb")
        try lab.ip(["link", "add", machineEnd, "netns", machine, "type", "veth", "peer", "name", bridgeEnd, "netns", lan])
        try lab.ip(["-n", lan, "link", "set", bridgeEnd, "master", "br0", "up"])
        try lab.ip(["-n", machine, "addr", "add", "\(machineAddress)/24", "dev", machineEnd])
        try lab.ip(["-n", machine, "link", "set", machineEnd, "up"])
    }

    /// Where `host` takes migrations.
    func address(of host: TestHost) -> String { host.daemon.migrationAddress ?? "" }

    func tearDown() {
        for host in hosts { host.stop() }
        lab.removeAll()
        unlink(keyFile)
    }
}
