import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// NPA's point: a guest on a VF can still move, even to a host whose NIC is another model. The
/// source refuses to move a vNIC in passthrough; switched out, it moves; at the destination it
/// switches in again to that host's VF with that host's (different) plugin, and traffic goes on.
@Suite(.serialized) struct MoveAcrossNICModelsTests {
    static func host(model: String) throws -> SteppedTestHost {
        var configuration = try HostConfiguration.withNIC(model: model, vfs: 2)
        configuration.defaultPolicy = GuestPolicy(allowedVLANs: MoveBetweenHostsTests.vlans)
        return try SteppedTestHost(configuration: configuration)
    }

    /// Asks `host` to switch `guest` (on the host's thread, as an admin request would), then lets
    /// the guest's next data-path call carry the switch out.
    static func requestSwitch(_ host: SteppedTestHost, _ guest: VirtualNIC, toPassthrough: Bool) throws {
        let name = guest.name
        let outcome = try host.onHostThread { daemon in
            let device = try #require(daemon.device(named: name))
            return daemon.pfDriver.requestSwitch(device, toPassthrough: toPassthrough)
        }
        if case .failure(let refusal) = outcome { Issue.record("switch refused: \(refusal)") }
        guest.reclaimTransmitted()
    }

    @Test func aGuestOnAVFSwitchesOutMovesAndSwitchesInToAnotherModelsVF() throws {
        let a = try Self.host(model: "npa-dring"), b = try Self.host(model: "npa-cq")
        defer {
            a.stop()
            b.stop()
        }
        let orchestration = try MoveOrchestration(a, b)
        let guest = try MoveBetweenHostsTests.attach(a, "traveller"), peer = try MoveBetweenHostsTests.attach(b, "peer")
        try Self.requestSwitch(a, guest, toPassthrough: true)
        #expect(guest.mode == "passthrough", "\(guest.lastSwitchError ?? "") \(guest.switchLog)")
        let pluginAtA = guest.pluginName

        // Only an emulated vNIC leaves: the orchestration switches it out first.
        #expect(throws: DepartureRefusal.notMovable("vNIC 'traveller' is in passthrough")) {
            try a.onHostThread { try $0.beginDeparture(named: "traveller") }
        }
        try Self.requestSwitch(a, guest, toPassthrough: false)
        #expect(guest.mode == "emulated")
        try orchestration.move("traveller", driving: guest)
        #expect(guest.hostSocket == b.socketPath, "\(guest.lastMoveError ?? "") \(guest.switchLog)")

        try Self.requestSwitch(b, guest, toPassthrough: true)
        #expect(guest.mode == "passthrough", "\(guest.lastSwitchError ?? "") \(guest.switchLog)")
        #expect(guest.pluginName != pluginAtA, "the destination's NIC model has its own plugin (\(guest.pluginName))")
        var verifier = FlowVerifier()
        #expect(MoveBetweenHostsTests.stream(1000, flow: 0, from: guest, to: peer, into: &verifier) == 1000)
        #expect(MoveBetweenHostsTests.stream(1000, flow: 1, from: peer, to: guest, into: &verifier) == 1000)
        #expect(verifier.unique == 2000 && MoveBetweenHostsTests.isClean(verifier))
        // The source holds nothing for it: its VF went back at the switch-out, its vNIC at the move.
        let atSource = try a.onHostThread { d in (d.dataPath.devices.count, d.pfDriver.vfsInUse.values.map(\.count).reduce(0, +)) }
        #expect(atSource.0 == 0 && atSource.1 == 0)
    }
}
