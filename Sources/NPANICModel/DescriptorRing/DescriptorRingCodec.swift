import CNPAPluginABI
import NPASystem

/// npa-dring's descriptor formats, read and written only here: `npa_dring_tx_desc` and
/// `npa_dring_rx_desc` from npa_nic_models.h. A descriptor is read once, as the C struct, into a
/// local that the engine then validates (the guest may rewrite the slot meanwhile; no field is
/// fetched twice). Write-back stores only the fields the NIC owns, the status word last with
/// release, at the offsets below, which a test checks against the C structs.
enum DescriptorRingCodec {
    /// Bytes per descriptor, TX and RX alike.
    static var descriptorSize: Int { 16 }
    /// `npa_dring_tx_desc.status`.
    static var transmitStatusOffset: Int { 12 }
    /// `npa_dring_rx_desc.length` (u16) followed by `csum` (u16): written as one u32.
    static var receiveLengthOffset: Int { 8 }
    /// `npa_dring_rx_desc.status`, `errors`, `vlan`: one u32, published last.
    static var receiveStatusOffset: Int { 12 }

    /// Descriptor `index` of a ring that starts at `ring`.
    @inline(__always)
    static func slot(_ ring: UnsafeMutableRawPointer, _ index: UInt32) -> UnsafeMutableRawPointer {
        ring + Int(index) * descriptorSize
    }

    /// A TX descriptor as the guest wrote it, in host byte order.
    @inline(__always)
    static func readTransmit(_ d: UnsafeRawPointer) -> (address: UInt64, length: Int) {
        let desc = d.load(as: npa_dring_tx_desc.self)
        return (UInt64(littleEndian: desc.addr), Int(UInt16(littleEndian: desc.length)))
    }

    /// TX write-back: DD (and ERR if refused), after everything the NIC did with the frame, so
    /// the driver sees DD only when the slot is finished.
    @inline(__always)
    static func writeBackTransmit(_ d: UnsafeMutableRawPointer, refused: Bool) {
        var status = UInt8(NPA_DRING_TXD_STATUS_DD)
        if refused { status |= UInt8(NPA_DRING_TXD_STATUS_ERR) }
        MemoryFence.release()
        d.storeBytes(of: status, toByteOffset: transmitStatusOffset, as: UInt8.self)
    }

    /// The buffer address of an RX descriptor posted in read format.
    @inline(__always)
    static func readReceiveBuffer(_ d: UnsafeRawPointer) -> UInt64 {
        UInt64(littleEndian: d.load(as: npa_dring_rx_desc.self).addr)
    }

    /// RX write-back: the frame's length, then DD | EOP with the error bit, published with
    /// release so the driver reads the length only after it sees DD.
    @inline(__always)
    static func writeBackReceive(_ d: UnsafeMutableRawPointer, length: Int, error: Bool) {
        d.storeBytes(of: UInt32(length).littleEndian, toByteOffset: receiveLengthOffset, as: UInt32.self)
        let status = NPA_DRING_RXD_STATUS_DD | NPA_DRING_RXD_STATUS_EOP
        SharedWord.storeRelease(d + receiveStatusOffset, (status | (error ? 1 : 0) << 8).littleEndian)
    }
}
