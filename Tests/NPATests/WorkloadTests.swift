import Foundation
import NPAControlProtocol
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// The pieces `npa bench` leans on: the switches' MAC table and the windowed stream.
@Suite(.serialized) struct WorkloadTests {
    @Test func theMACTableAgreesWithADictionaryThroughInsertsRemovesAndGrowth() {
        var rng = SplitMix(seed: 42)  // deterministic, so a failure replays
        var table = MACTable(capacity: 4)
        var reference: [UInt64: Int] = [:]
        // Few distinct MACs and VLANs, so keys collide, repeat and are removed from probe runs.
        let keys = (0..<300).map { _ in
            MACTable.key(mac: 0x0200_0000_0000 | UInt64.random(in: 0..<64, using: &rng), vlan: UInt16.random(in: 0..<8, using: &rng))
        }
        for step in 0..<20_000 {
            let key = keys[Int.random(in: 0..<keys.count, using: &rng)]
            if Bool.random(using: &rng) {
                table.insert(key, port: step % 97)
                reference[key] = step % 97
            } else {
                table.remove(key)
                reference[key] = nil
            }
            if step % 100 == 0 {
                for k in keys where table[k] != reference[k] {
                    Issue.record(
                        "step \(step): key \(String(k, radix: 16)) → \(String(describing: table[k])), expected \(String(describing: reference[k]))"
                    )
                    return
                }
            }
        }
        #expect(table.count == reference.count)
        #expect(table.port(mac: 0x0200_0000_00FF, vlan: 9) == nil)
    }

    /// A sender far faster than its receiver, with a window smaller than the receiver's posted
    /// buffers: nothing is dropped for lack of buffers, every frame is verified once, in order.
    @Test func aWindowedStreamNeverOverrunsTheReceiver() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "a", queues: 1), b = try attach(host, "b", queues: 1)
        var workload = TrafficWorkload(count: 20_000, frameBytes: 64, flows: 2, timeoutSeconds: 120)
        workload.window = 128
        let results = Results()
        let tx = Unmanaged.passRetained(a), rx = Unmanaged.passRetained(b)
        defer { tx.release(); rx.release() }
        let receiver = EngineThread.start(name: "test-rx") { results.receive = workload.receive(rx.takeUnretainedValue()) }
        let sender = EngineThread.start(name: "test-tx") {
            results.send = workload.send(tx.takeUnretainedValue(), to: rx.takeUnretainedValue().mac)
        }
        EngineThread.join(sender)
        EngineThread.join(receiver)
        #expect(results.send.sent == 20_000)
        #expect(results.receive.received == 20_000)
        #expect(results.receive.duplicates == 0 && results.receive.outOfOrder == 0 && results.receive.invalid == 0)
        #expect(try b.deviceCounters()["drop_no_buffers", default: 0] == 0)
        // The sender's receive side saw only acknowledgements, the last one for every frame.
        #expect(try a.deviceCounters()["rx_frames", default: 0] > 0)
    }

    /// Busy-poll mode never sleeps on the interrupt, yet a wait with nothing to receive still
    /// ends at its deadline, and frames that do arrive are still taken.
    @Test func aBusyPollingGuestHonoursItsDeadlineAndStillReceives() throws {
        let host = try TestHost()
        defer { host.stop() }
        let busy = try attach(host, GuestSpec("busy", mac: "02:00:00:00:b0:01", ringSize: 256, memoryMiB: 8, spinPolls: Int.max))
        let peer = try attach(host, "peer", queues: 1)
        #expect(busy.receive(maxFrames: 8, timeoutMilliseconds: 30).isEmpty)
        #expect(busy.interruptWaits == 0)
        #expect(peer.send([ethernetFrame(to: busy.mac, from: peer.mac)]) == 1)
        #expect(receiveFrames(busy, count: 1).count == 1)
        #expect(busy.interruptWaits == 0)
    }

    final class Results: @unchecked Sendable {
        var send = TrafficSummary(role: "send")
        var receive = TrafficSummary(role: "recv")
    }
}
