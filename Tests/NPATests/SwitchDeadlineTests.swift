import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPATestSupport
import Testing
@testable import npa

/// A guest that stops answering (stopped, hung) cannot hold a switch pending or a VF for ever:
/// each step has `switch_timeout_ms`, then the host rolls back to a consistent state and says
/// why in `npa status`; the guest, when it runs again, carries on where the host left it.
@Suite(.serialized) struct SwitchDeadlineTests {
    /// Guests a and b (one queue, 32 MiB each) on an npa-dring NIC with `vfs` VFs, whose host
    /// gives each switch step 200 ms.
    func guests(vfs: Int, macs: (String, String), aOnVF: Bool) throws -> PassthroughFixture {
        try PassthroughFixture(
            model: "npa-dring", vfs: vfs, a: GuestSpec("a", mac: macs.0, queues: 1, memoryMiB: 32),
            b: GuestSpec("b", mac: macs.1, queues: 1, memoryMiB: 32), switchIn: (aOnVF, false)
        ) { $0.switchTimeoutMilliseconds = 200 }
    }

    func status(_ host: TestHost, _ name: String) throws -> StatusReport.VNIC? {
        try host.status(of: name)
    }

    @Test func aSwitchInTheGuestNeverAnswersIsAbandonedAndItsVFReleased() throws {
        let fixture = try guests(vfs: 1, macs: ("02:00:00:00:a1:01", "02:00:00:00:a1:02"), aOnVF: false)
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        // The admin asks; `a` makes no data-path call from here on, so it never sees DIC.
        #expect(Demo.adminSwitch(host.admin, vnic: "a", toPassthrough: true).contains("started"))
        #expect(try status(host, "a")?.switchPending?.hasPrefix("switch-in") == true)
        #expect(try eventually { try status(host, "a")?.switchPending == nil })
        let a1 = try status(host, "a")
        #expect(a1?.mode == "emulated" && a1?.vf == nil)
        #expect(a1?.lastSwitchError?.hasPrefix("switch-in timed out") == true, "\(String(describing: a1?.lastSwitchError))")
        // The only VF is free again: b can have it.
        try host.switchIn(b)
        #expect(b.mode == "passthrough")
        // `a` runs again: it finds nothing to switch, stays emulated, and its traffic flows.
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(a.mode == "emulated")
    }

    @Test func aSwitchOutTheGuestNeverAnswersIsCalledOffAndTheGuestKeepsItsVF() throws {
        let fixture = try guests(vfs: 2, macs: ("02:00:00:00:a2:01", "02:00:00:00:a2:02"), aOnVF: true)
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough")
        #expect(Demo.adminSwitch(host.admin, vnic: "a", toPassthrough: false).contains("started"))
        #expect(try eventually { try status(host, "a")?.switchPending == nil })
        let a1 = try status(host, "a")
        #expect(a1?.mode == "passthrough" && a1?.vf != nil)
        #expect(a1?.lastSwitchError?.hasPrefix("switch-out timed out") == true, "\(String(describing: a1?.lastSwitchError))")
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(a.mode == "passthrough")
        // Switch-in on a vNIC already in passthrough says so.
        #expect(Demo.adminSwitch(host.admin, vnic: "a", toPassthrough: true) == "refused: already in passthrough")
    }
}
