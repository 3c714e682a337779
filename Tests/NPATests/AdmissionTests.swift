import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPATestSupport
import Testing

/// One admission point (issue 9, the MAC-takeover hole): a MAC belongs to one vNIC at a time,
/// whichever mode each is in, even where policy would let the guest use any MAC; a refused
/// change changes nothing.
@Suite(.serialized) struct AdmissionTests {
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func aGuestCannotTakeAnotherGuestsMACInEitherMode(_ victimOnVF: Bool, _ thiefOnVF: Bool) throws {
        let host = try TestHost(configuration: .withNIC(model: "npa-dring", vfs: 4))  // default policy: macs any
        defer { host.stop() }
        let a = try attach(host, "a", mac: "02:00:00:00:ad:0a")
        let b = try attach(host, "b", mac: "02:00:00:00:ad:0b")
        let c = try attach(host, "c", mac: "02:00:00:00:ad:0c")
        for (nic, onVF) in [(a, victimOnVF), (b, thiefOnVF)] where onVF {
            try host.switchIn(nic)
            #expect(nic.mode == "passthrough")
        }
        #expect {
            try b.setMAC(a.mac)
        } throws: { error in
            guard let refusal = error as? HostRefusal else { return false }
            return refusal.code == ControlMessage.ErrorCode.invalidState
                && refusal.message == "MAC \(a.mac) is already used by another vNIC"
        }
        let status = try host.admin.status()
        #expect(status.vnics.first { $0.name == "b" }?.mac == "02:00:00:00:ad:0b")
        #expect(status.vnics.first { $0.name == "a" }?.mac == "02:00:00:00:ad:0a")
        #expect(b.mac == MACAddress("02:00:00:00:ad:0b")!)
        // a still receives its frames, b none of them; b still receives its own.
        let toA = (0..<4).map { ethernetFrame(to: a.mac, from: c.mac, payload: Array(repeating: UInt8($0), count: 46)) }
        #expect(c.send(toA) == 4)
        #expect(receiveFrames(a, count: 4) == toA)
        let toB = ethernetFrame(to: MACAddress("02:00:00:00:ad:0b")!, from: c.mac)
        #expect(c.send([toB]) == 1)
        #expect(receiveFrames(b, count: 1) == [toB])
        #expect(drain(b).isEmpty)
    }

    @Test func attachTakesOnlyAFreeMACThePolicyAllows() throws {
        let pair = [MACAddress("02:00:00:00:ad:21")!, MACAddress("02:00:00:00:ad:22")!]
        var config = HostConfiguration()
        config.guestPolicies = [
            "p1": GuestPolicy(allowedMACs: pair), "p2": GuestPolicy(allowedMACs: pair), "p3": GuestPolicy(allowedMACs: pair),
        ]
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let first = try attach(host, "p1"), second = try attach(host, "p2")
        #expect([first.mac, second.mac] == pair)
        #expect {
            _ = try attach(host, "p3")
        } throws: { ($0 as? HostRefusal)?.code == ControlMessage.ErrorCode.resourceExhausted }
        #expect {
            _ = try attach(host, "free", mac: "02:00:00:00:ad:21")
        } throws: { ($0 as? HostRefusal)?.message == "MAC 02:00:00:00:ad:21 is already used by another vNIC" }
    }

    /// Errors as types: each refusal's wire code is chosen in one place (ControlRefusal), not
    /// guessed from its text — a policy refusal says refusedByPolicy, a host without a free VF
    /// says invalidState.
    @Test func aSwitchRefusalCarriesTheCodeOfItsRule() throws {
        let host = try TestHost(
            configuration: .withNIC(model: "npa-dring", vfs: 1, policies: ["locked": GuestPolicy(allowPassthrough: false)]))
        defer { host.stop() }
        let locked = try attach(host, "locked"), a = try attach(host, "a"), b = try attach(host, "b")
        #expect(
            throws: AdminClient.Failure.refused(
                code: ControlMessage.ErrorCode.refusedByPolicy, message: "passthrough is not allowed for guest 'locked' by host policy")
        ) {
            try host.admin.switchVNIC(name: locked.name, toPassthrough: true)
        }
        try host.admin.switchVNIC(name: a.name, toPassthrough: true)
        #expect(throws: AdminClient.Failure.refused(code: ControlMessage.ErrorCode.invalidState, message: "no free VF")) {
            try host.admin.switchVNIC(name: b.name, toPassthrough: true)
        }
        #expect(throws: AdminClient.Failure.refused(code: ControlMessage.ErrorCode.invalidArgument, message: "no vNIC named 'nobody'")) {
            try host.admin.resetVF(name: "nobody")
        }
        _ = a.reclaimTransmitted()
        #expect([locked.mode, a.mode, b.mode] == ["emulated", "passthrough", "emulated"])
    }
}
