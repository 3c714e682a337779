import CNPAPluginABI
import Foundation
import NPAControlProtocol
import NPARingFormats
import NPAShell
import NPASystem
import NPATestSupport
import Testing

@testable import NPANICModel

/// One codec per format: the NIC model reads its descriptors as the C structs of
/// npa_nic_models.h and writes back at offsets that must be those of the same structs; and a
/// queue's completion ring is where the plugin says it is, carried to the PF driver as is.
@Suite struct NICModelFormatTests {
    @Test func theDescriptorRingCodecsOffsetsAreTheCStructs() {
        #expect(DescriptorRingCodec.descriptorSize == MemoryLayout<npa_dring_tx_desc>.size)
        #expect(DescriptorRingCodec.descriptorSize == MemoryLayout<npa_dring_rx_desc>.size)
        #expect(DescriptorRingCodec.transmitStatusOffset == MemoryLayout<npa_dring_tx_desc>.offset(of: \.status))
        // The length word is length then csum; the status word is status, errors, vlan.
        #expect(DescriptorRingCodec.receiveLengthOffset == MemoryLayout<npa_dring_rx_desc>.offset(of: \.length))
        #expect(DescriptorRingCodec.receiveLengthOffset + 2 == MemoryLayout<npa_dring_rx_desc>.offset(of: \.csum))
        #expect(DescriptorRingCodec.receiveStatusOffset == MemoryLayout<npa_dring_rx_desc>.offset(of: \.status))
        #expect(DescriptorRingCodec.receiveStatusOffset + 1 == MemoryLayout<npa_dring_rx_desc>.offset(of: \.errors))
        #expect(DescriptorRingCodec.receiveStatusOffset + 2 == MemoryLayout<npa_dring_rx_desc>.offset(of: \.vlan))
    }

    @Test func theCompletionQueueCodecsOffsetsAreTheCStructs() {
        #expect(CompletionQueueCodec.entrySize == MemoryLayout<npa_cq_sq_entry>.size)
        #expect(CompletionQueueCodec.entrySize == MemoryLayout<npa_cq_cq_entry>.size)
        #expect(CompletionQueueCodec.completionRequestIDOffset == MemoryLayout<npa_cq_cq_entry>.offset(of: \.req_id))
        #expect(CompletionQueueCodec.completionLengthOffset == MemoryLayout<npa_cq_cq_entry>.offset(of: \.length))
        #expect(CompletionQueueCodec.completionHashOffset == MemoryLayout<npa_cq_cq_entry>.offset(of: \.hash))
        #expect(CompletionQueueCodec.completionFlagsOffset == MemoryLayout<npa_cq_cq_entry>.offset(of: \.flags))
        #expect(CompletionQueueCodec.completionFlagsOffset + 1 == MemoryLayout<npa_cq_cq_entry>.offset(of: \.status))
        #expect(CompletionQueueCodec.completionFlagsOffset + 2 == MemoryLayout<npa_cq_cq_entry>.offset(of: \.vlan))
    }

