import Foundation
import NPAAdmin
import NPAHost
import NPANICModel
import NPAShell
import NPATestSupport
import NPAWorkload
import Testing

/// Losses the chaos soak (`npa soak --chaos`) found, each replayed here on its own.
///
/// Topology in each: `b` is the guest whose VF fails, `a` streams to it from emulation (through
/// the vswitch and the PF) and `c` from another VF (through the NIC's embedded switch). Every
/// frame either sends to `b` must arrive exactly once, in order, with nothing dropped: the fault
/// is `b`'s VF, and `b` moves to emulation without losing what was sent to it meanwhile.
@Suite(.serialized) struct ChaosRegressionTests {
    struct Topology {
        let host: TestHost
        let a: VirtualNIC, b: VirtualNIC, c: VirtualNIC
        var sequences: [UInt64] = [0, 0]
        var atB = FlowVerifier()

        init(model: String) throws {
            // Frames wait for the guest's switch-out up to the receiver stall limit: far longer
            // here than any wait a loaded machine imposes, so the outcome does not depend on timing.
            var config = try HostConfiguration.withNIC(model: model, vfs: 4)
            config.receiverStallMilliseconds = 60_000
            host = try TestHost(configuration: config)
            a = try attach(host, "a", mac: "02:00:00:00:c1:01", queues: 1, ringSize: 1024, memoryMiB: 32)
            b = try attach(host, "b", mac: "02:00:00:00:c1:02", queues: 1, ringSize: 1024, memoryMiB: 32)
            c = try attach(host, "c", mac: "02:00:00:00:c1:03", queues: 1, ringSize: 1024, memoryMiB: 32)
            for nic in [b, c] { try host.switchIn(nic) }
        }

        /// A burst of 16 to `b` from `a` (flow 0) and from `c` (flow 1).
        mutating func burstToB() -> Int {
            var sent = 0
            for (flow, from) in [a, c].enumerated() {
                let first = sequences[flow], b = self.b
                let n = from.transmit(count: 16) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: b.mac, source: from.mac, flow: UInt32(flow), sequence: first + UInt64(i), length: 300)
                }
                sequences[flow] += UInt64(n)
                sent += n
            }
            return sent
        }

        var vfOfB: Int? {
            try? host.vfIndex(of: "b")
        }
    }

    /// Cause 1: a VF disabled under its plugin (the PF quiesces it; the host learns of it only
    /// when the plugin reports the fault). Frames for it that reached the NIC went up the PF and
    /// then nowhere: from the PF (an emulated sender) out of the wire, from another VF into the
    /// vswitch, which had no port for the MAC (`pfFramesUnroutable`). Neither was counted where
    /// the receiver could see it. Now both wait in the PF queue until the guest switches out.
    @Test(arguments: NICModelRegistry.names)
    func framesForAVFDisabledUnderItsPluginWaitForTheSwitchOut(_ model: String) throws {
        var t = try Topology(model: model)
        defer { t.host.stop() }
        #expect(t.b.mode == "passthrough" && t.c.mode == "passthrough")
        let nic = try #require(t.host.daemon.nics.first)
        let vf = try #require(t.vfOfB)
        var total = t.burstToB()
        _ = try receiveUntilAccounted(t.b, &t.atB, total: total)
        #expect(t.atB.unique == total)
        let wireBefore = nic.uplinkFrames
        nic.quiesce(vf: vf)  // behind the plugin's back
        total += t.burstToB()
        // Both senders' frames have left their rings (the NIC and the host took them): a's went
        // from the vswitch into the NIC, c's from its VF up the PF.
        #expect(t.a.flush(timeoutMilliseconds: 10_000))
        #expect(t.c.flush(timeoutMilliseconds: 10_000))
        // b's plugin finds its VF dead, the host resets it, b switches out and gets them all.
        let drops = try receiveUntilAccounted(t.b, &t.atB, total: total)
        #expect(t.b.mode == "emulated", "\(t.b.switchLog.suffix(6))")
        #expect(t.atB.unique == total, "received \(t.atB.unique) of \(total), drops \(drops), wire \(nic.uplinkFrames - wireBefore)")
        #expect(drops.isEmpty)
        #expect(t.atB.duplicates == 0 && t.atB.outOfOrder == 0 && t.atB.invalid == 0)
        #expect(nic.uplinkFrames == wireBefore, "frames for b left by the wire")
        total += t.burstToB()
        _ = try receiveUntilAccounted(t.b, &t.atB, total: total)
        #expect(t.atB.unique == total && t.atB.outOfOrder == 0)
    }

    /// Cause 2: a VF reset (`reset_vf`, or the host's answer to a plugin fault) gave the MAC back
    /// to the vswitch at once, while the guest's emulated device was still quiesced (its rings
    /// hold buffers the VF path reuses) until the guest re-armed it on DIC. Frames for the guest
    /// in that window were dropped as `vnic_inactive`. Now the MAC moves at `switchOutBegin`, as
    /// at any switch-out, and frames for it wait in their senders' rings or the PF queue.
    @Test(arguments: NICModelRegistry.names)
    func aVFResetDropsNothingSentToTheGuestBeforeItSwitchesOut(_ model: String) throws {
        var t = try Topology(model: model)
        defer { t.host.stop() }
        #expect(t.b.mode == "passthrough" && t.c.mode == "passthrough")
        var total = t.burstToB()
        _ = try receiveUntilAccounted(t.b, &t.atB, total: total)
        #expect(t.atB.unique == total)
        let nic = try #require(t.host.daemon.nics.first)
        // The host resets b's VF; b makes no data-path call (so does not switch out) until the
        // host has dealt with the frames sent to it meanwhile.
        try t.host.admin.resetVF(name: t.b.name)
        let holdsBefore = try t.b.deviceCounters()["sender_holds"] ?? 0
        total += t.burstToB()
        #expect(t.c.flush(timeoutMilliseconds: 10_000))
        // Dealt with: dropped (a's completed, the PF queue emptied) or held back for b.
        let dealtWith = try eventually {
            let counters = try t.b.deviceCounters()
            if (counters["sender_holds"] ?? 0) > holdsBefore { return true }
            _ = t.a.reclaimTransmitted()
            return t.a.transmitsInFlight == 0 && nic.pfReceive.isEmpty
        }
        #expect(dealtWith)
        let drops = try receiveUntilAccounted(t.b, &t.atB, total: total)
        #expect(t.b.mode == "emulated", "\(t.b.switchLog.suffix(6))")
        #expect(t.atB.unique == total, "received \(t.atB.unique) of \(total), drops \(drops)")
        #expect(drops.isEmpty)
        #expect(t.atB.duplicates == 0 && t.atB.outOfOrder == 0 && t.atB.invalid == 0)
        #expect(t.a.flush(timeoutMilliseconds: 10_000))
        let status = try t.host.status(of: "b")
        #expect(status?.lastSwitchError == "VF reset by the host")
    }
}
