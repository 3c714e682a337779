import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// A receiver with no free buffer holds its sender back (the frame waits in the sender's TX
/// ring) instead of losing the frame, for at most the host's `receiver_stall_ms`.
@Suite(.serialized) struct BackpressureTests {
    /// Sends `count` workload frames from `sender` to `receiver` on queue 0; whenever the
    /// sender's ring stays full, calls `whenHeld` (the receiver catching up, or not). Returns
    /// how many times the sender was held.
    func send(_ count: Int, from sender: VirtualNIC, to receiver: MACAddress, flow: UInt32 = 0, whenHeld: () -> Void) -> Int {
        var sent = 0, held = 0
        let source = sender.mac
        while sent < count {
            let first = UInt64(sent)
            let n = sender.transmit(queue: 0, count: min(32, count - sent)) { i, buffer in
                TrafficFrame.write(
                    into: buffer, destination: receiver, source: source, flow: flow, sequence: first + UInt64(i), length: 128)
            }
            sent += n
            if n == 0 && !sender.waitForTransmitSpace(queue: 0, timeoutMilliseconds: 20) {
                held += 1
                whenHeld()
            }
        }
        return held
    }

    @Test func aReceiverThatFallsBehindHoldsItsSenderBackAndLosesNothing() throws {
        var config = HostConfiguration()
        config.receiverStallMilliseconds = 60_000  // far longer than the receiver ever waits here
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a", queues: 1), b = try attach(host, "b", queues: 1)
        // b takes nothing until a's ring is full: 2000 frames are far more than b's 255 buffers.
        try expectHeldBackLosingNothing(2000, from: a, to: b)
    }

    /// `receiver` takes frames only while `sender`'s ring stays full: the sender must have been
    /// held back, and every frame must arrive once, in order, with nothing dropped.
    func expectHeldBackLosingNothing(_ count: Int, from sender: VirtualNIC, to receiver: VirtualNIC) throws {
        var verifier = FlowVerifier()
        let held = send(count, from: sender, to: receiver.mac) {
            receiver.receive(maxFrames: 64, timeoutMilliseconds: 0) { verifier.record($0.bytes) }
        }
        let drops = try receiveUntilAccounted(receiver, &verifier, total: count)
        #expect(held > 0, "the sender was never held back: the test did not exercise backpressure")
        #expect(verifier.unique == count && verifier.duplicates == 0 && verifier.outOfOrder == 0 && verifier.invalid == 0)
        #expect(drops.isEmpty, "\(drops)")
    }

    @Test func aReceiverThatStopsReceivingCannotHoldItsSenderForLong() throws {
        var config = HostConfiguration()
        config.receiverStallMilliseconds = 1
        let host = try TestHost(configuration: config)
        defer { host.stop() }
        let a = try attach(host, "a", queues: 1), stuck = try attach(host, "stuck", queues: 1), c = try attach(host, "c", queues: 1)
        // `stuck` never receives: after the stall limit its frames are dropped and counted, and
        // a's frames for c get through behind them.
        _ = send(2000, from: a, to: stuck.mac) {}
        var atC = FlowVerifier()
        _ = send(100, from: a, to: c.mac, flow: 1) { c.receive(maxFrames: 64, timeoutMilliseconds: 0) { atC.record($0.bytes) } }
        #expect(try receiveUntilAccounted(c, &atC, total: 100).isEmpty)
        #expect(atC.unique == 100)
        var atStuck = FlowVerifier()
        let drops = try receiveUntilAccounted(stuck, &atStuck, total: 2000)
        #expect(atStuck.unique == 255, "its posted buffers")  // a 256-descriptor ring holds 255
        #expect(drops == ["no_buffers": 2000 - 255])
    }

    /// The same through the NIC model: a VF receiver without buffers holds back a VF sender (its
    /// descriptors stay in its ring) and an emulated sender (the host's PF burst stops there).
    @Test(arguments: [
        ("npa-dring", false, true), ("npa-dring", true, true), ("npa-cq", false, true), ("npa-cq", true, true), ("npa-cq", true, false),
    ])
    func aVFReceiverThatFallsBehindHoldsItsSenderBack(_ model: String, _ senderOnVF: Bool, _ receiverOnVF: Bool) throws {
        let fixture = try PassthroughFixture(
            model: model, vfs: 4, a: GuestSpec("a", mac: "02:00:00:00:e0:01", queues: 1, memoryMiB: 32),
            b: GuestSpec("b", mac: "02:00:00:00:e0:02", queues: 1, memoryMiB: 32), switchIn: (senderOnVF, receiverOnVF)
        ) { $0.receiverStallMilliseconds = 60_000 }
        defer { fixture.stop() }
        let (a, b) = (fixture.a, fixture.b)
        #expect(a.mode == (senderOnVF ? "passthrough" : "emulated") && b.mode == (receiverOnVF ? "passthrough" : "emulated"))
        try expectHeldBackLosingNothing(3000, from: a, to: b)
    }
}
