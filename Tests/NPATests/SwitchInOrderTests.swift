import NPAControlProtocol
import NPAHost
import NPANICModel
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// A receiver switched in while a sender in passthrough streams to it: frames the NIC had
/// already sent up the PF for it (older, parked by the host at the switch) and frames still in
/// the sender's VF ring (newer, going straight to the receiver's VF once its MAC moves) must
/// reach it once each, in order, with none dropped (docs/architecture.md, "Switching").
@Suite(.serialized) struct SwitchInOrderTests {
    /// `a` (on a VF) sends to `b` (emulated), which reads nothing until its emulated ring, the
    /// PF queue and part of `a`'s TX ring all hold frames for it; `b` is then switched in (the
    /// host parks what the PF queue held for it) and only then reads everything. Then, in
    /// passthrough, `b` leaves its VF ring and part of `a`'s ring full and is switched out
    /// before reading, then reads everything; three rounds.
    @Test(arguments: NICModelRegistry.names)
    func framesParkedAtASwitchInAreNotOvertakenByTheSendersNewerOnes(_ model: String) throws {
        let fixture = try PassthroughFixture(
            model: model, vfs: 4, a: GuestSpec("a", mac: "02:00:00:00:e4:01", queues: 1, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:e4:02", queues: 1, memoryMiB: 32), switchIn: (true, false)
        ) { $0.receiverStallMilliseconds = 60_000 }  // far longer than `b` ever leaves its rings unread here
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough" && b.mode == "emulated", "\(a.lastSwitchError ?? "") \(b.lastSwitchError ?? "")")
        let nic = try #require(host.daemon.nics.first)
        // More than `b`'s emulated ring (255) and the PF queue (2048) hold, and less than `a`'s
        // ring (256) holds beyond that.
        let emulatedRound = 255 + Int(nic.pfReceive.capacity) + 128
        var verifier = FlowVerifier()
        var sequence: UInt64 = 0
        for round in 0..<3 {
            try sendWithoutReceiving(emulatedRound, from: a, to: b.mac, sequence: &sequence)
            // The PF queue is full of frames for `b`: they are parked at the switch-in, while
            // the newest wait in `a`'s ring for the NIC to send them straight to `b`'s VF.
            #expect(eventually(timeoutMilliseconds: 10_000) { nic.pfReceive.freeSlots == 0 }, "round \(round)")
            #expect(try host.switchIn(b), "round \(round): \(b.lastSwitchError ?? "")")
            var drops = try receiveUntilAccounted(b, &verifier, total: Int(sequence), timeoutMilliseconds: 30_000)
            #expect(drops.isEmpty, "round \(round): \(drops)")
            #expect(verifier.unique == Int(sequence), "round \(round)")
            // Frames in `b`'s VF ring and `a`'s when `b` switches out: the VF's are harvested
            // first, `a`'s go up the PF to `b`'s emulated ring after them.
            try sendWithoutReceiving(200, from: a, to: b.mac, sequence: &sequence)
            #expect(try switchOut(b, on: host), "round \(round): \(b.lastSwitchError ?? "")")
            drops = try receiveUntilAccounted(b, &verifier, total: Int(sequence), timeoutMilliseconds: 30_000)
            #expect(drops.isEmpty, "round \(round): \(drops)")
        }
        #expect(verifier.unique == Int(sequence))
        #expect(verifier.outOfOrder == 0 && verifier.duplicates == 0 && verifier.invalid == 0, "out of order \(verifier.outOfOrder)")
    }

    /// A guest asked to switch reads none of its rings until it is through the handshake: its
    /// senders are held for it beyond the receiver stall limit (here 1 ms), within the switch
    /// timeout. `b` is asked to switch in; `a` fills `b`'s emulated ring and leaves 100 more
    /// frames waiting in the PF queue (few enough for `b`'s VF ring once parked, so nothing
    /// waits for `b` once it reads); only then does `b` carry the switch out and read: every
    /// frame once, in order, none dropped.
    @Test(arguments: NICModelRegistry.names)
    func aGuestInASwitchHandshakeIsWaitedForBeyondTheStallLimit(_ model: String) throws {
        let fixture = try PassthroughFixture(
            model: model, vfs: 4, a: GuestSpec("a", mac: "02:00:00:00:e4:11", queues: 1, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:e4:12", queues: 1, memoryMiB: 32), switchIn: (true, false)
        ) {
            $0.receiverStallMilliseconds = 1  // far shorter than any switch handshake
            $0.switchTimeoutMilliseconds = 60_000
        }
        defer { fixture.stop() }
        let (host, a, b) = (fixture.host, fixture.a, fixture.b)
        #expect(a.mode == "passthrough" && b.mode == "emulated", "\(a.lastSwitchError ?? "")")
        let nic = try #require(host.daemon.nics.first)
        try host.admin.switchVNIC(name: b.name, toPassthrough: true)
        var sequence: UInt64 = 0
        let waiting: UInt32 = 100
        try sendWithoutReceiving(255 + Int(waiting), from: a, to: b.mac, sequence: &sequence)
        #expect(eventually(timeoutMilliseconds: 10_000) { nic.pfReceive.pushed &- nic.pfReceive.popped == waiting })
        _ = b.reclaimTransmitted()  // the switch-in, carried out now
        #expect(b.mode == "passthrough", "\(b.lastSwitchError ?? "")")
        var verifier = FlowVerifier()
        let drops = try receiveUntilAccounted(b, &verifier, total: Int(sequence), timeoutMilliseconds: 30_000)
        #expect(drops.isEmpty, "\(drops)")
        #expect(verifier.unique == Int(sequence))
        #expect(verifier.outOfOrder == 0 && verifier.duplicates == 0 && verifier.invalid == 0)
    }

    /// As `TestHost.switchIn`, back to emulation.
    func switchOut(_ guest: VirtualNIC, on host: TestHost) throws -> Bool {
        try host.admin.switchVNIC(name: guest.name, toPassthrough: false)
        _ = guest.reclaimTransmitted()  // the next data-path call carries the switch out
        return guest.mode == "emulated"
    }

    /// Queues `count` numbered frames of flow 0 in `sender`'s TX ring as space frees (the NIC
    /// takes them as the receiver's side has room; nobody reads here).
    func sendWithoutReceiving(_ count: Int, from sender: VirtualNIC, to receiver: MACAddress, sequence: inout UInt64) throws {
        let source = sender.mac
        var sent = 0
        var waits = 0
        while sent < count {
            let first = sequence
            let n = sender.transmit(queue: 0, count: min(32, count - sent)) { i, buffer in
                TrafficFrame.write(into: buffer, destination: receiver, source: source, flow: 0, sequence: first + UInt64(i), length: 128)
            }
            sent += n
            sequence += UInt64(n)
            if n == 0 {
                waits += 1
                try #require(waits < 3_000, "the sender's ring never freed (\(sent) of \(count) sent)")
                _ = sender.waitForTransmitSpace(queue: 0, timeoutMilliseconds: 10)
            }
        }
    }
}
