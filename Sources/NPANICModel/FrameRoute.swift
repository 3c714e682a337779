import NPARingFormats

/// What the embedded switch reads from one frame's header, once per frame: the backpressure
/// check (`mustWait`) and the switch (`switchFrame`) both decide on it, so the MAC table is
/// probed and the flow hashed once, not once each, and a sender that rewrites its buffer between
/// the two cannot make them disagree. Built under the NIC's lock (`SoftNIC.route`), on the stack.
struct FrameRoute {
    let destination: UInt64
    let source: UInt64
    let vlan: UInt16
    /// Unicast only: the VF port that owns (destination, VLAN) in the MAC table, if one does.
    let port: Int?
    /// The flow hash (RSS), computed on first use: only a frame for a VF needs it.
    private var hash: UInt32?

    init(destination: UInt64, source: UInt64, vlan: UInt16, port: Int?) {
        self.destination = destination
        self.source = source
        self.vlan = vlan
        self.port = port
    }

    var isMulticast: Bool { (destination >> 40) & 1 == 1 }

    /// The frame's flow hash over its first 64 bytes (`frame` is the frame this route is of).
    @inline(__always)
    mutating func flowHash(_ frame: UnsafeRawPointer, length: Int) -> UInt32 {
        if let hash { return hash }
        let h = EthernetFrame.flowHash(frame, length: min(length, 64))
        hash = h
        return h
    }
}

extension SoftNIC {
    /// Reads a frame's header and looks up its unicast destination, once.
    @inline(__always)
    func route(_ frame: UnsafeRawPointer, length: Int) -> FrameRoute {
        let dst = EthernetFrame.mac(frame, at: 0)
        let vlan = EthernetFrame.vlanID(frame, length: length)
        let port = (dst >> 40) & 1 == 0 ? macTable.port(mac: dst, vlan: vlan) : nil
        return FrameRoute(destination: dst, source: EthernetFrame.mac(frame, at: 6), vlan: vlan, port: port)
    }
}
