import NPAControlProtocol
import NPAShell
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
        var c = VirtualNIC.Configuration(name: "jumbo")
        c.mtu = 9000
        c.bufferSize = 9018
        c.ringSize = 256
        c.memoryBytes = 32 << 20
        let jumbo = try VirtualNIC.attach(hostSocket: host.socketPath, configuration: c)
        let small = try attach(host, "small"), peer = try attach(host, "peer")
        let big = ethernetFrame(to: small.mac, from: jumbo.mac, payload: Array(repeating: 0x5A, count: 4000))
        // In rounds the receiver's ring holds (each refused frame uses up a posted buffer), past
        // the 256 faults that put a misbehaving guest in the error state.
        for round in 1...10 {
            #expect(jumbo.send(Array(repeating: big, count: 30)) == 30)
            #expect(try eventually { try small.deviceCounters()["drop_buffer_too_small"] == UInt64(round * 30) })
            #expect(drain(small).isEmpty)
        }
        #expect(try small.hostStatus().vnics.first { $0.name == "small" }?.state == "active")
        let f = ethernetFrame(to: small.mac, from: peer.mac)
        #expect(peer.send([f]) == 1)
        #expect(receiveFrames(small, count: 1) == [f])
    }
}