    /// What a driver writes as the C struct, the codec reads; what the codec writes back, a
    /// driver reads as the C struct.
    @Test func theCodecsRoundTripThroughTheCStructs() {
        let slot = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { slot.deallocate() }

        slot.storeBytes(
            of: npa_dring_tx_desc(addr: 0x1234_5678, length: 1514, cso: 0, cmd: 9, status: 0, css: 0, vlan: 0), as: npa_dring_tx_desc.self)
        let tx = DescriptorRingCodec.readTransmit(slot)
        #expect(tx.address == 0x1234_5678 && tx.length == 1514)
        DescriptorRingCodec.writeBackTransmit(slot, refused: true)
        let doneTx = slot.load(as: npa_dring_tx_desc.self)
        #expect(doneTx.status == UInt8(NPA_DRING_TXD_STATUS_DD | NPA_DRING_TXD_STATUS_ERR) && doneTx.addr == 0x1234_5678 && doneTx.cmd == 9)

        slot.storeBytes(
            of: npa_dring_rx_desc(addr: 0xABC000, length: 0, csum: 0, status: 0, errors: 0, vlan: 0), as: npa_dring_rx_desc.self)
        #expect(DescriptorRingCodec.readReceiveBuffer(slot) == 0xABC000)
        DescriptorRingCodec.writeBackReceive(slot, length: 60, error: false)
        let doneRx = slot.load(as: npa_dring_rx_desc.self)
        #expect(doneRx.length == 60 && doneRx.status == UInt8(NPA_DRING_RXD_STATUS_DD | NPA_DRING_RXD_STATUS_EOP) && doneRx.errors == 0)

        var entry = npa_cq_sq_entry()
        entry.addr = 0x40000
        entry.length = 2048
        entry.req_id = 77
        entry.flags = UInt8(NPA_CQ_FLAG_PHASE)
        slot.storeBytes(of: entry, as: npa_cq_sq_entry.self)
        let sq = CompletionQueueCodec.readSubmission(slot)
        #expect(sq.address == 0x40000 && sq.length == 2048 && sq.requestID == 77 && sq.phase == 1)
        CompletionQueueCodec.writeCompletion(
            slot, requestID: 77, length: 60, status: UInt8(NPA_CQ_STATUS_ERROR), hash: 0xDEAD_BEEF, phase: 0)
        let cqe = slot.load(as: npa_cq_cq_entry.self)
        #expect(
            cqe.req_id == 77 && cqe.length == 60 && cqe.flags == 0 && cqe.status == UInt8(NPA_CQ_STATUS_ERROR) && cqe.hash == 0xDEAD_BEEF)
    }

    /// Each plugin image reports where its completion rings are (npa-cq: after the submission
    /// queue; npa-dring: none), and that is what the shell sends the host.
    @Test(arguments: [("npa-dring", false), ("npa-cq", true), ("npa-cq-swift", true)])
    func thePluginReportsItsCompletionRingAndTheShellSendsIt(_ name: String, _ hasCompletions: Bool) throws {
        let images = try PluginImages.directory()
        let image = try PluginImage(adopting: PluginImages.memfd(holding: images.appendingPathComponent("\(name).so").path))
        let memory = try SharedMemory(name: "format-guest", size: 4 << 20)
        let registers = try SharedMemory(name: "format-regs", size: Int(NPA_VF_REG_PAGE_SIZE))
        let ringSize = 256, regionBytes = 0x4000
        func region(_ i: Int) -> npa_queue_region {
            let gpa = UInt64(0x10000 + regionBytes * i)
            return npa_queue_region(
                va: memory.base + Int(gpa), gpa: gpa, size: UInt32(regionBytes), ring_size: UInt32(ringSize), interrupt_vector: 0,
                completion_offset: 0)
        }
        let pool = BufferPool(baseVA: memory.base + 0x100000, baseGPA: 0x100000, bufferSize: 2048, count: 512)
        let plugin = try PluginHost(
            entry: image.entry, txRegions: [region(0), region(1)], rxRegions: [region(2)], registers: registers.base,
            registersSize: registers.size,
            pool: pool, ringSize: ringSize, doorbell: try EventNotifier())
        let tx = plugin.reportedRegions(rx: false), rx = plugin.reportedRegions(rx: true)
        #expect(tx.map(\.gpa) == [0x10000, 0x14000] && rx.map(\.gpa) == [0x18000])
        for r in tx + rx {
            #expect(r.ringSize == UInt32(ringSize))
            #expect(r.completionGPA == (hasCompletions ? r.gpa + UInt64(ringSize) * 16 : nil))
        }
        let message = ControlMessage.switchInReady(txRegions: tx, rxRegions: rx, plugin: name)
        #expect(try ControlMessage.parse(message.encode()) == message)
    }
}
