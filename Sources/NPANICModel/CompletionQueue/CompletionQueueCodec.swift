import CNPAPluginABI
import NPARingFormats
import NPASystem

/// npa-cq's entry formats, read and written only here: `npa_cq_sq_entry` and `npa_cq_cq_entry`
/// from npa_nic_models.h. A submission entry is read once, as the C struct, into a local that
/// the engine then validates (no field is fetched twice). A completion is written field by
/// field, its flags/status word last with release, at the offsets below, which a test checks
/// against the C structs.
enum CompletionQueueCodec {
    /// Bytes per entry, submission and completion alike.
    static var entrySize: Int { 16 }
    /// `npa_cq_cq_entry.req_id`, `length`, `hash`.
    static var completionRequestIDOffset: Int { 0 }
    static var completionLengthOffset: Int { 2 }
    static var completionHashOffset: Int { 8 }
    /// `npa_cq_cq_entry.flags`, `status`, `vlan`: one u32, published last.
    static var completionFlagsOffset: Int { 4 }

    /// Entry `index` (free running; masked here) of a queue of `size` entries at `base`.
    @inline(__always)
    static func slot(_ base: UnsafeMutableRawPointer, _ index: UInt32, size: UInt32) -> UnsafeMutableRawPointer {
        base + Int(index & (size &- 1)) * entrySize
    }

    /// A submission entry as the guest wrote it, in host byte order. `length` is the frame's
    /// length (TX) or the buffer's capacity (RX). `offload` is what a TX entry asks for (RX
    /// ignores it): NPA_CQ_SQ_TSO or NPA_CQ_SQ_CSUM with l4_offset and meta; both at once is a
    /// request no frame satisfies (segmentation with a zero header), refused like any bad one.
    @inline(__always)
    static func readSubmission(_ e: UnsafeRawPointer) -> (
        address: UInt64, length: Int, requestID: UInt16, phase: UInt8, offload: TransmitOffload
    ) {
        let entry = e.load(as: npa_cq_sq_entry.self)
        let start = Int(entry.l4_offset), meta = Int(UInt16(littleEndian: entry.meta))
        let offload: TransmitOffload
        switch UInt32(entry.flags) & (NPA_CQ_SQ_TSO | NPA_CQ_SQ_CSUM) {
        case 0: offload = .none
        case NPA_CQ_SQ_TSO: offload = .segmentation(headerLength: start, mss: meta)
        case NPA_CQ_SQ_CSUM: offload = .checksum(start: start, field: meta)
        default: offload = .segmentation(headerLength: 0, mss: 0)
        }
        return (
            UInt64(littleEndian: entry.addr), Int(UInt16(littleEndian: entry.length)), UInt16(littleEndian: entry.req_id),
            entry.flags & UInt8(NPA_CQ_FLAG_PHASE), offload
        )
    }

    /// Writes one completion; the phase (with status) is published last, with release, so the
    /// driver reads the other fields only after it sees the entry is of its lap.
    /// `checksumValid`: the NIC vouches for the frame's checksums (NPA_CQ_FLAG_CSUM_OK).
    @inline(__always)
    static func writeCompletion(
        _ c: UnsafeMutableRawPointer, requestID: UInt16, length: UInt16, status: UInt8, hash: UInt32, phase: UInt8,
        checksumValid: Bool = false
    ) {
        c.storeBytes(of: requestID.littleEndian, toByteOffset: completionRequestIDOffset, as: UInt16.self)
        c.storeBytes(of: length.littleEndian, toByteOffset: completionLengthOffset, as: UInt16.self)
        c.storeBytes(of: hash.littleEndian, toByteOffset: completionHashOffset, as: UInt32.self)
        // flags (phase, CSUM_OK) | status << 8 | vlan << 16
        let flags = UInt32(phase) | (checksumValid && status == 0 ? NPA_CQ_FLAG_CSUM_OK : 0)
        SharedWord.storeRelease(c + completionFlagsOffset, (flags | UInt32(status) << 8).littleEndian)
    }
}
