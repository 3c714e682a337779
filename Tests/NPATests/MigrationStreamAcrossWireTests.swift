import Foundation
import NPAControlProtocol
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// The issue's invariant under load, over real TAP wires: a guest migrates A → B → A three
/// times, switched in to a VF on each host (A's `npa-dring` with its plugin, B's `npa-cq` with
/// its own), while it and a guest on host B exchange sequence-numbered streams both ways at a
/// fixed rate. Neither sender pauses for the migrations: each keeps calling `transmit` on its
/// schedule, a frame the TX ring cannot take yet is offered again later (it was never handed
/// over), and only frames `transmit` accepted count. Every accepted frame arrives once, in order.
extension MigrationUnderLoad {
    @Suite(.serialized) struct MigrationStreamAcrossWireTests {
        static let available = TAPDevice.isAvailable && NetworkLab.toolIsInstalled("ip")
        static let skipReason = "needs root, /dev/net/tun and ip (scripts/install-deps.sh installs them)"

        @Test(.enabled(if: available, Comment(rawValue: skipReason)))
        func streamsBothWaysKeepEveryFrameOnceInOrderWhileAGuestMigratesBetweenVFsOfTwoNICModels() throws {
            let wire = try MigrationWireLab(subnet: 81)
            defer { wire.tearDown() }
            let (a, b) = (wire.a, wire.b)
            let mover = try GuestSpec("mover", mac: "02:00:5e:00:81:01", queues: 1).attach(to: a.socketPath)
            let peer = try GuestSpec("peer", mac: "02:00:5e:00:81:02", queues: 1).attach(to: b.socketPath)
            var streams = TwoWayStream(
                mover: mover, peer: peer,
                framesPerSecond: Int(ProcessInfo.processInfo.environment["NPA_MIGRATION_STREAM_FPS"] ?? "") ?? 5000)

            try a.admin.switchVNIC(name: "mover", toPassthrough: true)
            let switchedInAtA = streams.run(until: { _ in mover.mode == "passthrough" })
            #expect(switchedInAtA, "the mover never switched in at A: \(mover.switchLog)")
            let started = streams.run(until: { $0.accepted.0 >= 500 && $0.accepted.1 >= 500 })
            #expect(started, "the streams never started")

            var downtimes: [Double] = []
            var forwarded: [UInt64] = []
            for trip in 0..<6 {
                let (from, to) = trip % 2 == 0 ? (a, b) : (b, a)
                let record = try wire.migrate("mover", from: from, to: to, streaming: &streams)
                #expect(record?.phase == "completed", "trip \(trip): \(String(describing: record))")
                #expect(mover.hostSocket == to.socketPath, "trip \(trip): \(mover.lastMoveError ?? "") \(mover.switchLog)")
                if let downtime = record?.deviceDowntimeMilliseconds { downtimes.append(downtime) }
                forwarded.append(record?.framesForwarded ?? 0)
                // Switched in at the destination with its own NIC's plugin, the streams going on.
                let switchedIn = streams.run { _ in mover.mode == "passthrough" && (try? to.status(of: "mover"))?.mode == "passthrough" }
                #expect(switchedIn, "trip \(trip): not in passthrough at the destination: \(mover.switchLog)")
                let (moverSent, peerSent) = streams.accepted
                let flowing = streams.run(until: { $0.accepted.0 >= moverSent + 300 && $0.accepted.1 >= peerSent + 300 })
                #expect(flowing, "trip \(trip): the streams stopped")
                print(
                    "migration stream, trip \(trip): out of order so far \(streams.atPeer.outOfOrder) at the peer, \(streams.atMover.outOfOrder) at the mover"
                )
            }
            #expect(mover.hostSocket == a.socketPath)

            // The senders stop; every frame `transmit` took arrives (generous bound, a condition).
            streams.framesPerSecond = 0
            let drained = streams.run(until: { $0.allArrived })
            for (direction, verifier, sent) in [
                ("mover → peer", streams.atPeer, streams.accepted.0), ("peer → mover", streams.atMover, streams.accepted.1),
            ] {
                print(
                    "migration stream \(direction): \(sent) sent, \(verifier.unique) received, \(verifier.duplicates) duplicates, \(verifier.outOfOrder) out of order, \(verifier.gaps) gaps"
                )
                #expect(verifier.unique == sent, "\(direction): \(sent) accepted by transmit, \(verifier.unique) arrived")
                #expect(verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.gaps == 0 && verifier.invalid == 0, "\(direction)")
            }
            #expect(drained)
            print(
                "migration stream: device downtime per migration (ms): \(downtimes.map { String(format: "%.1f", $0) }), frames forwarded by the source: \(forwarded)"
            )
            for (host, name) in [(a, "A"), (b, "B")] {
                let counters = (try? host.status(of: "mover"))?.counters.filter {
                    $0.key.contains("migration") || $0.key.hasPrefix("drop") && $0.value > 0
                }
                print("migration stream: the mover's migration counters at host \(name): \(counters ?? [:])")
                let lost = try host.admin.status().migrations?.map(\.framesLost).reduce(0, +) ?? 0
                #expect(lost == 0, "host \(name) counted \(lost) frames lost to migrations")
            }
            let (moverDrops, peerDrops) = (try mover.dropCounts(), try peer.dropCounts())
            #expect(moverDrops.isEmpty && peerDrops.isEmpty, "mover: \(moverDrops), peer: \(peerDrops)")
        }
    }
}

