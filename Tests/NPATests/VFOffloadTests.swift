import CNPAPluginABI
import Foundation
import NPAControlProtocol
import NPARingFormats
import NPASystem
import NPATestSupport
import Testing

@testable import NPANICModel
@testable import NPAShell

/// Offloads on the passthrough path: the vendor plugin passes a TSO or checksum request in its
/// model's own descriptor format, and the NIC model (not the guest, not the host) cuts the
/// super-frame into checked segments or completes the checksum; VF receivers are told the NIC
/// made those checksums; a bogus request is counted and dropped. The plugins are driven through
/// their ops table with `npa_tx_frame` offload flags, as the shell will once it passes offloads.
@Suite(.serialized) struct VFOffloadTests {
    /// Every plugin that drives a VF: both C plugins and the Embedded Swift one.
    static let plugins: [(image: String, model: NICModel)] = [("npa-dring", .dring), ("npa-cq", .cq), ("npa-cq-swift", .cq)]

    /// A NIC with two VF guests `a` (VF 0) and `b` (VF 1) running `image`, its engine on its thread.
    struct Pair {
        let nic: SoftNIC
        let a: VFGuest
        let b: VFGuest
        let image: PluginImage?

        init(_ image: String, _ model: NICModel) throws {
            nic = try SoftNIC(name: "off", model: model, vfCount: 4)
            let loaded =
                image == "npa-cq-swift"
                ? try PluginImage(
                    adopting: PluginImages.memfd(holding: PluginImages.directory().appendingPathComponent("\(image).so").path)) : nil
            self.image = loaded
            a = try VFGuest(nic: nic, vf: 0, mac: MACAddress("02:00:00:00:70:01")!, entry: loaded?.entry)
            b = try VFGuest(nic: nic, vf: 1, mac: MACAddress("02:00:00:00:70:02")!, entry: loaded?.entry)
            nic.start()
        }
    }

    @Test(arguments: plugins)
    func aTSOSuperFrameReachesAVFAsCheckedSegmentsMarkedChecksumValid(_ image: String, _ model: NICModel) throws {
        let p = try Pair(image, model)
        defer { p.nic.stop() }
        #expect(p.a.dataPath.plugin.ops.tx_offloads == NPA_PLUGIN_OFFLOAD_TX_CSUM | NPA_PLUGIN_OFFLOAD_TSO)
        // Bigger than 16 KiB, and than any one buffer: the descriptor's length field must carry it.
        let frame = OffloadFrames.tcp(to: p.b.mac, from: p.a.mac, payload: 60_000 - OffloadFrames.tcpHeaderLength)
        #expect(p.a.sendOffloaded(frame, flags: NPA_TX_FLAG_TSO, headerLength: OffloadFrames.tcpHeaderLength, mssOrChecksum: 1448))
        let segments = p.b.receiveWithFlags(count: 42)
        #expect(OffloadFrames.segmentationProblem(segments.map(\.bytes), of: frame, mss: 1448) == nil)
        #expect(segments.allSatisfy { $0.flags & UInt16(NPA_RX_FLAG_CSUM_VALID) != 0 })
        #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))

        // The same context again (npa-dring: no new context descriptor), then another MSS.
        let next = OffloadFrames.tcp(to: p.b.mac, from: p.a.mac, payload: 3000, sequence: 2_000_000)
        #expect(p.a.sendOffloaded(next, flags: NPA_TX_FLAG_TSO, headerLength: OffloadFrames.tcpHeaderLength, mssOrChecksum: 1448))
        #expect(OffloadFrames.segmentationProblem(p.b.receiveWithFlags(count: 3).map(\.bytes), of: next, mss: 1448) == nil)
        #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))
        #expect(p.a.sendOffloaded(next, flags: NPA_TX_FLAG_TSO, headerLength: OffloadFrames.tcpHeaderLength, mssOrChecksum: 1000))
        #expect(OffloadFrames.segmentationProblem(p.b.receiveWithFlags(count: 3).map(\.bytes), of: next, mss: 1000) == nil)
        #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))

        let a = p.nic.counters(vf: 0), b = p.nic.counters(vf: 1)
        #expect(a.segmentedFrames == 3 && a.segments == 48 && a.txFrames == 48 && a.badOffloads == 0)
        #expect(a.contextDescriptors == (model == .dring ? 2 : 0))
        #expect(b.rxFrames == 48 && b.noBufferDrops == 0 && b.frameTooLong == 0)
        #expect(p.a.transmitErrors == 0)
    }

