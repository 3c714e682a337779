import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPARingFormats
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// `npa policy set` on a running host: a change takes effect at once in both modes — on the
/// emulated path (the vswitch's VLAN membership and rx mode) and in the NIC's embedded switch
/// for a guest in passthrough — and a change that is malformed or that the running state
/// contradicts is refused whole, changing nothing.
@Suite(.serialized) struct LivePolicyTests {
    /// Carries out a switch the host asked for, on the guest's data-path calls.
    static func carryOut(_ guest: VirtualNIC, until mode: String) -> Bool {
        eventually {
            _ = guest.reclaimTransmitted()
            return guest.mode == mode
        }
    }

    @Test func aRevokedVLANStopsAtOnceOnTheEmulatedPathAndFlowsAgainWhenGranted() throws {
        var config = HostConfiguration()
        config.defaultPolicy = GuestPolicy(allowedVLANs: [0, 10])
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b")
        try a.setVLANs([10])
        try b.setVLANs([10])
        let out = ethernetFrame(to: b.mac, from: a.mac, vlan: 10), back = ethernetFrame(to: a.mac, from: b.mac, vlan: 10)
        #expect(a.send([out]) == 1)
        #expect(receiveFrames(b, count: 1) == [out])

        let note = try host.admin.setPolicy(PolicyChange(guest: "a", vlans: [0]))
        #expect(note.hasPrefix("guest 'a': vlans 0,10 -> 0; VLAN 10 frames stop now."))
        #expect(note.contains("Lasts until the host stops"))
        // a's next frame on VLAN 10 is refused at its own port; b's to a has no destination.
        #expect(a.send([out]) == 1)
        #expect(try eventually { try a.deviceCounters()["drop_vlan_refused"] == 1 })
        #expect(b.send([back]) == 1)
        #expect(try eventually { try b.deviceCounters()["drop_unknown_destination"] == 1 })
        // Untagged frames still flow both ways; a got nothing else.
        let untagged = ethernetFrame(to: b.mac, from: a.mac), untaggedBack = ethernetFrame(to: a.mac, from: b.mac)
        #expect(a.send([untagged]) == 1)
        #expect(receiveFrames(b, count: 1) == [untagged])
        #expect(b.send([untaggedBack]) == 1)
        #expect(receiveFrames(a, count: 1) == [untaggedBack])
        #expect(try a.deviceCounters()["rx_frames"] == 1)
        // a's own request stands: the host allows less, the guest did not ask for less. Asking
        // for VLAN 10 again is refused by the policy in force.
        #expect {
            try a.setVLANs([10])
        } throws: { ($0 as? HostRefusal)?.message == "VLAN 10 not allowed for guest 'a' by host policy" }

