import NPAHost
import NPAShell

/// A host running on its own thread with guests attached to it in order: the setup most
/// emulated-path tests start from. Owns the host and the guests' handles; a test reads them and
/// calls `stop()` (or lets the host's deinit stop it).
package final class HostFixture {
    package let host: TestHost
    /// The guests, in the order of the specs they were attached from.
    package let guests: [VirtualNIC]

    package init(configuration: HostConfiguration = HostConfiguration(), guests specs: [GuestSpec]) throws {
        let host = try TestHost(configuration: configuration)
        self.host = host
        guests = try specs.map { try attach(host, $0) }
    }

    /// Guests with the default spec, one per name.
    package convenience init(configuration: HostConfiguration = HostConfiguration(), guests names: String...) throws {
        try self.init(configuration: configuration, guests: names.map { GuestSpec($0) })
    }

    /// The guest attached under `name`; traps if there is none (a mistake in the test).
    package subscript(name: String) -> VirtualNIC {
        guard let guest = guests.first(where: { $0.name == name }) else { preconditionFailure("no guest named \(name)") }
        return guest
    }

    package func stop() { host.stop() }
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
}
