import CNPAPluginABI
import NPAControlProtocol
import NPARingFormats
import NPASystem
import NPATestSupport
import Testing

@testable import NPANICModel

/// Backpressure keeps a TSO super-frame whole: it waits in its sender's ring until the receiver
/// has a buffer for every segment, then all of them arrive; none is dropped for want of a buffer.
/// npa-dring descriptors are written straight into the rings and the engine stepped here.
@Suite struct VFOffloadBackpressureTests {
    static let txRing: UInt64 = 0x0, rxRing: UInt64 = 0x10000, frameGPA: UInt64 = 0x100000, buffers: UInt64 = 0x200000
    static let ringSize: UInt32 = 32

    @Test func aSuperFrameWaitsUntilTheReceiverHasABufferPerSegmentThenArrivesWhole() throws {
        let memory = try SharedMemory(name: "tso-backpressure", size: 4 << 20)
        let guest = GuestMemory(base: memory.base, size: memory.size)
        let nic = try SoftNIC(name: "tso-bp", model: .dring, vfCount: 2)
        nic.receiverStallLimitNanoseconds = 600_000_000_000  // far beyond any pause: no outcome depends on time
        let macs = [MACAddress("02:00:00:00:72:01")!, MACAddress("02:00:00:00:72:02")!]
        for vf in 0..<2 {
            nic.grant(vf: vf, memory: guest)
            nic.setMAC(vf: vf, macs[vf])
            let tx = VirtualFunction.QueueConfig(ringGPA: Self.txRing + UInt64(vf) * 0x20000, ringSize: Self.ringSize)
            let rx = VirtualFunction.QueueConfig(ringGPA: Self.rxRing + UInt64(vf) * 0x20000, ringSize: Self.ringSize)
            try nic.initializeQueues(vf: vf, tx: [tx], rx: [rx], interrupt: try EventNotifier())
            nic.enable(vf: vf)
        }
        func register(_ vf: Int, _ offset: UInt32) -> UnsafeMutablePointer<UInt32> {
            (nic.vfs[vf].registers.base + Int(offset)).assumingMemoryBound(to: UInt32.self)
        }
        func slot(_ ring: UInt64, _ i: Int) -> UnsafeMutableRawPointer { memory.base + Int(ring) + i * 16 }
        let receiveRing = Self.rxRing + 0x20000
        func post(_ range: Range<Int>) {
            for i in range {
                slot(receiveRing, i).storeBytes(
                    of: npa_dring_rx_desc(addr: Self.buffers + UInt64(i) * 2048, length: 0, csum: 0, status: 0, errors: 0, vlan: 0),
                    as: npa_dring_rx_desc.self)
            }
            register(1, NPA_DRING_REG_RDT(0)).pointee = UInt32(range.upperBound)
        }

        let frame = OffloadFrames.tcp(to: macs[1], from: macs[0], payload: 20 * 1000)
        (memory.base + Int(Self.frameGPA)).copyMemory(from: frame, byteCount: frame.count)
        var context = npa_dring_tx_context_desc()
        context.mss = 1000
        context.hlen = UInt16(OffloadFrames.tcpHeaderLength)
        context.cmd = UInt8(NPA_DRING_TXD_CMD_DEXT)
        slot(Self.txRing, 0).storeBytes(of: context, as: npa_dring_tx_context_desc.self)
        let command = UInt8(NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS | NPA_DRING_TXD_CMD_TSE)
        slot(Self.txRing, 1).storeBytes(
            of: npa_dring_tx_desc(addr: Self.frameGPA, length: UInt16(frame.count), cso: 0, cmd: command, status: 0, css: 0, vlan: 0),
            as: npa_dring_tx_desc.self)
        post(0..<10)
        register(0, NPA_DRING_REG_TDT(0)).pointee = 2

        // 10 buffers for 20 segments: the context is taken, the super-frame waits in the ring.
        nic.runPass()
        #expect(register(0, NPA_DRING_REG_TDH(0)).pointee == 1)
        #expect(nic.counters(vf: 0).contextDescriptors == 1 && nic.counters(vf: 0).segmentedFrames == 0)
        #expect(nic.counters(vf: 1).rxFrames == 0 && nic.counters(vf: 1).noBufferDrops == 0)
        #expect(slot(Self.txRing, 1).load(as: npa_dring_tx_desc.self).status == 0)

        post(10..<25)
        nic.runPass()
        #expect(register(0, NPA_DRING_REG_TDH(0)).pointee == 2)
        #expect(slot(Self.txRing, 1).load(as: npa_dring_tx_desc.self).status == UInt8(NPA_DRING_TXD_STATUS_DD))
        let a = nic.counters(vf: 0), b = nic.counters(vf: 1)
        #expect(a.segmentedFrames == 1 && a.segments == 20 && a.txFrames == 20 && a.badOffloads == 0)
        #expect(b.rxFrames == 20 && b.noBufferDrops == 0)
        var segments: [[UInt8]] = []
        for i in 0..<20 {
            let d = slot(receiveRing, i).load(as: npa_dring_rx_desc.self)
            #expect(
                d.status & UInt8(NPA_DRING_RXD_STATUS_DD | NPA_DRING_RXD_STATUS_L4CS)
                    == UInt8(NPA_DRING_RXD_STATUS_DD | NPA_DRING_RXD_STATUS_L4CS))
            segments.append(Array(UnsafeRawBufferPointer(start: memory.base + Int(d.addr), count: Int(d.length))))
        }
        #expect(OffloadFrames.segmentationProblem(segments, of: frame, mss: 1000) == nil)
    }
}