    @Test(arguments: plugins)
    func aChecksumOffloadFrameArrivesCompletedAndMarkedOthersUnmarked(_ image: String, _ model: NICModel) throws {
        let p = try Pair(image, model)
        defer { p.nic.stop() }
        let tcp = OffloadFrames.tcp(to: p.b.mac, from: p.a.mac, payload: 1001)
        let udp = OffloadFrames.udp(to: p.b.mac, from: p.a.mac, payload: 333)
        #expect(!tcp.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) })  // only the seed so far
        #expect(
            p.a.sendOffloaded(
                tcp, flags: NPA_TX_FLAG_CSUM, headerLength: OffloadFrames.l4Offset, mssOrChecksum: OffloadFrames.tcpChecksumOffset))
        #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))
        #expect(
            p.a.sendOffloaded(
                udp, flags: NPA_TX_FLAG_CSUM, headerLength: OffloadFrames.l4Offset, mssOrChecksum: OffloadFrames.udpChecksumOffset))
        #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))
        let finished = OffloadFrames.tcp(to: p.b.mac, from: p.a.mac, payload: 10)
        #expect(p.a.send([finished]) == 1)

        // The flows may land on different RX queues: told apart by length, not arrival order.
        let got = p.b.receiveWithFlags(count: 3)
        try #require(got.count == 3)
        for sent in [tcp, udp] {
            let frame = try #require(got.first { $0.bytes.count == sent.count })
            #expect(frame.bytes.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) })
            #expect(frame.flags & UInt16(NPA_RX_FLAG_CSUM_VALID) != 0)
            // Only the checksum field changed.
            let field = sent == tcp ? OffloadFrames.tcpChecksumOffset : OffloadFrames.udpChecksumOffset
            var expected = sent
            expected[field...(field + 1)] = frame.bytes[field...(field + 1)]
            #expect(frame.bytes == expected)
        }
        // A frame the NIC only forwarded: it vouches for nothing.
        let forwarded = try #require(got.first { $0.bytes.count == finished.count })
        #expect(forwarded.bytes == finished && forwarded.flags & UInt16(NPA_RX_FLAG_CSUM_VALID) == 0)
        #expect(p.nic.counters(vf: 0).checksumsCompleted == 2 && p.nic.counters(vf: 0).badOffloads == 0)
    }

    /// What a hostile (or broken) plugin can put in its descriptors: each is refused by the NIC,
    /// counted once as a bad offload, and nothing of it is sent; the queue keeps working.
    @Test(arguments: plugins)
    func bogusOffloadRequestsAreCountedAndDropped(_ image: String, _ model: NICModel) throws {
        let p = try Pair(image, model)
        defer { p.nic.stop() }
        let h = OffloadFrames.tcpHeaderLength
        let tcp = OffloadFrames.tcp(to: p.b.mac, from: p.a.mac, payload: 4000)
        let udp = OffloadFrames.udp(to: p.b.mac, from: p.a.mac, payload: 4000)
        let bogus: [(frame: [UInt8], flags: UInt32, headerLength: Int, value: Int)] = [
            (tcp, NPA_TX_FLAG_TSO, h - 14, 1448),  // header length is not the headers'
            (tcp, NPA_TX_FLAG_TSO, h, 0),  // MSS 0
            (tcp, NPA_TX_FLAG_TSO, 0, 0),  // npa-dring: TSE with no context ever set
            (tcp, NPA_TX_FLAG_TSO, h, SoftNIC.maximumFrame),  // segments over the largest frame
            (udp, NPA_TX_FLAG_TSO, OffloadFrames.l4Offset + 8, 1000),  // not TCP
            (Array(tcp[..<100]), NPA_TX_FLAG_CSUM, OffloadFrames.l4Offset, 99),  // checksum field past the end
            (Array(tcp[..<100]), NPA_TX_FLAG_TSO, 120, 40),  // header length past the frame
        ]
        for b in bogus {
            #expect(p.a.sendOffloaded(b.frame, flags: b.flags, headerLength: b.headerLength, mssOrChecksum: b.value))
            #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))
        }
        let good = OffloadFrames.tcp(to: p.b.mac, from: p.a.mac, payload: 100)
        #expect(
            p.a.sendOffloaded(
                good, flags: NPA_TX_FLAG_CSUM, headerLength: OffloadFrames.l4Offset, mssOrChecksum: OffloadFrames.tcpChecksumOffset))
        let got = p.b.receiveWithFlags(count: 1)
        #expect(got.count == 1 && got.first?.bytes.count == good.count)
        #expect(p.a.dataPath.flush(timeoutMilliseconds: 10_000))
        let a = p.nic.counters(vf: 0)
        #expect(a.badOffloads == UInt64(bogus.count))
        #expect(a.segments == 0 && a.txFrames == 1 && a.checksumsCompleted == 1)
        #expect(p.nic.counters(vf: 1).rxFrames == 1)
        #expect(a.badDescriptors == 0 && a.dmaFaults == 0)
        #expect(p.a.transmitErrors == UInt64(bogus.count))
    }
}

