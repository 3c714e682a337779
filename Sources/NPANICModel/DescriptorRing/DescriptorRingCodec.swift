import CNPAPluginABI
import NPARingFormats
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

    /// One TX slot as the guest wrote it, in host byte order: a frame, or a context descriptor.
    struct TransmitSlot {
        let address: UInt64
        let length: Int
        /// A frame: the offload it asks for (CMD_TSE: segmentation with the queue's context;
        /// CMD_IC: a checksum at cso over css...end). A context descriptor: the context it sets.
        let offload: TransmitOffload
        /// CMD_DEXT: the slot carries no frame; `offload` is the queue's new TSO context.
        let isContext: Bool
    }

    /// A TX slot as the guest wrote it, read once as 16 bytes (a context descriptor is the same
    /// bytes seen through `npa_dring_tx_context_desc`). `context` is the queue's TSO context,
    /// which a CMD_TSE frame uses (TSE wins over IC, which segmentation implies).
    @inline(__always)
    static func readTransmit(_ d: UnsafeRawPointer, context: (headerLength: Int, mss: Int) = (0, 0)) -> TransmitSlot {
        let desc = d.load(as: npa_dring_tx_desc.self)
        let address = UInt64(littleEndian: desc.addr), length = Int(UInt16(littleEndian: desc.length))
        if desc.cmd & UInt8(NPA_DRING_TXD_CMD_DEXT) != 0 {
            let c = withUnsafeBytes(of: desc) { $0.load(as: npa_dring_tx_context_desc.self) }
            let offload = TransmitOffload.segmentation(
                headerLength: Int(UInt16(littleEndian: c.hlen)), mss: Int(UInt16(littleEndian: c.mss)))
            return TransmitSlot(address: 0, length: 0, offload: offload, isContext: true)
        }
        var offload = TransmitOffload.none
        if desc.cmd & UInt8(NPA_DRING_TXD_CMD_TSE) != 0 {
            offload = .segmentation(headerLength: context.headerLength, mss: context.mss)
        } else if desc.cmd & UInt8(NPA_DRING_TXD_CMD_IC) != 0 {
            offload = .checksum(start: Int(desc.css), field: Int(desc.cso))
        }
        return TransmitSlot(address: address, length: length, offload: offload, isContext: false)
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

    /// RX write-back: the frame's length, then DD | EOP with the error bit (and L4CS | IPCS
    /// when the NIC vouches for the frame's checksums), published with release so the driver
    /// reads the length only after it sees DD.
    @inline(__always)
    static func writeBackReceive(_ d: UnsafeMutableRawPointer, length: Int, error: Bool, checksumValid: Bool = false) {
        d.storeBytes(of: UInt32(length).littleEndian, toByteOffset: receiveLengthOffset, as: UInt32.self)
        var status = NPA_DRING_RXD_STATUS_DD | NPA_DRING_RXD_STATUS_EOP
        if checksumValid && !error { status |= NPA_DRING_RXD_STATUS_L4CS | NPA_DRING_RXD_STATUS_IPCS }
        SharedWord.storeRelease(d + receiveStatusOffset, (status | (error ? 1 : 0) << 8).littleEndian)
    }
}
