import CNPAPluginABI
import NPAControlProtocol
@testable import NPANICModel
import NPARingFormats
import NPASystem

/// A well-behaved VF driver for either model, writing descriptors straight into its guest's
/// memory: one TX and one RX queue of 64 entries. TX ring 0x10000 (npa-cq: completions right
/// after it), RX ring 0x20000 (completions after it), RX buffers from 0x40000, TX buffers from
/// 0x80000, 2 KiB each.
public final class VFGuestDriver {
    public let nic: SoftNIC
    public let vf: Int
    public let mac: MACAddress
    public let region: SharedMemory
    public let memory: GuestMemory
    let interrupt: EventNotifier
    static let size: UInt32 = 64
    static let txRing: UInt64 = 0x10000, rxRing: UInt64 = 0x20000
    static let rxBuffers: UInt64 = 0x40000, txBuffers: UInt64 = 0x80000
    var txTail: UInt32 = 0, txDone: UInt32 = 0, txCompNext: UInt32 = 0
    var rxNext: UInt32 = 0, rxTail: UInt32 = 0

    public init(nic: SoftNIC, vf: Int, mac: MACAddress) throws {
        self.nic = nic
        self.vf = vf
        self.mac = mac
        region = try SharedMemory(name: "fuzz-vf\(vf)", size: 1 << 20)
        memory = GuestMemory(base: region.base, size: region.size)
        interrupt = try EventNotifier()
        let cq = nic.model == .cq
        nic.grant(vf: vf, memory: memory)
        nic.setMAC(vf: vf, mac)
        try nic.initializeQueues(
            vf: vf, tx: [.init(ringGPA: Self.txRing, ringSize: Self.size, completionGPA: cq ? Self.txRing + 0x1000 : nil)],
            rx: [.init(ringGPA: Self.rxRing, ringSize: Self.size, completionGPA: cq ? Self.rxRing + 0x1000 : nil)], interrupt: interrupt)
        nic.enable(vf: vf)
        if cq {
            for _ in 0..<Self.size { postRx() }
        } else {
            for _ in 0..<(Self.size - 1) { postRx() }
        }
    }

    func register(_ offset: UInt32) -> UnsafeMutablePointer<UInt32> {
        (nic.vfs[vf].registers.base + Int(offset)).assumingMemoryBound(to: UInt32.self)
    }

    /// Posts the RX buffer of the next slot and moves the tail.
    private func postRx() {
        let slot = rxTail & (Self.size - 1)
        let d = Self.rxRing + UInt64(slot) * 16
        memory.storeU64(gpa: d, Self.rxBuffers + UInt64(slot) * 2048)
        if nic.model == .cq {
            memory.storeU32(gpa: d + 8, 2048 | UInt32(slot) << 16)  // capacity, request id
            memory.storeU32(gpa: d + 12, (rxTail / Self.size) & 1 == 0 ? 1 : 0)  // phase of this lap
            rxTail &+= 1
            register(NPA_CQ_REG_RX_SQ_TAIL(0)).pointee = rxTail
        } else {
            memory.storeU64(gpa: d + 8, 0)
            rxTail = (rxTail + 1) & (Self.size - 1)
            register(NPA_DRING_REG_RDT(0)).pointee = rxTail
        }
    }

    /// Queues one frame; false if the ring is full.
    @discardableResult
    public func send(_ frame: [UInt8]) -> Bool {
        reclaim()
        guard txTail &- txDone < Self.size - 1 else { return false }
        let slot = txTail & (Self.size - 1)
        let buffer = Self.txBuffers + UInt64(slot) * 2048
        frame.withUnsafeBytes {
            memory.pointer(gpa: buffer, length: UInt64($0.count))!.copyMemory(from: $0.baseAddress!, byteCount: $0.count)
        }
        let d = Self.txRing + UInt64(slot) * 16
        memory.storeU64(gpa: d, buffer)
        txTail &+= 1
        if nic.model == .cq {
            memory.storeU32(gpa: d + 8, UInt32(frame.count) | UInt32(slot) << 16)
            memory.storeU32(gpa: d + 12, ((txTail &- 1) / Self.size) & 1 == 0 ? 1 : 0)
            register(NPA_CQ_REG_TX_SQ_TAIL(0)).pointee = txTail
        } else {
            memory.storeU32(gpa: d + 8, UInt32(frame.count) | UInt32(NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS) << 24)
            memory.storeU32(gpa: d + 12, 0)
            register(NPA_DRING_REG_TDT(0)).pointee = txTail & (Self.size - 1)
        }
        return true
    }

    /// Takes back the TX descriptors the NIC finished.
    public func reclaim() {
        while txDone != txTail {
            if nic.model == .cq {
                let c = Self.txRing + 0x1000 + UInt64(txCompNext & (Self.size - 1)) * 16
                let phase: UInt32 = (txCompNext / Self.size) & 1 == 0 ? 1 : 0
                guard memory.loadU32(gpa: c + 4)! & 1 == phase else { return }
                txCompNext &+= 1
            } else {
                let d = Self.txRing + UInt64(txDone & (Self.size - 1)) * 16
                guard memory.loadU32(gpa: d + 12)! & NPA_DRING_TXD_STATUS_DD != 0 else { return }
            }
            txDone &+= 1
        }
    }

    /// Receives every completed frame and re-posts its buffer.
    public func receive(_ body: ([UInt8]) -> Void) {
        while true {
            if nic.model == .cq {
                let c = Self.rxRing + 0x1000 + UInt64(rxNext & (Self.size - 1)) * 16
                let phase: UInt32 = (rxNext / Self.size) & 1 == 0 ? 1 : 0
                let w1 = memory.loadU32(gpa: c + 4)!
                guard w1 & 1 == phase else { return }
                let w0 = memory.loadU32(gpa: c)!
                let slot = UInt64(w0 & 0xFFFF), length = Int(w0 >> 16)
                invariant(slot < UInt64(Self.size), "VF \(vf): RX completion for request \(slot)")
                if (w1 >> 8) & 0xFF == 0 {
                    body(
                        Array(
                            UnsafeRawBufferPointer(
                                start: memory.pointer(gpa: Self.rxBuffers + slot * 2048, length: UInt64(length))!, count: length)))
                }
                rxNext &+= 1
            } else {
                let d = Self.rxRing + UInt64(rxNext) * 16
                let status = memory.loadU32(gpa: d + 12)!
                guard status & NPA_DRING_RXD_STATUS_DD != 0 else { return }
                let length = Int(memory.loadU32(gpa: d + 8)! & 0xFFFF)
                if (status >> 8) & 0xFF == 0 {
                    body(
                        Array(
                            UnsafeRawBufferPointer(
                                start: memory.pointer(gpa: Self.rxBuffers + UInt64(rxNext) * 2048, length: UInt64(length))!, count: length))
                    )
                }
                memory.storeU32(gpa: d + 12, 0)
                rxNext = (rxNext + 1) & (Self.size - 1)
            }
            postRx()
        }
    }
}