extension VFGuest {
    /// Hands `frame` with an offload request straight to the plugin (built in the guest's
    /// scratch area, since a super-frame is bigger than a buffer); a pool buffer's id rides along
    /// as the completion token, so the shell's in-order completion count stays exact. One at a
    /// time: the caller flushes before the next (the scratch is reused).
    func sendOffloaded(_ frame: [UInt8], flags: UInt32, headerLength: Int, mssOrChecksum: Int, queue: Int = 0) -> Bool {
        let plugin = dataPath.plugin
        precondition(frame.count <= VFGuest.scratchBytes && plugin.txFIFOs[queue].count == 0)
        (memory.base + Int(scratchGPA)).copyMemory(from: frame, byteCount: frame.count)
        guard let token = plugin.pool.take() else { return false }
        var request = npa_tx_frame(
            gpa: scratchGPA, buf_id: token, length: UInt32(frame.count), vlan_tci: 0, flags: UInt16(flags),
            offload_header_length: UInt16(headerLength), offload_mss_or_csum: UInt16(mssOrChecksum))
        let taken = plugin.ops.add_tx_frames!(plugin.state, UInt32(queue), &request, 1, NPA_TX_FLAG_LAST_HINT) == 1
        if taken { plugin.txFIFOs[queue].push(token) } else { plugin.pool.give(token) }
        return taken
    }

    /// Receives until `count` frames arrived (or 20 s passed), with the flags the plugin
    /// indicated for each.
    func receiveWithFlags(count: Int) -> [(bytes: [UInt8], flags: UInt16)] {
        let plugin = dataPath.plugin
        var got: [(bytes: [UInt8], flags: UInt16)] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while got.count < count && ContinuousClock.now < deadline {
            _ = dataPath.waitFor(timeoutMilliseconds: 200) {
                let before = got.count
                for q in 0..<queues {
                    plugin.receivedCount = 0
                    let n = Int(plugin.ops.check_rx_ring!(plugin.state, UInt32(q), 64))
                    for i in 0..<n {
                        let id = plugin.receivedIDs[i]
                        got.append(
                            (
                                Array(UnsafeRawBufferPointer(start: plugin.pool.va(id), count: Int(plugin.receivedLengths[i]))),
                                plugin.receivedFlags[i]
                            )
                        )
                        plugin.pool.give(id)
                    }
                    if n > 0 { _ = plugin.ops.refill_rx_ring!(plugin.state, UInt32(q)) }
                }
                return got.count > before
            }
        }
        return got
    }

    /// TX frames the plugin counted as refused by the device, over all queues.
    var transmitErrors: UInt64 {
        let plugin = dataPath.plugin
        var total: UInt64 = 0
        for q in 0..<queues {
            var stats = npa_queue_stats()
            plugin.ops.get_stats!(plugin.state, UInt32(q), 0, &stats)
            total += stats.errors
        }
        return total
    }
}

