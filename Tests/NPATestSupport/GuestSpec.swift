import NPAControlProtocol
import NPAPluginBundle
import NPAShell

/// How a test guest attaches: the parts of a vNIC's configuration tests vary. The defaults are
/// small (2 queues of 256 descriptors in 8 MiB) so that many guests fit a loaded CI machine.
package struct GuestSpec: Sendable {
    package var name: String
    /// nil: the host assigns one.
    package var mac: String?
    package var queues = 2
    package var ringSize = 256
    package var memoryMiB = 8
    package var mtu: Int?
    package var bufferSize: Int?
    /// Polls before sleeping on the interrupt (`Int.max`: busy-poll); nil: the shell's default.
    package var spinPolls: Int?
    /// The keys whose plugin bundles the guest maps: the test signing key unless a test says.
    package var pluginTrust = PluginImages.trust

    package init(
        _ name: String, mac: String? = nil, queues: Int = 2, ringSize: Int = 256, memoryMiB: Int = 8, mtu: Int? = nil,
        bufferSize: Int? = nil, spinPolls: Int? = nil
    ) {
        self.name = name
        self.mac = mac
        self.queues = queues
        self.ringSize = ringSize
        self.memoryMiB = memoryMiB
        self.mtu = mtu
        self.bufferSize = bufferSize
        self.spinPolls = spinPolls
    }

    package var configuration: VirtualNIC.Configuration {
        var c = VirtualNIC.Configuration(name: name, mac: mac.flatMap(MACAddress.init))
        c.txQueues = queues
        c.rxQueues = queues
        c.ringSize = ringSize
        c.memoryBytes = memoryMiB << 20
        if let mtu { c.mtu = mtu }
        if let bufferSize { c.bufferSize = bufferSize }
        if let spinPolls { c.spinPolls = spinPolls }
        c.pluginTrust = pluginTrust
        return c
    }

    /// Attaches a guest so described to the host listening on `socketPath` (an in-process host
    /// or a child `npa host`).
    package func attach(to socketPath: String) throws -> VirtualNIC {
        try VirtualNIC.attach(hostSocket: socketPath, configuration: configuration)
    }
}

/// Attaches a guest described by `spec` to `host`'s control socket.
package func attach(_ host: TestHost, _ spec: GuestSpec) throws -> VirtualNIC {
    try spec.attach(to: host.socketPath)
}

/// Attaches a guest named `name` to `host` (the shorthand most tests use).
package func attach(_ host: TestHost, _ name: String, mac: String? = nil, queues: Int = 2, ringSize: Int = 256, memoryMiB: Int = 8) throws
    -> VirtualNIC
{
    try attach(host, GuestSpec(name, mac: mac, queues: queues, ringSize: ringSize, memoryMiB: memoryMiB))
}
