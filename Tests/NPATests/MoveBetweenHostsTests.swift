import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// A guest follows its vNIC to another host: the source stops and saves the device, the
/// destination expects it under a one-time token, the guest's shell re-attaches there with its
/// memory, eventfds and register page, and the `VirtualNIC` carries on. Two stepped hosts in
/// this process play the machines; the test plays the orchestration (`MoveOrchestration`) on
/// their threads and drives the guests on its own, so every step happens in a known order.
@Suite(.serialized) struct MoveBetweenHostsTests {
    static let vlans: Set<UInt16> = [0, 10, 20]

    static func host() throws -> SteppedTestHost {
        var configuration = HostConfiguration()
        configuration.defaultPolicy = GuestPolicy(allowedVLANs: vlans)
        return try SteppedTestHost(configuration: configuration)
    }

    /// A guest with a MAC of its own: two hosts would each hand out the same first MAC.
    static func attach(_ host: SteppedTestHost, _ name: String, mac: String? = nil) throws -> VirtualNIC {
        let unique = String(format: "02:00:5e:%02x:%02x:%02x", name.utf8.count, Int(name.utf8.first ?? 0), Int(name.utf8.last ?? 0))
        return try GuestSpec(name, mac: mac ?? unique, queues: 1, ringSize: 256, memoryMiB: 8).attach(to: host.socketPath)
    }

    /// Sends `count` frames of `flow` from `sender` to `receiver`, numbered from `first`, and
    /// receives them, recording each in `verifier`; returns how many were sent. Fails (returns
    /// short) only if the stream stalls for the generous deadline.
    @discardableResult
    static func stream(
        _ count: Int, flow: UInt32, from sender: VirtualNIC, to receiver: VirtualNIC, first: UInt64 = 0, into verifier: inout FlowVerifier
    ) -> Int {
        var sent = 0
        let target = verifier.unique + count
        let deadline = ContinuousClock.now + .seconds(60)
        while verifier.unique < target && ContinuousClock.now < deadline {
            if sent < count {
                let (dst, src, base) = (receiver.mac, sender.mac, first + UInt64(sent))
                sent += sender.transmit(count: min(32, count - sent)) { i, buffer in
                    TrafficFrame.write(into: buffer, destination: dst, source: src, flow: flow, sequence: base + UInt64(i), length: 128)
                }
            }
            sender.reclaimTransmitted()
            receiver.receive(maxFrames: 64, timeoutMilliseconds: sent < count ? 0 : 5) { verifier.record($0.bytes) }
        }
        return sent
    }

    static func isClean(_ v: FlowVerifier) -> Bool {
        v.duplicates == 0 && v.outOfOrder == 0 && v.invalid == 0 && v.gaps == 0
    }

    // MARK: The guest's rings move with it

