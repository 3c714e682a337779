import NPAHost
import NPAShell

/// A host with one software NIC of a VF model (`nic0`, its PF the vswitch's uplink) and two
/// guests, `a` and `b`, each left on emulation or switched in to a VF of that NIC: the setup of
/// the switching, backpressure and oversize-frame tests. Owns the host; whether a switch-in
/// succeeded is the test's to assert (`a.mode`), as the fixture only asks for it.
package final class PassthroughFixture {
    package let host: TestHost
    package let a: VirtualNIC
    package let b: VirtualNIC

    /// - Parameters:
    ///   - configure: changes to the host's configuration beyond the NIC (time limits, policies).
    ///   - switchIn: which of the two guests to switch in after both attached, `a` first.
    package init(
        model: String, vfs: Int = 8, a: GuestSpec, b: GuestSpec, switchIn: (a: Bool, b: Bool) = (true, true),
        configure: (inout HostConfiguration) -> Void = { _ in }
    ) throws {
        var configuration = try HostConfiguration.withNIC(model: model, vfs: vfs)
        configure(&configuration)
        host = try TestHost(configuration: configuration)
        self.a = try attach(host, a)
        self.b = try attach(host, b)
        if switchIn.a { try host.switchIn(self.a) }
        if switchIn.b { try host.switchIn(self.b) }
    }

    package func stop() { host.stop() }
}
