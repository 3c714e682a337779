import CNPAPluginABI
import NPANICModel
import NPARingFormats

/// The hostile plugin's offload requests, in the evil VF's model's own format: TSO and checksum
/// requests (npa-dring: context descriptors, CMD_TSE, CMD_IC with css/cso; npa-cq: the TSO/CSUM
/// flags with l4_offset and meta) over IPv4 frames whose headers the input shapes — mostly
/// plausible, so the NIC's segmentation really runs, sometimes anything. Frames are built in the
/// evil guest's last 128 KiB (four 32 KiB slots), apart from the other ops' frame and buffer areas.
extension VFFuzz {
    static let offloadArea: UInt64 = 0xE0000
    static let offloadSlot: UInt64 = 0x8000

    func writeOffloadRequests(_ input: inout FuzzInput, ring: UInt64, size: UInt32, cursor: inout UInt32) {
        let cq = nic.model == .cq
        let memory = evilMemory
        let count = 1 + Int(input.u8() % 4)
        for i in 0..<count {
            let gpa = Self.offloadArea + UInt64(i) * Self.offloadSlot
            let shape = input.u8()
            let length = 54 + Int(input.u16()) % (Int(Self.offloadSlot) - 54)
            let (l4, headers, checksumField) = writeIPv4Frame(&input, at: gpa, length: length, shape: shape)
            let kind = input.u8()
            let tso = kind & 1 != 0
            // Mostly the frame's real header length (TSO) or L4 start (checksum), a sane MSS or
            // the real checksum field; otherwise whatever came.
            let headerLength = kind & 0x80 != 0 ? Int(input.u8()) : tso ? headers : l4
            let value = input.u16()
            let meta = kind & 0x40 != 0 ? value : tso ? 1 + value % 9000 : UInt16(checksumField)
            func slot(_ k: UInt32) -> UInt64 { ring &+ UInt64(k & (size &- 1)) * 16 }
            if cq {
                let phase: UInt32 = (cursor / size) & 1 == 0 ? 1 : 0
                let flags = phase | (kind & 2 != 0 ? NPA_CQ_SQ_TSO | NPA_CQ_SQ_CSUM : tso ? NPA_CQ_SQ_TSO : NPA_CQ_SQ_CSUM)
                _ = memory.storeU64(gpa: slot(cursor), gpa)
                _ = memory.storeU32(gpa: slot(cursor) + 8, UInt32(length) | UInt32(i) << 16)
                _ = memory.storeU32(
                    gpa: slot(cursor) + 12, flags | UInt32(UInt8(truncatingIfNeeded: headerLength)) << 8 | UInt32(meta) << 16)
            } else {
                if tso && kind & 2 != 0 {  // a context descriptor first (else the queue's last context applies)
                    _ = memory.storeU64(gpa: slot(cursor), UInt64(meta) | UInt64(UInt16(truncatingIfNeeded: headerLength)) << 16)
                    _ = memory.storeU32(gpa: slot(cursor) + 8, NPA_DRING_TXD_CMD_DEXT << 24)
                    _ = memory.storeU32(gpa: slot(cursor) + 12, 0)
                    cursor &+= 1
                }
                let command = NPA_DRING_TXD_CMD_EOP | NPA_DRING_TXD_CMD_RS | (tso ? NPA_DRING_TXD_CMD_TSE : NPA_DRING_TXD_CMD_IC)
                _ = memory.storeU64(gpa: slot(cursor), gpa)
                _ = memory.storeU32(gpa: slot(cursor) + 8, UInt32(length) | UInt32(UInt8(truncatingIfNeeded: meta)) << 16 | command << 24)
                _ = memory.storeU32(gpa: slot(cursor) + 12, UInt32(UInt8(truncatingIfNeeded: headerLength)) << 8)
            }
            cursor &+= 1
        }
    }

    /// An Ethernet + IPv4 + TCP (or, by `shape`, UDP or other) frame of `length` bytes at `gpa`;
    /// returns where its L4 header starts, the length of its headers as written (Ethernet +
    /// IPv4 with IHL + L4) and where its L4 checksum field is.
    private func writeIPv4Frame(_ input: inout FuzzInput, at gpa: UInt64, length: Int, shape: UInt8) -> (Int, Int, Int) {
        guard let p = evilMemory.pointer(gpa: gpa, length: UInt64(length)) else { return (34, 54, 50) }
        let destination: UInt64 = [good2.mac.value, good1.mac.value, Self.evilMAC.value, 0xFFFF_FFFF_FFFF][Int(shape & 3)]
        EthernetFrame.storeMAC(destination, p, at: 0)
        EthernetFrame.storeMAC(shape & 0x40 != 0 ? good1.mac.value : Self.evilMAC.value, p, at: 6)
        p.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 12, as: UInt16.self)
        let ihl = 5 + Int((shape >> 2) & 3)
        let l4 = 14 + ihl * 4
        let proto: UInt8 = shape & 0x10 != 0 ? 17 : (shape & 0x20 != 0 ? input.u8() : 6)
        let dataOffset = 5 + Int(input.u8() % 11)
        p.storeBytes(of: UInt8(0x40 | ihl), toByteOffset: 14, as: UInt8.self)
        p.storeBytes(of: UInt16(truncatingIfNeeded: length - 14).bigEndian, toByteOffset: 16, as: UInt16.self)
        // Flags and fragment offset: DF (a whole datagram), or anything (mostly a fragment).
        p.storeBytes(of: shape & 0x80 != 0 ? input.u16() : UInt16(0x4000).bigEndian, toByteOffset: 20, as: UInt16.self)
        p.storeBytes(of: proto, toByteOffset: 23, as: UInt8.self)
        guard length >= l4 + 20 else { return (l4, l4 + 20, l4 + 16) }
        p.storeBytes(of: input.u32(), toByteOffset: l4 + 4, as: UInt32.self)  // sequence
        p.storeBytes(of: UInt8(dataOffset << 4), toByteOffset: l4 + 12, as: UInt8.self)
        p.storeBytes(of: input.u8(), toByteOffset: l4 + 13, as: UInt8.self)  // TCP flags
        return proto == 17 ? (l4, l4 + 8, l4 + 6) : (l4, l4 + dataOffset * 4, l4 + 16)
    }
}
