import Foundation
import NPAControlProtocol
@testable import NPAHost
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// Moves between two hosts whose uplinks are TAP devices joined by a Linux bridge (in a
/// namespace this test makes and removes): a sequence-numbered stream from a guest on one host
/// to a guest on the other keeps every frame, once, in order, while the sender moves to the
/// receiver's host and back, and while the receiver moves to the sender's host and back.
///
/// What the test still arranges itself, until the host's data-path side of migration (holding
/// and forwarding frames for a vNIC that is leaving, and the self-announce) joins this: a moving
/// sender's frames already on the wire are received before it resumes (else the destination's
/// local delivery could overtake them), and the sender pauses while the receiver's device is
/// stopped (a stopped vNIC's frames are dropped as `vnic_inactive`).
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
        let taps = ["npm\(lab.tag)a", "npm\(lab.tag)b"]
        var hosts: [SteppedTestHost] = []
        defer { for host in hosts { host.stop() } }
        for tap in taps {
            var configuration = HostConfiguration()
            configuration.uplink = .tap(tap)
            hosts.append(try SteppedTestHost(configuration: configuration))
        }
        let lan = try lab.addNamespace("lan")
        try lab.ip(["-n", lan, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
        try lab.ip(["-n", lan, "link", "set", "br0", "up"])
        for tap in taps {
            try lab.ip(["link", "set", tap, "netns", lan])
            try lab.ip(["-n", lan, "link", "set", tap, "master", "br0", "up"])
        }
        let (a, b) = (hosts[0], hosts[1])
        let there = try MoveOrchestration(a, b), back = try MoveOrchestration(b, a)
        let sender = try GuestSpec("sender", mac: "02:00:5e:00:01:01", queues: 1).attach(to: a.socketPath)
        let receiver = try GuestSpec("receiver", mac: "02:00:5e:00:01:02", queues: 1).attach(to: b.socketPath)
        var stream = WireStream(sender: sender, receiver: receiver)
        let crossed = stream.probe()
        #expect(crossed, "no frame crossed the bridge")

        stream.run(until: 1000)
        // The sender moves A → B: once what A sent has arrived, the move; then B delivers locally.
        try moveSender(there, &stream)
        #expect(sender.hostSocket == b.socketPath, "\(sender.lastMoveError ?? "") \(sender.switchLog)")
        stream.run(until: 2000)
        try moveSender(back, &stream)
        #expect(sender.hostSocket == a.socketPath, "\(sender.lastMoveError ?? "") \(sender.switchLog)")
        stream.run(until: 3000)
        // The receiver moves B → A (to the sender) and back, the sender pausing while it is stopped.
        stream.receiveAll()
        try back.move("receiver", driving: receiver)
        #expect(receiver.hostSocket == a.socketPath, "\(receiver.lastMoveError ?? "") \(receiver.switchLog)")
        stream.run(until: 4000)
        stream.receiveAll()
        try there.move("receiver", driving: receiver)
        #expect(receiver.hostSocket == b.socketPath, "\(receiver.lastMoveError ?? "") \(receiver.switchLog)")
        stream.run(until: 5000)
        stream.receiveAll()

        let v = stream.verifier
        #expect(stream.sent == 5000 && v.unique == 5000, "sent \(stream.sent), received \(v.unique)")
        #expect(v.duplicates == 0 && v.outOfOrder == 0 && v.gaps == 0 && v.invalid == 0)
        #expect(sender.moveDurations.count == 2 && receiver.moveDurations.count == 2)
        #expect(try sender.dropCounts().isEmpty && receiver.dropCounts().isEmpty)
    }

    /// Stops the sender at the source, waits until the receiver has every frame the source's
    /// device sent (they may still be on the wire), then moves it.
    func moveSender(_ orchestration: MoveOrchestration, _ stream: inout WireStream) throws {
        let bytes = try orchestration.source.onHostThread { try $0.beginDeparture(named: "sender") }
        // The saved counters say how many frames the device sent: the probes, then the stream's.
        let sentByDevice = try DeviceState(decoding: bytes).counters.device.txFrames
        let token = MoveToken.random()
        try orchestration.destination.onHostThread { try $0.expectArrival(stateBytes: bytes, token: token) }
        stream.receive(until: Int(sentByDevice) - stream.probes)
        try orchestration.offer("sender", token: token)
        stream.sender.reclaimTransmitted()
    }
}

/// A one-way stream of numbered frames across the wire, at most `MoveAcrossTAPWireTests.window`
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
        while (sent < total || verifier.unique < total) && ContinuousClock.now < deadline {
            let room = min(total - sent, MoveAcrossTAPWireTests.window - (sent - verifier.unique))
            if room > 0 {
                let (dst, src, first) = (receiver.mac, sender.mac, UInt64(sent))
                sent += sender.transmit(count: room) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: dst, source: src, flow: Self.flow, sequence: first + UInt64(i), length: 128)
                }
            }
            sender.reclaimTransmitted()
            take(timeoutMilliseconds: room > 0 ? 0 : 5)
        }
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
