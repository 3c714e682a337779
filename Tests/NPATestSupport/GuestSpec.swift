import NPAControlProtocol
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

    package init(
        _ name: String, mac: String? = nil, queues: Int = 2, ringSize: Int = 256, memoryMiB: Int = 8, mtu: Int? = nil, bufferSize: Int? = nil
    ) {
        self.name = name
        self.mac = mac
        self.queues = queues
        self.ringSize = ringSize
        self.memoryMiB = memoryMiB
        self.mtu = mtu
        self.bufferSize = bufferSize
    }

    package var configuration: VirtualNIC.Configuration {
        var c = VirtualNIC.Configuration(name: name, mac: mac.flatMap(MACAddress.init))
        c.txQueues = queues
        c.rxQueues = queues
        c.ringSize = ringSize
        c.memoryBytes = memoryMiB << 20
        if let mtu { c.mtu = mtu }
        if let bufferSize { c.bufferSize = bufferSize }
        return c
    }
}

/// Attaches a guest described by `spec` to `host`'s control socket.
package func attach(_ host: TestHost, _ spec: GuestSpec) throws -> VirtualNIC {
    try VirtualNIC.attach(hostSocket: host.socketPath, configuration: spec.configuration)
}

/// Attaches a guest named `name` to `host` (the shorthand most tests use).
package func attach(_ host: TestHost, _ name: String, mac: String? = nil, queues: Int = 2, ringSize: Int = 256, memoryMiB: Int = 8) throws -> VirtualNIC {
    try attach(host, GuestSpec(name, mac: mac, queues: queues, ringSize: ringSize, memoryMiB: memoryMiB))
}
