import Foundation
import NPANICModel
import NPASystem
import NPATestSupport
import Testing

/// `TAPWire.drains`, which a live migration's source waits on (`WireDrainFence`): it counts a
/// read that found the kernel's queue empty, and only once the switch took every frame read
/// before it. Frames the kernel sends out of a TAP in a namespace this test makes (and removes)
/// are read on the test's thread, as the engine would.
@Suite(.serialized) struct TAPWireDrainTests {
    @Test(.enabled(if: TAPWireTests.available, Comment(rawValue: TAPWireTests.skipReason)))
    func aDrainCountsOnlyAnEmptyReadWithEveryFrameBeforeItTaken() throws {
        let lab = NetworkLab()
        defer { lab.removeAll() }
        let name = "npa\(lab.tag)d"
        let wire = try TAPWire(name: name, maximumFrame: SoftNIC.maximumFrame)
        let ns = try lab.addNamespace("drain")
        try lab.ip(["link", "set", name, "netns", ns])
        try lab.ip(["-n", ns, "link", "set", name, "up"])

        /// One read (forced, as epoll's "readable" would), then the frames taken one by one:
        /// while any is left the count stands still; after the last it moves by one, as it does
        /// for a read that found nothing. (Fewer than a batch: the read found the queue empty.)
        func readAndTakeOneByOne() -> Int {
            wire.markReadable()
            let before = wire.drains
            let n = wire.fill()
            #expect(n < TAPWire.batchSize)
            for k in 0..<n {
                #expect(wire.drains == before, "frame \(k + 1) of \(n) still to take")
                wire.consume(1)
            }
            #expect(wire.drains == before + 1, "after \(n) frames read and taken")
            return n
        }

        #expect(readAndTakeOneByOne() >= 0)
        // Three frames the kernel sends out of the TAP (a packet socket in the namespace).
        let frame = String(repeating: "ff", count: 6) + "020000000001" + "88b5" + String(repeating: "00", count: 46)
        let send =
            "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('\(name)',0))\nfor _ in range(3): s.send(bytes.fromhex('\(frame)'))"
        let sent = try lab.run(in: ns, ["python3", "-c", send])
        #expect(sent.status == 0, "\(sent.output)")
        var read = 0
        #expect(
            eventually(timeoutMilliseconds: 30_000) {
                read += readAndTakeOneByOne(); return read >= 3
            })
    }
}
