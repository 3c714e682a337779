import Benchmark
import CNPAPluginABI
import NPAControlProtocol
import NPANICModel
import NPARingFormats
import NPASystem

/// The NIC engine's cost per byte with TSO and without, for the same 65,160 bytes of TCP payload
/// from VF 0 to VF 1 of an npa-dring NIC per iteration: one 64 KiB super-frame the NIC cuts into
/// 45 segments of 1,502 bytes (checksums made by the NIC), or the same 45 segments handed over
/// finished. Descriptors are written straight into the rings and the engine is stepped on this
/// thread (`runPass`), so only the NIC's own work is measured; divide the time by 65,160 for the
/// cost per payload byte.
func nicOffloadBenchmarks(_ configuration: Benchmark.Configuration) {
    for tso in [false, true] {
        let name =
            tso
            ? "NIC engine: one 64 KiB TSO super-frame cut into 45 x 1502 B segments, VF to VF"
            : "NIC engine: 45 x 1502 B finished frames, VF to VF (the same payload without TSO)"
        Benchmark(name, configuration: configuration) { benchmark in
            let rig = try NICOffloadRig(tso: tso)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { rig.sendOnce() }
            benchmark.stopMeasurement()
            precondition(rig.nic.counters(vf: 1).rxFrames > 0 && rig.nic.counters(vf: 0).badOffloads == 0)
        }
    }
}

/// Two VFs of one npa-dring NIC sharing one guest memory: VF 0's TX ring, VF 1's RX ring with
/// 2 KiB buffers, the super-frame and its 45 finished segments, all written once.
final class NICOffloadRig {
    static let mss = 1448, segments = 45, headerLength = 54
    static let txRing: UInt64 = 0x0, rxRing: UInt64 = 0x10000, superFrame: UInt64 = 0x100000
    static let finished: UInt64 = 0x200000, buffers: UInt64 = 0x400000, ringSize: UInt32 = 256
    let nic: SoftNIC
    let raw: UnsafeMutableRawPointer
    let memory: GuestMemory
    let tso: Bool
    let interrupt: EventNotifier
    var txTail: UInt32 = 0
    var rxTail: UInt32 = 0

    init(tso: Bool) throws {
        self.tso = tso
        nic = try SoftNIC(name: "bench-tso", model: .dring, vfCount: 2)
        let size = 8 << 20
        raw = .allocate(byteCount: size, alignment: 4096)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        memory = GuestMemory(base: raw, size: size)
        interrupt = try EventNotifier()
        let macs: [UInt64] = [0x0200_0000_7001, 0x0200_0000_7002]
        for vf in 0..<2 {
            nic.grant(vf: vf, memory: memory)
            nic.setMAC(vf: vf, MACAddress(value: macs[vf]))
            let tx = VirtualFunction.QueueConfig(ringGPA: Self.txRing + UInt64(vf) * 0x20000, ringSize: Self.ringSize)
            let rx = VirtualFunction.QueueConfig(ringGPA: Self.rxRing + UInt64(vf) * 0x20000, ringSize: Self.ringSize)
            try nic.initializeQueues(vf: vf, tx: [tx], rx: [rx], interrupt: interrupt)
            nic.enable(vf: vf)
        }
        let payload = Self.mss * Self.segments
        let frame = raw + Int(Self.superFrame)
        EthernetFrame.storeMAC(macs[1], frame, at: 0)
        EthernetFrame.storeMAC(macs[0], frame, at: 6)
        let header: [UInt8] = [
            0x08, 0x00, 0x45, 0, UInt8((payload + 40) >> 8), UInt8((payload + 40) & 0xFF), 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1,
            10, 0, 0, 2, 0x9C, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0,
        ]
        (frame + 12).copyMemory(from: header, byteCount: header.count)
        for i in 0..<payload { frame.storeBytes(of: UInt8(truncatingIfNeeded: i), toByteOffset: Self.headerLength + i, as: UInt8.self) }
        let plan = try TCPSegmentation(
            frame: UnsafeRawBufferPointer(start: frame, count: Self.headerLength + payload), headerLength: Self.headerLength, mss: Self.mss,
            maxSegmentFrame: SoftNIC.maximumFrame)
        for i in 0..<Self.segments {
            _ = plan.writeSegment(
                i, from: UnsafeRawBufferPointer(start: frame, count: Self.headerLength + payload), into: raw + Int(Self.finished) + i * 2048
            )
        }
        if tso {  // the queue's TSO context, once, as a TCP stream's stays the same
            writeTransmit(
                address: UInt64(Self.mss) | UInt64(Self.headerLength) << 16, length: 0, command: UInt8(NPA_DRING_TXD_CMD_DEXT))
        }
        for _ in 0..<(Self.ringSize - 1) { postReceiveBuffer() }
        ring(vf: 1, NPA_DRING_REG_RDT(0), rxTail)
        ring(vf: 0, NPA_DRING_REG_TDT(0), txTail)
        nic.runPass()
    }

    deinit { raw.deallocate() }

    /// The payload once, TSO or finished, through the engine; the receiver's buffers re-posted.
    func sendOnce() {
        if tso {
            writeTransmit(
                address: Self.superFrame, length: UInt16(Self.headerLength + Self.mss * Self.segments),
                command: UInt8(NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS | NPA_DRING_TXD_CMD_TSE))
        } else {
            for i in 0..<Self.segments {
                writeTransmit(
                    address: Self.finished + UInt64(i) * 2048, length: UInt16(Self.headerLength + Self.mss),
                    command: UInt8(NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS))
            }
        }
        ring(vf: 0, NPA_DRING_REG_TDT(0), txTail)
        nic.runPass()
        for _ in 0..<Self.segments { postReceiveBuffer() }
        ring(vf: 1, NPA_DRING_REG_RDT(0), rxTail)
    }

    private func writeTransmit(address: UInt64, length: UInt16, command: UInt8) {
        let d = raw + Int(Self.txRing) + Int(txTail) * 16
        d.storeBytes(
            of: npa_dring_tx_desc(addr: address, length: length, cso: 0, cmd: command, status: 0, css: 0, vlan: 0),
            as: npa_dring_tx_desc.self)
        txTail = (txTail + 1) & (Self.ringSize - 1)
    }

    private func postReceiveBuffer() {
        let d = raw + Int(Self.rxRing + 0x20000) + Int(rxTail) * 16
        let buffer = Self.buffers + UInt64(rxTail) * 2048
        d.storeBytes(of: npa_dring_rx_desc(addr: buffer, length: 0, csum: 0, status: 0, errors: 0, vlan: 0), as: npa_dring_rx_desc.self)
        rxTail = (rxTail + 1) & (Self.ringSize - 1)
    }

    private func ring(vf: Int, _ register: UInt32, _ value: UInt32) {
        SharedWord.storeRelease(nic.vfs[vf].registers.base + Int(register), value)
    }
}