        try host.admin.setPolicy(PolicyChange(guest: "a", vlans: [0, 10]))
        #expect(a.send([out]) == 1)
        #expect(receiveFrames(b, count: 1) == [out])
        #expect(b.send([back]) == 1)
        #expect(receiveFrames(a, count: 1) == [back])
        #expect(try a.deviceCounters()["drop_vlan_refused"] == 1)
        let events = try host.admin.allEvents(after: 0).events.filter { $0.kind == .policy }
        #expect(events.map(\.vnic) == ["a", "a"])
        #expect(events.map(\.detail) == ["vlans 0,10 -> 0; VLAN 10 frames stop now", "vlans 0 -> 0,10; VLAN 10 frames flow again"])
    }

    @Test(arguments: NICModelRegistry.names)
    func aRevokedVLANStopsAtOnceInTheEmbeddedSwitchAndFlowsAgainWhenGranted(_ model: String) throws {
        let fixture = try PassthroughFixture(model: model, a: GuestSpec("a"), b: GuestSpec("b")) {
            $0.defaultPolicy = GuestPolicy(allowedVLANs: [0, 10])
        }
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough" && b.mode == "passthrough", "\(a.lastSwitchError ?? "") \(b.lastSwitchError ?? "")")
        try a.setVLANs([10])
        try b.setVLANs([10])
        let out = ethernetFrame(to: b.mac, from: a.mac, vlan: 10), back = ethernetFrame(to: a.mac, from: b.mac, vlan: 10)
        #expect(a.send([out]) == 1)
        #expect(receiveFrames(b, count: 1) == [out])

        try host.admin.setPolicy(PolicyChange(guest: "a", vlans: [0]))
        #expect(a.mode == "passthrough")
        // a's VF is no longer in VLAN 10: the embedded switch drops what it sends there.
        #expect(a.send([out]) == 1)
        #expect(try eventually { try a.deviceCounters()["drop_vf_vlan_refused"] == 1 })
        // b's frame to a on VLAN 10 finds no VF of a in that VLAN: it goes up the PF, and the
        // host has no port of a in VLAN 10 either (counted as an uplink frame dropped).
        let droppedBefore = try host.admin.status().uplink?.framesInDropped ?? 0
        #expect(b.send([back]) == 1)
        #expect(try eventually { try host.admin.status().uplink?.framesInDropped == droppedBefore + 1 })
        let untagged = ethernetFrame(to: b.mac, from: a.mac), untaggedBack = ethernetFrame(to: a.mac, from: b.mac)
        #expect(a.send([untagged]) == 1)
        #expect(receiveFrames(b, count: 1) == [untagged])
        #expect(b.send([untaggedBack]) == 1)
        #expect(receiveFrames(a, count: 1) == [untaggedBack])

        try host.admin.setPolicy(PolicyChange(guest: "a", vlans: [0, 10]))
        #expect(a.send([out]) == 1)
        #expect(receiveFrames(b, count: 1) == [out])
        #expect(b.send([back]) == 1)
        #expect(receiveFrames(a, count: 1) == [back])
        #expect(try a.deviceCounters()["drop_vf_vlan_refused"] == 1)
        #expect(a.mode == "passthrough" && b.mode == "passthrough")
    }

    @Test func revokingPassthroughSwitchesTheGuestOutAndRefusesSwitchInsUntilGrantedAgain() throws {
        let fixture = try PassthroughFixture(model: "npa-dring", a: GuestSpec("a"), b: GuestSpec("b"), switchIn: (true, false))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough", "\(a.lastSwitchError ?? "")")

        let note = try host.admin.setPolicy(PolicyChange(guest: "a", allowPassthrough: false))
        #expect(note.hasPrefix("guest 'a': passthrough yes -> no; switched out to emulation."))
        #expect(Self.carryOut(a, until: "emulated"))
        #expect(try host.status(of: "a")?.mode == "emulated")
        let f = ethernetFrame(to: b.mac, from: a.mac), g = ethernetFrame(to: a.mac, from: b.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(b.send([g]) == 1)
        #expect(receiveFrames(a, count: 1) == [g])
        #expect {
            try host.admin.switchVNIC(name: "a", toPassthrough: true)
        } throws: {
            ($0 as? AdminClient.Failure)
                == .refused(
                    code: ControlMessage.ErrorCode.refusedByPolicy, message: "passthrough is not allowed for guest 'a' by host policy")
        }

        try host.admin.setPolicy(PolicyChange(guest: "a", allowPassthrough: true))
        #expect(try host.switchIn(a))
        #expect(try host.status(of: "a")?.mode == "passthrough")
        let events = try host.admin.allEvents(after: 0).events.filter { $0.kind == .policy }.map(\.detail)
        #expect(events == ["passthrough yes -> no; switched out to emulation", "passthrough no -> yes"])
    }

    /// With auto_passthrough, passthrough granted again switches the guest back in.
    @Test func passthroughGrantedAgainSwitchesInWithAutoPassthrough() throws {
        let fixture = try PassthroughFixture(model: "npa-cq", vfs: 2, a: GuestSpec("a"), b: GuestSpec("b"), switchIn: (false, false)) {
            $0.autoPassthrough = true
        }
        defer { fixture.stop() }
        let (host, a) = (fixture.host, fixture.a)
        #expect(Self.carryOut(a, until: "passthrough"), "\(a.lastSwitchError ?? "")")
        try host.admin.setPolicy(PolicyChange(guest: "a", allowPassthrough: false))
        #expect(Self.carryOut(a, until: "emulated"))
        let note = try host.admin.setPolicy(PolicyChange(guest: "a", allowPassthrough: true))
        #expect(note.hasPrefix("guest 'a': passthrough no -> yes; switching in (auto_passthrough)."))
        #expect(Self.carryOut(a, until: "passthrough"), "\(a.lastSwitchError ?? "")")
    }

    /// Passthrough revoked with frames in flight both ways: the switch-out it starts loses
    /// nothing (each frame received once, in order), as an admin's switch-out.
    @Test func revokingPassthroughUnderBidirectionalTrafficLosesNothing() throws {
        let fixture = try PassthroughFixture(
            model: "npa-dring", a: GuestSpec("a", ringSize: 1024, memoryMiB: 32), b: GuestSpec("b", ringSize: 1024, memoryMiB: 32),
            switchIn: (false, true))
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(b.mode == "passthrough", "\(b.lastSwitchError ?? "")")
        var atA = FlowVerifier(), atB = FlowVerifier()
        var seqA: UInt64 = 0, seqB: UInt64 = 0
        func send(_ from: VirtualNIC, _ to: VirtualNIC, _ seq: inout UInt64, count: Int) {
            var sent = 0
            while sent < count {
                let first = seq
                let n = from.transmit(count: min(10, count - sent)) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: to.mac, source: from.mac, flow: 0, sequence: first + UInt64(i), length: 200)
                }
                seq += UInt64(n)
                sent += n
                a.receive(maxFrames: 64, timeoutMilliseconds: 0) { atA.record($0.bytes) }
                b.receive(maxFrames: 64, timeoutMilliseconds: 0) { atB.record($0.bytes) }
                if n == 0 { _ = from.waitForTransmitSpace(timeoutMilliseconds: 10) }
            }
        }
        send(a, b, &seqA, count: 200)
        send(b, a, &seqB, count: 200)
        try host.admin.setPolicy(PolicyChange(guest: "b", allowPassthrough: false))
        send(a, b, &seqA, count: 200)
        send(b, a, &seqB, count: 200)
        #expect(Self.carryOut(b, until: "emulated"))
        send(a, b, &seqA, count: 200)
        send(b, a, &seqB, count: 200)
        _ = eventually {
            a.receive(maxFrames: 256, timeoutMilliseconds: 20) { atA.record($0.bytes) }
            b.receive(maxFrames: 256, timeoutMilliseconds: 20) { atB.record($0.bytes) }
            return atA.unique == 600 && atB.unique == 600
        }
        for (name, v) in [("at a", atA), ("at b", atB)] {
            #expect(v.unique == 600 && v.duplicates == 0 && v.outOfOrder == 0 && v.invalid == 0, "\(name): \(v.unique) unique")
        }
        #expect(try host.status(of: "b")?.mode == "emulated")
    }

    @Test func revokingPromiscuousStopsAPromiscuousGuestReceivingFramesNotForIt() throws {
        var config = HostConfiguration()
        config.guestPolicies["watcher"] = GuestPolicy(allowPromiscuous: true)
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a"), b = try attach(host, "b"), watcher = try attach(host, "watcher")
        try watcher.setRxMode([.unicast, .broadcast, .promiscuous])
        let f = ethernetFrame(to: b.mac, from: a.mac)
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(receiveFrames(watcher, count: 1) == [f])

        let note = try host.admin.setPolicy(PolicyChange(guest: "watcher", allowPromiscuous: false))
        #expect(note.hasPrefix("guest 'watcher': promiscuous yes -> no; promiscuous mode turned off."))
        #expect(a.send([f]) == 1)
        // The vswitch makes every copy of a frame in one step: once b has it, the watcher would too.
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(try watcher.deviceCounters()["rx_frames"] == 1)
        // Frames for it still arrive.
        let own = ethernetFrame(to: watcher.mac, from: a.mac)
        #expect(a.send([own]) == 1)
        #expect(receiveFrames(watcher, count: 1) == [own])

        try host.admin.setPolicy(PolicyChange(guest: "watcher", allowPromiscuous: true))
        #expect(a.send([f]) == 1)
        #expect(receiveFrames(b, count: 1) == [f])
        #expect(receiveFrames(watcher, count: 1) == [f])
    }

    @Test func badRequestsGetClearErrorsAndChangeNothing() throws {
        var config = HostConfiguration()
        config.guestPolicies["configured"] = GuestPolicy(allowedVLANs: [0, 7])
        config.defaultPolicy = GuestPolicy(allowedVLANs: [0, 10])
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a", mac: "02:00:00:00:0a:01")
        let before = try host.admin.policies()
        let refusals: [(PolicyChange, UInt32, String)] = [
            (
                PolicyChange(guest: "ghost", vlans: [0]), ControlMessage.ErrorCode.invalidArgument,
                "no guest named 'ghost' is attached or configured (known: a, configured)"
            ),
            (
                PolicyChange(guest: "a"), ControlMessage.ErrorCode.invalidArgument,
                "no policy change for guest 'a': give --vlans, --macs, --promiscuous or --passthrough"
            ),
            (
                PolicyChange(guest: "a", vlans: [0, 4095], allowPromiscuous: true), ControlMessage.ErrorCode.invalidArgument,
                "VLAN 4095 is not a VLAN ID from 0 to 4094"
            ),
            (
                PolicyChange(guest: "a", macs: .only([a.mac, MACAddress("01:00:5e:00:00:01")!]), vlans: [0]),
                ControlMessage.ErrorCode.invalidArgument, "01:00:5e:00:00:01 is not a unicast MAC like 02:00:00:00:00:01"
            ),
            (
                PolicyChange(guest: "a", macs: .only([MACAddress("02:00:00:00:0a:02")!]), vlans: [0], allowPassthrough: false),
                ControlMessage.ErrorCode.invalidState,
                "guest 'a' uses MAC 02:00:00:00:0a:01, which the new MAC list leaves out: nothing changed (add it, or change the guest's MAC first)"
            ),
        ]
        for (change, code, message) in refusals {
            #expect {
                try host.admin.setPolicy(change)
            } throws: { ($0 as? AdminClient.Failure) == .refused(code: code, message: message) }
        }
        #expect(try host.admin.policies() == before)
        #expect(try host.admin.policies().guests.allSatisfy { $0.source != "live" })
        #expect {
            _ = try host.admin.policies(guest: "ghost")
        } throws: { "\($0)" == "no guest named 'ghost' is attached or configured (known: a, configured)" }
        // Each refusal is in the event log; no policy event is.
        let events = try host.admin.allEvents(after: 0).events
        #expect(!events.contains { $0.kind == .policy })
        #expect(events.filter { $0.kind == .refusal }.count == refusals.count + 1)
        // The MAC in use, kept in the list, is accepted.
        try host.admin.setPolicy(PolicyChange(guest: "a", macs: .only([MACAddress("02:00:00:00:0a:02")!, a.mac])))
        #expect(try host.admin.policies(guest: "a").guests.first?.macs == ["02:00:00:00:0a:02", "02:00:00:00:0a:01"])
    }

    @Test func aPolicySetForAGuestNotAttachedYetAppliesWhenItAttaches() throws {
        var config = HostConfiguration()
        config.guestPolicies["later"] = GuestPolicy()
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let note = try host.admin.setPolicy(PolicyChange(guest: "later", vlans: [0, 20], allowPromiscuous: true))
        #expect(note.hasPrefix("guest 'later': vlans 0 -> 0,20; promiscuous no -> yes; not attached: applies when it attaches."))
        let later = try attach(host, "later")
        try later.setVLANs([20])
        try later.setRxMode([.unicast, .promiscuous])
        let shown = try #require(try host.admin.policies(guest: "later").guests.first)
        #expect(
            shown == .init(name: "later", macs: nil, vlans: [0, 20], promiscuous: true, passthrough: true, source: "live", attached: true))
    }

    @Test func aGuestsConnectionMayNeitherSetNorShowPolicies() throws {
        let host = try TestHost()
        defer { host.stop() }
        let intruder = try AdminSocketTests.RawGuest(socketPath: host.socketPath, name: "intruder")
        for request in [ControlMessage.policySet(PolicyChange(guest: "intruder", allowPromiscuous: true)), .policyRequest(guest: "")] {
            guard case .error(let code, let text) = try intruder.request(request) else {
                Issue.record("\(request) on a guest's connection was not refused")
                continue
            }
            #expect(code == ControlMessage.ErrorCode.notPermitted)
            #expect(text.contains("admin socket"))
        }
        #expect(try host.admin.policies(guest: "intruder").guests.first?.promiscuous == false)
    }
}