    /// Frames the guest posts while the source's device is stopped stay in its TX ring and the
    /// destination's restored device sends them; frames the source delivered into its RX ring
    /// before the stop, unread, are read after the move. Then it goes on both ways with a guest
    /// on the destination. Every frame arrives once, in order; the counters continue.
    @Test func aMovedGuestSendsWhatItPostedWhileStoppedAndReadsWhatItsRingHeld() throws {
        let a = try Self.host(), b = try Self.host()
        defer {
            a.stop()
            b.stop()
        }
        let orchestration = try MoveOrchestration(a, b)
        let mover = try Self.attach(a, "mover"), neighbourA = try Self.attach(a, "neighbour-a")
        let neighbourB = try Self.attach(b, "neighbour-b")
        #expect(try mover.waitForPeer(neighbourA.mac, timeoutMilliseconds: 10_000))

        // neighbour-a fills the mover's RX ring (100 frames, unread); the source completed them.
        var intoMover = FlowVerifier()
        let (dst, src) = (mover.mac, neighbourA.mac)
        var posted = 0
        while posted < 100 {
            posted += neighbourA.transmit(count: 100 - posted) { i, buffer in
                TrafficFrame.write(into: buffer, destination: dst, source: src, flow: 1, sequence: UInt64(posted + i), length: 128)
            }
        }
        #expect(neighbourA.flush(timeoutMilliseconds: 10_000))
        #expect(try mover.deviceCounters()["rx_frames"] == 100)
        let txBefore = try mover.deviceCounters()["tx_frames"] ?? 0

        // The source stops the device; what the mover posts now waits in its TX ring.
        let token = try orchestration.prepare("mover")
        let (toB, fromMover) = (neighbourB.mac, mover.mac)
        let held = mover.transmit(count: 50) { i, buffer in
            TrafficFrame.write(into: buffer, destination: toB, source: fromMover, flow: 2, sequence: UInt64(i), length: 128)
        }
        #expect(held == 50)
        try orchestration.offer("mover", token: token)
        mover.reclaimTransmitted()  // the next data-path call carries the move out
        #expect(mover.hostSocket == b.socketPath, "\(mover.lastMoveError ?? "no error") \(mover.switchLog)")
        #expect(mover.moveDurations.count == 1 && mover.lastMoveError == nil)
        #expect(mover.mode == "emulated")
        #expect(try orchestration.events(a) == [.departed(name: "mover")])
        #expect(try orchestration.events(b) == [.arrived(name: "mover")])
        #expect(try a.onHostThread { $0.device(named: "mover") == nil })

        // The 50 held frames reach neighbour-b from the destination, once, in order.
        var atB = FlowVerifier()
        let deadline = ContinuousClock.now + .seconds(60)
        while atB.unique < 50 && ContinuousClock.now < deadline {
            mover.reclaimTransmitted()
            neighbourB.receive(maxFrames: 64, timeoutMilliseconds: 5) { atB.record($0.bytes) }
        }
        #expect(atB.unique == 50 && Self.isClean(atB))
        // The 100 frames the source delivered are read on the destination, then more from there.
        var drained = 0
        while drained < 100 && ContinuousClock.now < deadline {
            drained += mover.receive(maxFrames: 64, timeoutMilliseconds: 5) { intoMover.record($0.bytes) }
        }
        #expect(intoMover.unique == 100 && Self.isClean(intoMover))
        #expect(Self.stream(2000, flow: 2, from: mover, to: neighbourB, first: 50, into: &atB) == 2000)
        #expect(Self.stream(2000, flow: 3, from: neighbourB, to: mover, into: &intoMover) == 2000)
        #expect(atB.unique == 2050 && Self.isClean(atB))
        #expect(intoMover.unique == 2100 && Self.isClean(intoMover))
        let counters = try mover.deviceCounters()
        #expect(counters["tx_frames"] == txBefore + 2050, "the device's counters continue on the destination")
        #expect(counters["rx_frames"] == 2100)
        #expect(try mover.dropCounts().isEmpty)
        #expect(mover.flush(timeoutMilliseconds: 10_000))
    }

    /// MAC (one the guest set), multicast filters, VLANs and rx mode are the destination's as
    /// they were the source's.
    @Test func theGuestsConfigurationSurvivesTheMove() throws {
        let a = try Self.host(), b = try Self.host()
        defer {
            a.stop()
            b.stop()
        }
        let orchestration = try MoveOrchestration(a, b)
        let mover = try Self.attach(a, "configured")
        let mac = try #require(MACAddress("02:aa:bb:cc:dd:01"))
        let groups = [MACAddress("01:00:5e:00:00:07"), MACAddress("33:33:00:00:00:01")].compactMap { $0 }
        let mode: VMXNET3.RxMode = [.unicast, .broadcast, .multicast, .allMulticast]
        try mover.setMAC(mac)
        try mover.setMulticastFilter(groups)
        try mover.setVLANs(Self.vlans)
        try mover.setRxMode(mode)
        try orchestration.move("configured", driving: mover)
        #expect(mover.hostSocket == b.socketPath, "\(mover.lastMoveError ?? "") \(mover.switchLog)")
        #expect(mover.mac == mac)
        let seen = try b.onHostThread { daemon in
            let d = try #require(daemon.device(named: "configured"))
            return (d.mac, d.multicast, d.vlans, d.rxMode, d.isActive, daemon.dataPath.vswitch.owner(of: mac) == d.port)
        }
        #expect(seen.0 == mac && seen.1 == Set(groups) && seen.2 == Self.vlans && seen.3 == mode && seen.4 && seen.5)
        #expect(try b.onHostThread { $0.status() }.vnics.first { $0.name == "configured" }?.mac == mac.description)
        // The guest's control operations reach the destination.
        try mover.setVLANs([0, 10])
        #expect(try b.onHostThread { $0.device(named: "configured")?.vlans } == [0, 10])
        #expect(try mover.linkIsUp())
    }

