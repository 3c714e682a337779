import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// A live migration's frames on the hosts' data paths. The source holds every frame for the
/// stopped vNIC (delivering none, dropping none, holding no sender back) until the orchestration
/// forwards them or gives them back; the destination gives the guest the forwarded frames before
/// any that reached it directly. Each test streams sequence-numbered frames through real guests
/// and checks every one is accounted for, once, in order; the host-thread calls are made between
/// passes as the orchestration will make them.
@Suite(.serialized) struct MigrationFramesTests {
    static let flow: UInt32 = 7
    static let receiverMAC = MACAddress("02:00:00:00:c0:01")!

    func attach(_ host: SteppedTestHost, _ name: String, mac: MACAddress? = nil) throws -> VirtualNIC {
        try GuestSpec(name, mac: mac?.description, queues: 1, ringSize: 256, memoryMiB: 8).attach(to: host.socketPath)
    }

    /// Sends `sequences` of flow `flow` from `sender` to `destination` as fast as its ring
    /// allows; returns how many were handed to the device (a generous bound, never a
    /// synchronisation: a sender held back for good stops short, and the test fails).
    func stream(_ sender: VirtualNIC, to destination: MACAddress, _ sequences: Range<UInt64>, while receiving: () -> Void = {}) -> Int {
        var next = sequences.lowerBound
        let source = sender.mac
        let deadline = ContinuousClock.now + .seconds(60)
        while next < sequences.upperBound && ContinuousClock.now < deadline {
            let first = next
            let n = sender.transmit(queue: 0, count: min(32, Int(sequences.upperBound - next))) { i, buffer in
                TrafficFrame.write(
                    into: buffer, destination: destination, source: source, flow: Self.flow, sequence: first + UInt64(i), length: 128)
            }
            next += UInt64(n)
            if n == 0 {
                receiving()
                _ = sender.waitForTransmitSpace(queue: 0, timeoutMilliseconds: 5)
            }
        }
        return Int(next - sequences.lowerBound)
    }

    /// Receives on `nic` into `verifier` until it has `total` unique frames (or a generous bound).
    func receive(_ nic: VirtualNIC, into verifier: inout FlowVerifier, until total: Int) {
        let deadline = ContinuousClock.now + .seconds(60)
        while verifier.unique < total && ContinuousClock.now < deadline {
            nic.receive(maxFrames: 256, timeoutMilliseconds: 10) { verifier.record($0.bytes) }
        }
    }

    func counters(_ host: SteppedTestHost, _ name: String) throws -> MigrationFrameCounters {
        try host.onHostThread { d in d.dataPath.migrationCounters(for: try d.attachedDevice(name)) ?? MigrationFrameCounters() }
    }

    func held(_ host: SteppedTestHost, _ name: String) throws -> Int {
        try host.onHostThread { d in d.device(named: name).map { d.dataPath.heldFrameCount(for: $0) } ?? -1 }
    }

    /// The source side when the migration fails: frames for the stopped receiver are held (far
    /// more than its ring holds, none delivered, none dropped, the sender never held back), and
    /// when it resumes they reach it first, then the stream carries on, in order.
    @Test func framesForAStoppedVNICAreHeldInOrderAndDeliveredFirstWhenItResumes() throws {
        let host = try SteppedTestHost()
        defer { host.stop() }
        let sender = try attach(host, "s"), receiver = try attach(host, "r", mac: Self.receiverMAC)
        var verifier = FlowVerifier()
        let (before, whileHeld, after) = (500, 3000, 700)

        #expect(
            stream(sender, to: receiver.mac, 0..<UInt64(before)) { receiver.receive(maxFrames: 256) { verifier.record($0.bytes) } }
                == before)
        receive(receiver, into: &verifier, until: before)
        #expect(verifier.unique == before)

        let rxBefore = try host.onHostThread { d -> UInt64 in
            let device = try d.attachedDevice("r")
            device.stop()
            d.dataPath.holdFrames(for: device)
            return device.counters.rxFrames
        }
        // More than the receiver's 256 buffers: the sender finishes only if the hold never
        // makes it wait.
        #expect(stream(sender, to: receiver.mac, UInt64(before)..<UInt64(before + whileHeld)) == whileHeld)
        #expect(try eventually { try held(host, "r") == whileHeld })
        #expect(sender.flush(timeoutMilliseconds: 20_000), "the sender's frames were all completed while its receiver was held")
        #expect(receiver.receive(maxFrames: 256, timeoutMilliseconds: 50).isEmpty, "a frame reached the held receiver")
        #expect(try host.onHostThread { try $0.attachedDevice("r").counters }.rxFrames == rxBefore)
        #expect(try receiver.dropCounts().isEmpty)

