import NPAAdmin
import NPAControlProtocol
import NPAShell
import NPATestSupport
import Testing

/// Bugs the fuzz targets (FuzzTesting/) found, each replayed as the invariant it broke. The
/// inputs themselves are in FuzzTesting/regressions/ and are replayed by every scripts/fuzz.sh run.
@Suite(.serialized) struct FuzzRegressionTests {
    /// fuzz-vmxnet3-descriptors, "good2 did not receive good1's frame": a guest with MTU 9000
    /// sent jumbo frames to a 1500-byte vNIC; each one counted as a fault of the *receiver*, and
    /// after 256 of them the well-behaved receiver was put in the error state.
    @Test func jumboFramesToASmallMTUVNICAreDroppedWithoutPuttingItInError() throws {
        let host = try TestHost()
        defer { host.stop() }
        let jumbo = try attach(host, GuestSpec("jumbo", ringSize: 256, memoryMiB: 32, mtu: 9000, bufferSize: 9018))
        let small = try attach(host, "small"), peer = try attach(host, "peer")
        let big = ethernetFrame(to: small.mac, from: jumbo.mac, payload: Array(repeating: 0x5A, count: 4000))
        // In rounds the receiver's ring holds (each refused frame uses up a posted buffer), past
        // the 256 faults that put a misbehaving guest in the error state.
        for round in 1...10 {
            #expect(jumbo.send(Array(repeating: big, count: 30)) == 30)
            #expect(try eventually { try small.deviceCounters()["drop_rx_frame_too_long"] == UInt64(round * 30) })
            #expect(drain(small).isEmpty)
        }
        #expect(try host.status(of: "small")?.state == "active")
        let f = ethernetFrame(to: small.mac, from: peer.mac)
        #expect(peer.send([f]) == 1)
        #expect(receiveFrames(small, count: 1) == [f])
    }

    /// fuzz-vmxnet3-registers, "evil took another vNIC's MAC": MACL/MACH accepted any MAC the
    /// policy allows, also one another vNIC was using, and the vswitch then sent that vNIC's
    /// frames to the guest that took it (attach already refused a MAC in use; the register did not).
    @Test func aGuestCannotTakeAnotherVNICsMAC() throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "evil"), victim = try attach(host, "victim"), peer = try attach(host, "peer")
        #expect {
            try evil.setMAC(victim.mac)
        } throws: { ($0 as? HostRefusal)?.message == "MAC \(victim.mac) is already used by another vNIC" }
        let f = ethernetFrame(to: victim.mac, from: peer.mac)
        #expect(peer.send([f]) == 1)
        #expect(receiveFrames(victim, count: 1) == [f])
        #expect(drain(evil).isEmpty)
    }
}