    // MARK: Nothing leaks

    /// A→B→A twenty times with traffic on each host between the moves: the same descriptors of
    /// the guest's memory and register page, buffers, vNICs, ports and connections before and
    /// after, nothing held for a move on either host.
    @Test func movingBackAndForthTwentyTimesLeaksNothing() throws {
        let a = try Self.host(), b = try Self.host()
        defer {
            a.stop()
            b.stop()
        }
        let orchestration = try MoveOrchestration(a, b)
        let back = try MoveOrchestration(b, a)
        let name = "roamer"
        let mover = try Self.attach(a, name)
        let peers = [try Self.attach(a, "peer-a"), try Self.attach(b, "peer-b")]
        var verifiers = [FlowVerifier(), FlowVerifier()]
        var sequence: [UInt64] = [0, 0]
        func exercise(_ side: Int) {
            sequence[side] += UInt64(Self.stream(64, flow: 0, from: mover, to: peers[side], first: sequence[side], into: &verifiers[side]))
            _ = Self.stream(64, flow: UInt32(1 + sequence[side] / 64), from: peers[side], to: mover, into: &verifiers[side])
        }
        func snapshot() throws -> [String: Int] {
            #expect(mover.flush(timeoutMilliseconds: 10_000))
            var out = ["buffers": mover.buffersOutstanding]
            // Each host's thread first: whatever it was doing (closing the connection a moved
            // guest left) is done before the descriptors are counted.
            for (label, host) in [("a", a), ("b", b)] {
                let counts = try host.onHostThread { d in
                    (
                        d.dataPath.devices.count, d.dataPath.vswitch.portInUse.filter { $0 }.count, d.server.connections.count,
                        d.pendingArrivalCount + d.admission.reservedMACs.count + d.departingVNICs.count
                    )
                }
                out["\(label).vnics"] = counts.0
                out["\(label).ports"] = counts.1
                out["\(label).connections"] = counts.2
                out["\(label).moves"] = counts.3
            }
            // The guest's memory and register page: every host that held the vNIC mapped them
            // through descriptors of its own (the eventfds and sockets of a vNIC a host kept would
            // show in its counts above). Only this guest's, by name: other suites run meanwhile.
            let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
            out["fds"] =
                fds.filter { fd in
                    let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? ""
                    return target.contains("npa-guest-\(name)") || target.contains("npa-regs-\(name)")
                }.count
            return out
        }
        // One round first, so that whatever is made once (and kept) is there before counting.
        exercise(0)
        try orchestration.move(name, driving: mover)
        exercise(1)
        try back.move(name, driving: mover)
        exercise(0)
        let before = try snapshot()
        #expect(before["fds"] ?? 0 >= 4, "the guest's and its host's descriptors of memory and register page: \(before)")
        for _ in 0..<20 {
            try orchestration.move(name, driving: mover)
            #expect(mover.hostSocket == b.socketPath, "\(mover.lastMoveError ?? "")")
            exercise(1)
            try back.move(name, driving: mover)
            #expect(mover.hostSocket == a.socketPath, "\(mover.lastMoveError ?? "")")
            exercise(0)
        }
        #expect(mover.flush(timeoutMilliseconds: 10_000))
        let after = try snapshot()
        #expect(after == before, "before \(before.sorted { $0.key < $1.key }), after \(after.sorted { $0.key < $1.key })")
        #expect(mover.moveDurations.count == 42 && mover.lastMoveError == nil)
        for v in verifiers { #expect(Self.isClean(v)) }
        #expect(verifiers[0].unique == 22 * 128 && verifiers[1].unique == 21 * 128)
        #expect(try mover.dropCounts().isEmpty)
    }
}
