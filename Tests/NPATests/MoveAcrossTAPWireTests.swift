import Foundation
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// Migrations between two hosts whose uplinks are TAP devices joined by a Linux bridge (in a
/// namespace this test makes and removes), orchestrated by the hosts themselves (the admin's
/// `migrate`, their authenticated channel, hold, forwarding and self-announce): a
/// sequence-numbered stream from a guest on one host to a guest on the other keeps every frame,
/// once, in order, while the sender moves to the receiver's host and back, and while the
/// receiver moves to the sender's host and back. The stream does not stop for a migration: it
/// goes on (within its window) while each one runs.
extension MigrationUnderLoad {
    @Suite(.serialized) struct MoveAcrossTAPWireTests {
        static let available = TAPDevice.isAvailable && NetworkLab.toolIsInstalled("ip")
        static let skipReason = "needs root, /dev/net/tun and ip (scripts/install-deps.sh installs them)"

        /// Frames on their way at most: far below what a TAP's queue and the bridge hold, so no
        /// frame is dropped for want of room on the wire.
        static let window = 32

        @Test(.enabled(if: available, Comment(rawValue: skipReason)))
        func aStreamAcrossTheWireKeepsEveryFrameInOrderWhileEitherEndMoves() throws {
            let lab = NetworkLab()
            defer { lab.removeAll() }
            let keyFile = ScriptedDestination.writeKeyFile()
            defer { unlink(keyFile) }
            let taps = ["npm\(lab.tag)a", "npm\(lab.tag)b"]
            var hosts: [TestHost] = []
            defer { for host in hosts { host.stop() } }
            for tap in taps {
                var configuration = HostConfiguration()
                configuration.uplink = .tap(tap)
                configuration.migrationKeyFile = keyFile
                configuration.migrationListen = TestHost.freshSocketPath() + ".migrate"
                configuration.migrationTimeoutMilliseconds = 60_000
                hosts.append(try TestHost(configuration: configuration))
            }
            let lan = try lab.addNamespace("lan")
            try lab.ip(["-n", lan, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
            try lab.ip(["-n", lan, "link", "set", "br0", "up"])
            for tap in taps {
                try lab.ip(["link", "set", tap, "netns", lan])
                try lab.ip(["-n", lan, "link", "set", tap, "master", "br0", "up"])
            }
            let (a, b) = (hosts[0], hosts[1])
            let sender = try GuestSpec("sender", mac: "02:00:5e:00:01:01", queues: 1).attach(to: a.socketPath)
            let receiver = try GuestSpec("receiver", mac: "02:00:5e:00:01:02", queues: 1).attach(to: b.socketPath)
            var stream = WireStream(sender: sender, receiver: receiver)
            let crossed = stream.probe()
            #expect(crossed, "no frame crossed the bridge")

            stream.run(until: 1000)
            // The sender moves A → B and back, then the receiver B → A and back, the stream going on.
            for (step, (guest, from, to)) in [(sender, a, b), (sender, b, a), (receiver, b, a), (receiver, a, b)].enumerated() {
                let record = try migrate(guest, from: from, to: to, streaming: &stream, until: 1000 * (step + 2))
                #expect(record?.phase == "completed", "step \(step): \(String(describing: record))")
                #expect(guest.hostSocket == to.socketPath, "step \(step): \(guest.lastMoveError ?? "") \(guest.switchLog)")
                stream.run(until: 1000 * (step + 2))
            }
            stream.receiveAll()

            let v = stream.verifier
            #expect(stream.sent == 5000 && v.unique == 5000, "sent \(stream.sent), received \(v.unique)")
            #expect(v.duplicates == 0 && v.outOfOrder == 0 && v.gaps == 0 && v.invalid == 0)
            #expect(sender.moveDurations.count == 2 && receiver.moveDurations.count == 2)
            #expect(try sender.dropCounts().isEmpty && receiver.dropCounts().isEmpty)
        }

        /// Asks `from` to migrate `guest` to `to` and streams meanwhile (up to `total` frames, then
        /// receiving only) until the migration finishes; returns the source's record of it.
        func migrate(
            _ guest: VirtualNIC, from: TestHost, to: TestHost, streaming stream: inout WireStream, until total: Int
        ) throws -> StatusReport.Migration? {
            let id = try from.admin.migrate(name: guest.name, to: to.daemon.migrationAddress ?? "")
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                stream.step(toward: total)
                if let record = try from.admin.migration(id: id), record.isFinished { return record }
            }
            return nil
        }
    }
}

/// A one-way stream of numbered frames across the wire, at most `MigrationUnderLoad.MoveAcrossTAPWireTests.window`
/// of them on their way at a time.
struct WireStream {
    let sender: VirtualNIC
    let receiver: VirtualNIC
    var verifier = FlowVerifier()
    var sent = 0
    /// Probe frames sent before the stream (the sender's device counts them too).
    var probes = 0
    static let flow: UInt32 = 0
    static let probeFlow: UInt32 = 7

    init(sender: VirtualNIC, receiver: VirtualNIC) {
        self.sender = sender
        self.receiver = receiver
    }

    /// Sends probes until one arrives (the bridge forwards from the first frame, but nothing
    /// here may depend on that); the probes are not part of the stream.
    mutating func probe() -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        var arrived = false
        while !arrived && ContinuousClock.now < deadline {
            let (dst, src, n) = (receiver.mac, sender.mac, UInt64(probes))
            probes += sender.transmit(count: 1) { _, buffer in
                TrafficFrame.write(into: buffer, destination: dst, source: src, flow: Self.probeFlow, sequence: n, length: 128)
            }
            sender.reclaimTransmitted()
            receiver.receive(maxFrames: 64, timeoutMilliseconds: 10) { frame in
                if TrafficFrame.parse(frame.bytes)?.flow == Self.probeFlow { arrived = true }
            }
        }
        // Probes still on their way are received and dropped by the stream's filter.
        return arrived
    }

    /// Streams until `total` frames were sent and received.
    mutating func run(until total: Int) {
        let deadline = ContinuousClock.now + .seconds(60)
        while (sent < total || verifier.unique < total) && ContinuousClock.now < deadline { step(toward: total) }
    }

    /// One turn: sends what the window allows (up to `total` in all), then receives.
    mutating func step(toward total: Int) {
        let room = min(total - sent, MigrationUnderLoad.MoveAcrossTAPWireTests.window - (sent - verifier.unique))
        if room > 0 {
            let (dst, src, first) = (receiver.mac, sender.mac, UInt64(sent))
            sent += sender.transmit(count: room) { i, buffer in
                TrafficFrame.write(into: buffer, destination: dst, source: src, flow: Self.flow, sequence: first + UInt64(i), length: 128)
            }
        }
        sender.reclaimTransmitted()
        take(timeoutMilliseconds: room > 0 ? 0 : 5)
    }

    /// Receives until `count` stream frames arrived (bounded by a generous deadline).
    mutating func receive(until count: Int) {
        let deadline = ContinuousClock.now + .seconds(60)
        while verifier.unique < count && ContinuousClock.now < deadline { take(timeoutMilliseconds: 5) }
    }

    /// Receives every frame sent so far.
    mutating func receiveAll() { receive(until: sent) }

    private mutating func take(timeoutMilliseconds: Int) {
        var verifier = self.verifier
        receiver.receive(maxFrames: 64, timeoutMilliseconds: timeoutMilliseconds) { frame in
            if let parsed = TrafficFrame.parse(frame.bytes), parsed.flow == Self.flow { verifier.record(frame.bytes) }
        }
        self.verifier = verifier
    }
}