/// The offload fields of each model's format, as the C structs lay them out, are what its codec
/// reads; the checksum-ok bits its codec writes are where the plugins look.
@Suite struct VFOffloadFormatTests {
    @Test func theDescriptorRingCodecReadsTheOffloadFieldsOfTheCStructs() {
        let slot = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { slot.deallocate() }
        var context = npa_dring_tx_context_desc()
        context.mss = 1448
        context.hlen = 66
        context.cmd = UInt8(NPA_DRING_TXD_CMD_DEXT)
        slot.storeBytes(of: context, as: npa_dring_tx_context_desc.self)
        let c = DescriptorRingCodec.readTransmit(slot)
        #expect(c.isContext && c.offload == .segmentation(headerLength: 66, mss: 1448))
        #expect(MemoryLayout<npa_dring_tx_context_desc>.offset(of: \.cmd) == MemoryLayout<npa_dring_tx_desc>.offset(of: \.cmd))
        #expect(MemoryLayout<npa_dring_tx_context_desc>.offset(of: \.status) == DescriptorRingCodec.transmitStatusOffset)

        let tse = UInt8(NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS | NPA_DRING_TXD_CMD_TSE | NPA_DRING_TXD_CMD_IC)
        slot.storeBytes(
            of: npa_dring_tx_desc(addr: 0x9000, length: 60000, cso: 50, cmd: tse, status: 0, css: 34, vlan: 0), as: npa_dring_tx_desc.self)
        let t = DescriptorRingCodec.readTransmit(slot, context: (66, 1448))
        #expect(!t.isContext && t.address == 0x9000 && t.length == 60000 && t.offload == .segmentation(headerLength: 66, mss: 1448))
        let ic = UInt8(NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_IC)
        slot.storeBytes(
            of: npa_dring_tx_desc(addr: 0x9000, length: 1000, cso: 50, cmd: ic, status: 0, css: 34, vlan: 0), as: npa_dring_tx_desc.self)
        #expect(DescriptorRingCodec.readTransmit(slot).offload == .checksum(start: 34, field: 50))

        slot.storeBytes(of: npa_dring_rx_desc(addr: 0xA000, length: 0, csum: 0, status: 0, errors: 0, vlan: 0), as: npa_dring_rx_desc.self)
        DescriptorRingCodec.writeBackReceive(slot, length: 1514, error: false, checksumValid: true)
        #expect(slot.load(as: npa_dring_rx_desc.self).status & UInt8(NPA_DRING_RXD_STATUS_L4CS) != 0)
        DescriptorRingCodec.writeBackReceive(slot, length: 1514, error: true, checksumValid: true)
        #expect(slot.load(as: npa_dring_rx_desc.self).status & UInt8(NPA_DRING_RXD_STATUS_L4CS) == 0)
    }

    @Test func theCompletionQueueCodecReadsTheOffloadFieldsOfTheCStructs() {
        let slot = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
        defer { slot.deallocate() }
        func read(flags: UInt32, l4Offset: UInt8, meta: UInt16) -> (phase: UInt8, offload: TransmitOffload) {
            var entry = npa_cq_sq_entry()
            entry.addr = 0x9000
            entry.length = 60000
            entry.flags = UInt8(NPA_CQ_FLAG_PHASE | flags)
            entry.l4_offset = l4Offset
            entry.meta = meta
            slot.storeBytes(of: entry, as: npa_cq_sq_entry.self)
            let e = CompletionQueueCodec.readSubmission(slot)
            return (e.phase, e.offload)
        }
        #expect(read(flags: 0, l4Offset: 0, meta: 0) == (1, .none))
        #expect(read(flags: NPA_CQ_SQ_TSO, l4Offset: 54, meta: 1448) == (1, .segmentation(headerLength: 54, mss: 1448)))
        #expect(read(flags: NPA_CQ_SQ_CSUM, l4Offset: 34, meta: 50) == (1, .checksum(start: 34, field: 50)))
        // Both at once: a request no frame satisfies, refused like any bad one.
        #expect(read(flags: NPA_CQ_SQ_TSO | NPA_CQ_SQ_CSUM, l4Offset: 54, meta: 1448) == (1, .segmentation(headerLength: 0, mss: 0)))

        CompletionQueueCodec.writeCompletion(slot, requestID: 3, length: 1514, status: 0, hash: 0, phase: 1, checksumValid: true)
        #expect(slot.load(as: npa_cq_cq_entry.self).flags == UInt8(NPA_CQ_FLAG_PHASE | NPA_CQ_FLAG_CSUM_OK))
        CompletionQueueCodec.writeCompletion(
            slot, requestID: 3, length: 0, status: UInt8(NPA_CQ_STATUS_ERROR), hash: 0, phase: 0, checksumValid: true)
        #expect(slot.load(as: npa_cq_cq_entry.self).flags == 0)
    }
}
