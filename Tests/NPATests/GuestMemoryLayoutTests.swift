import NPAShell
import Testing

/// Where the shell puts things in guest memory (docs/architecture.md, "Guest memory layout"),
/// and the receive backlog that carries frames across a switch: pure values, no host.
@Suite struct GuestMemoryLayoutTests {
    @Test func theLayoutIsTheDocumentedOne() throws {
        var c = VirtualNIC.Configuration(name: "a")
        c.txQueues = 2
        c.rxQueues = 3
        c.ringSize = 256
        let layout = try GuestMemoryLayout(c)
        #expect(GuestMemoryLayout.driverSharedGPA == 0x1000)
        #expect(GuestMemoryLayout.queueTableGPA == 0x2000)
        #expect(GuestMemoryLayout.multicastTableGPA == 0x3000)
        #expect(layout.regionBytes % 4096 == 0)
        let base = UnsafeMutableRawPointer(bitPattern: 0x10_0000)!
        let emulation = layout.emulationRegions(base: base), vf = layout.vfRegions(base: base)
        #expect(emulation.tx.count == 2 && emulation.rx.count == 3 && vf.tx.count == 2 && vf.rx.count == 3)
        // Emulation's TX then RX regions from 0x4000, then the VF's, back to back, then the pool.
        let all = emulation.tx + emulation.rx + vf.tx + vf.rx
        for (i, r) in all.enumerated() {
            #expect(r.gpa == UInt64(0x4000 + i * layout.regionBytes))
            #expect(r.va == base + Int(r.gpa))
            #expect(r.ring_size == 256 && Int(r.size) == layout.regionBytes)
        }
        #expect(layout.poolGPA == 0x4000 + all.count * layout.regionBytes)
        #expect(layout.bufferCount == (c.memoryBytes - layout.poolGPA) / c.bufferSize)
    }

    @Test func memoryTooSmallForTheRingsIsRefused() {
        var c = VirtualNIC.Configuration(name: "a")
        c.memoryBytes = 1 << 20
        c.ringSize = 4096
        #expect(throws: VirtualNIC.AttachError.self) { try GuestMemoryLayout(c) }
    }

    @Test func theReceiveBacklogKeepsArrivalOrderAcrossItsEnd() {
        var backlog = ReceiveBacklog(capacity: 4)
        defer { backlog.deallocate() }
        var out: [UInt32] = []
        for round in 0..<3 {
            for i in 0..<3 { backlog.append(id: UInt32(round * 3 + i), length: UInt32(60 + i)) }
            while !backlog.isEmpty {
                let frame = backlog.removeFirst()
                #expect(frame.length == 60 + frame.id % 3)
                out.append(frame.id)
            }
        }
        #expect(out == Array(0..<9))
    }
}