        // The migration failed: the device resumes here, the held frames go first.
        try host.onHostThread { d in
            let device = try d.attachedDevice("r")
            device.resume()
            d.dataPath.stopHolding(for: device, then: .deliverToDevice)
        }
        let total = before + whileHeld + after
        #expect(
            stream(sender, to: receiver.mac, UInt64(before + whileHeld)..<UInt64(total)) {
                receiver.receive(maxFrames: 256) { verifier.record($0.bytes) }
            }
                == after)
        receive(receiver, into: &verifier, until: total)
        #expect(
            verifier.unique == total && verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.gaps == 0 && verifier.invalid == 0)
        #expect(try receiver.dropCounts().isEmpty)
        let c = try counters(host, "r")
        #expect(c.held == UInt64(whileHeld) && c.released == UInt64(whileHeld) && c.overflowDrops == 0 && c.discarded == 0)
        #expect(try held(host, "r") == 0)
        #expect(try host.onHostThread { !$0.dataPath.anyMigrationHold })
    }

    /// The whole path between two hosts: the receiver's frames are held at A after it stops,
    /// B holds the frames that reach its restored receiver directly, A's held frames are taken
    /// and forwarded to B in batches while both keep arriving, and the guest — first on A, then
    /// on B — sees one stream: every frame once, in sending order.
    @Test func forwardedFramesReachTheGuestAtTheDestinationBeforeDirectOnesInOrder() throws {
        let a = try SteppedTestHost(), b = try SteppedTestHost()
        defer {
            a.stop()
            b.stop()
        }
        let senderA = try attach(a, "s"), receiverA = try attach(a, "r", mac: Self.receiverMAC)
        let senderB = try attach(b, "s"), receiverB = try attach(b, "r", mac: Self.receiverMAC)
        var verifier = FlowVerifier()
        let dst = Self.receiverMAC

        // On A until the stop.
        var sent = stream(senderA, to: dst, 0..<400) { receiverA.receive(maxFrames: 256) { verifier.record($0.bytes) } }
        receive(receiverA, into: &verifier, until: sent)
        try a.onHostThread { d in
            let device = try d.attachedDevice("r")
            device.stop()
            d.dataPath.holdFrames(for: device)
        }
        try b.onHostThread { d in d.dataPath.beginForwarding(for: try d.attachedDevice("r")) }

        // The peer's frames still reach A (held there) until the network learns the MAC's new
        // port; from then on they reach B directly (held there until forwarding ends). A's are
        // forwarded in batches meanwhile.
        var forwarded = 0
        func forward(max: Int) throws {
            let frames = try a.onHostThread { d in d.dataPath.takeHeldFrames(for: try d.attachedDevice("r"), max: max) }
            let accepted = try b.onHostThread { d in d.dataPath.deliverForwarded(frames, to: try d.attachedDevice("r")) }
            #expect(accepted == frames.count)
            forwarded += frames.count
        }
        sent += stream(senderA, to: dst, UInt64(sent)..<UInt64(sent + 1200))
        #expect(try eventually { try held(a, "r") == 1200 })
        try forward(max: 500)
        sent += stream(senderB, to: dst, UInt64(sent)..<UInt64(sent + 900))  // after the announcement: direct to B
        #expect(try eventually { try held(b, "r") == 900 })
        try forward(max: 500)
        try forward(max: 500)
        let leftAtA = try held(a, "r")
        #expect(forwarded == 1200 && leftAtA == 0)
        try a.onHostThread { d in d.dataPath.stopHolding(for: try d.attachedDevice("r"), then: .discard) }
        try b.onHostThread { d in d.dataPath.endForwarding(for: try d.attachedDevice("r")) }
        sent += stream(senderB, to: dst, UInt64(sent)..<UInt64(sent + 600)) {
            receiverB.receive(maxFrames: 256) { verifier.record($0.bytes) }
        }
        #expect(sent == 3100)
        receive(receiverB, into: &verifier, until: sent)

        #expect(
            verifier.unique == sent && verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.gaps == 0 && verifier.invalid == 0)
        #expect(try receiverB.dropCounts().isEmpty)
        #expect(try receiverA.dropCounts().isEmpty)
        let (ca, cb) = (try counters(a, "r"), try counters(b, "r"))
        #expect(ca.held == 1200 && ca.forwardedOut == 1200 && ca.discarded == 0 && ca.overflowDrops == 0)
        #expect(cb.forwardedIn == 1200 && cb.held == 900 && cb.released == 900 && cb.overflowDrops == 0)
        #expect(senderA.flush(timeoutMilliseconds: 20_000) && senderB.flush(timeoutMilliseconds: 20_000))
    }

    /// Frames entering by the uplink (the PF's queue or a TAP wire: `admitFromUplink`) for a held
    /// vNIC are held too, each taken at once (never left waiting in the uplink's queue), and
    /// delivered first, in order, when holding ends.
    @Test func framesFromTheUplinkForAHeldVNICAreHeldAndTakenAtOnce() throws {
        var configuration = HostConfiguration()
        configuration.uplink = .counting
        let host = try SteppedTestHost(configuration: configuration)
        defer { host.stop() }
        let receiver = try attach(host, "r", mac: Self.receiverMAC)
        let outside = MACAddress("02:00:00:00:c0:99")!
        let count = 600
        let taken = try host.onHostThread { d -> Int in
            let device = try d.attachedDevice("r")
            device.stop()
            d.dataPath.holdFrames(for: device)
            var frame = [UInt8](repeating: 0, count: 128)
            var taken = 0
            for sequence in 0..<UInt64(count) {
                let length = frame.withUnsafeMutableBytes {
                    TrafficFrame.write(
                        into: $0, destination: Self.receiverMAC, source: outside, flow: Self.flow, sequence: sequence, length: 128)
                }
                let admitted = frame.withUnsafeBytes {
                    d.dataPath.admitFromUplink($0.baseAddress!, length: length, ingress: d.dataPath.vswitch.uplinkPort!, exempt: nil)
                }
                if admitted { taken += 1 }
            }
            return taken
        }
        #expect(taken == count, "a frame for the held vNIC was left waiting in the uplink's queue")
        #expect(try held(host, "r") == count)
        #expect(receiver.receive(maxFrames: 256, timeoutMilliseconds: 20).isEmpty)
        try host.onHostThread { d in
            let device = try d.attachedDevice("r")
            device.resume()
            d.dataPath.stopHolding(for: device, then: .deliverToDevice)
        }
        var verifier = FlowVerifier()
        receive(receiver, into: &verifier, until: count)
        #expect(verifier.unique == count && verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.gaps == 0)
        #expect(try receiver.dropCounts().isEmpty)
    }

    /// The hold is bounded: past it, frames are dropped and counted as `migration_overflow`
    /// (shown with the vNIC's drops), the sender is still never held back, and discarding the
    /// rest is counted too.
    @Test func aFullHoldDropsAndCountsTheRestWithoutHoldingTheSenderBack() throws {
        let host = try SteppedTestHost()
        defer { host.stop() }
        let sender = try attach(host, "s"), receiver = try attach(host, "r", mac: Self.receiverMAC)
        try host.onHostThread { d in
            let device = try d.attachedDevice("r")
            device.stop()
            d.dataPath.holdFrames(for: device)
        }
        let capacity = MigrationHeldFrames.maximumFrames
        #expect(stream(sender, to: receiver.mac, 0..<UInt64(capacity + 100)) == capacity + 100)
        #expect(try eventually { try counters(host, "r").overflowDrops == 100 })
        #expect(try held(host, "r") == capacity)
        let status = try host.onHostThread { $0.status() }.vnics.first { $0.name == "r" }
        #expect(status?.counters["drop_migration_overflow"] == 100 && status?.counters["migration_held"] == UInt64(capacity))
        try host.onHostThread { d in d.dataPath.stopHolding(for: try d.attachedDevice("r"), then: .discard) }
        #expect(try counters(host, "r").discarded == UInt64(capacity))
        #expect(try held(host, "r") == 0)
        #expect(sender.flush(timeoutMilliseconds: 20_000))
    }
}

extension HostDaemon {
    /// The vNIC of guest `name`, for closures run on the host's thread (where `#require` would
    /// record its failure outside the test): a missing one throws, and the test fails on it.
    func attachedDevice(_ name: String) throws -> EmulatedDevice {
        struct NoSuchVNIC: Error, CustomStringConvertible { let description: String }
        guard let device = device(named: name) else { throw NoSuchVNIC(description: "no vNIC named '\(name)' on the host") }
        return device
    }
}