/// Two numbered streams between a migrating guest and a peer, each sent at a fixed rate from
/// one thread that also receives both ways. `accepted` counts frames `transmit` took; what it
/// could not take is offered again on the next turn (under the same sequence numbers).
struct TwoWayStream: TurningStream {
    let mover: VirtualNIC
    let peer: VirtualNIC
    var framesPerSecond: Int
    private(set) var atPeer = FlowVerifier()
    private(set) var atMover = FlowVerifier()
    private(set) var accepted = (0, 0)
    private var start = ContinuousClock.now
    static let moverFlow: UInt32 = 1
    static let peerFlow: UInt32 = 2

    init(mover: VirtualNIC, peer: VirtualNIC, framesPerSecond: Int) {
        self.mover = mover
        self.peer = peer
        self.framesPerSecond = framesPerSecond
    }

    var allArrived: Bool { atPeer.unique == accepted.0 && atMover.unique == accepted.1 }

    /// Sends what the schedule says is due by now, then receives both ways.
    mutating func turn() {
        if framesPerSecond > 0 {
            let elapsed = ContinuousClock.now - start
            let (seconds, attoseconds) = elapsed.components
            let due = Int(seconds) * framesPerSecond + Int(Double(attoseconds) / 1e18 * Double(framesPerSecond))
            accepted.0 += Self.send(from: mover, to: peer, flow: Self.moverFlow, first: accepted.0, upTo: due)
            accepted.1 += Self.send(from: peer, to: mover, flow: Self.peerFlow, first: accepted.1, upTo: due)
        }
        _ = mover.reclaimTransmitted()
        _ = peer.reclaimTransmitted()
        Self.take(peer, flow: Self.moverFlow, into: &atPeer)
        Self.take(mover, flow: Self.peerFlow, into: &atMover, timeoutMilliseconds: 1)
    }

    private static func send(from sender: VirtualNIC, to receiver: VirtualNIC, flow: UInt32, first: Int, upTo due: Int) -> Int {
        guard due > first else { return 0 }
        let (dst, src) = (receiver.mac, sender.mac)
        return sender.transmit(count: min(due - first, 64)) { i, buffer in
            TrafficFrame.write(into: buffer, destination: dst, source: src, flow: flow, sequence: UInt64(first + i), length: 128)
        }
    }

    private static func take(_ receiver: VirtualNIC, flow: UInt32, into verifier: inout FlowVerifier, timeoutMilliseconds: Int = 0) {
        var v = verifier
        receiver.receive(maxFrames: 128, timeoutMilliseconds: timeoutMilliseconds) { frame in
            if TrafficFrame.parse(frame.bytes)?.flow == flow { v.record(frame.bytes) }
        }
        verifier = v
    }
}
