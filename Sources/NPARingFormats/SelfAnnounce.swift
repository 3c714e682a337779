/// The one codec for a self-announcement: the gratuitous RARP frame a host sends on a guest's
/// behalf once the guest runs there after a migration, so that the physical network's switches
/// learn the guest's MAC on its new port. The frame is QEMU's (`announce_self_create` in
/// net/announce.c): broadcast destination, the guest's MAC as source, EtherType RARP (0x8035),
/// an Ethernet/IPv4 RARP "request reverse" (opcode 3, RFC 903) whose sender and target hardware
/// addresses are the MAC and whose protocol addresses are 0, padded with zeros to 60 bytes (the
/// Ethernet minimum without FCS). A guest in VLANs is announced once per VLAN: the same frame
/// with an 802.1Q tag after the source MAC (64 bytes), as a guest's own announcement does on each
/// of its VLAN interfaces; VLAN 0 (untagged traffic) gets the untagged frame.
///
/// Pure: writes into memory the caller owns, allocates nothing (`frame(...)` is the allocating
/// convenience for tests and the control path); `parse` reads a frame of any origin.
public enum SelfAnnounce {
    public static let etherTypeRARP: UInt16 = 0x8035
    /// RFC 903's "request reverse", the opcode QEMU sends (ARP_OP_REQUEST_REV).
    public static let opcodeRequestReverse: UInt16 = 3
    /// The untagged frame: 14-byte header, 28-byte RARP body, 18 bytes of zero padding.
    public static let frameLength = 60
    /// The frame with an 802.1Q tag: 4 bytes more (the padding stays, as a tagging switch would
    /// leave it).
    public static let taggedFrameLength = 64
    /// The RARP body: hardware type 1 (Ethernet), protocol 0x0800 (IPv4), lengths 6 and 4.
    static let hardwareTypeEthernet: UInt16 = 1
    static let rarpBodyLength = 28

    /// The length of the frame for `vlan` (nil or 0: untagged).
    public static func length(vlan: UInt16?) -> Int { isTagged(vlan) ? taggedFrameLength : frameLength }

    /// Writes the announcement of the 48-bit `mac` (first byte most significant, as
    /// `EthernetFrame.mac` reads it) in `vlan` to `p`, which holds at least
    /// `length(vlan:)` bytes. Returns the length written. VLAN IDs above 4095 are refused by
    /// precondition: the caller's VLAN set never holds one.
    @discardableResult
    public static func write(mac: UInt64, vlan: UInt16?, into p: UnsafeMutableRawPointer) -> Int {
        precondition((vlan ?? 0) < 4096, "VLAN \(vlan ?? 0) is not an 802.1Q ID")
        let length = length(vlan: vlan)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        func be16(_ v: UInt16, _ offset: Int) { p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt16.self) }
        EthernetFrame.storeMAC(0xFFFF_FFFF_FFFF, p, at: 0)
        EthernetFrame.storeMAC(mac, p, at: 6)
        var body = EthernetFrame.headerLength
        if isTagged(vlan), let vlan {
            be16(EthernetFrame.etherTypeVLAN, 12)
            be16(vlan, 14)  // priority 0, DEI 0
            body += EthernetFrame.vlanTagLength
        }
        be16(etherTypeRARP, body - 2)
        be16(hardwareTypeEthernet, body)
        be16(EthernetFrame.etherTypeIPv4, body + 2)
        p.storeBytes(of: 6, toByteOffset: body + 4, as: UInt8.self)
        p.storeBytes(of: 4, toByteOffset: body + 5, as: UInt8.self)
        be16(opcodeRequestReverse, body + 6)
        EthernetFrame.storeMAC(mac, p, at: body + 8)  // sender hardware address; its IPv4 address stays 0
        EthernetFrame.storeMAC(mac, p, at: body + 18)  // target hardware address; its IPv4 address stays 0
        return length
    }

    /// The announcement as bytes (allocates: for tests and the control path, not per frame).
    public static func frame(mac: UInt64, vlan: UInt16? = nil) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: taggedFrameLength) { buffer, count in
            count = write(mac: mac, vlan: vlan, into: UnsafeMutableRawPointer(buffer.baseAddress!))
        }
    }

    /// The MAC and VLAN (nil: untagged) a frame announces, or nil if it is not exactly a
    /// self-announcement in this form: every field, the padding included, is checked.
    public static func parse(_ frame: UnsafeRawBufferPointer) -> (mac: UInt64, vlan: UInt16?)? {
        guard frame.count >= frameLength, let p = frame.baseAddress else { return nil }
        var vlan: UInt16?
        if EthernetFrame.u16(p, at: 12) == EthernetFrame.etherTypeVLAN {
            guard frame.count >= taggedFrameLength else { return nil }
            vlan = EthernetFrame.u16(p, at: 14) & 0x0FFF
            guard vlan != 0 else { return nil }
        }
        guard frame.count == length(vlan: vlan) else { return nil }
        let mac = EthernetFrame.mac(p, at: 6)
        var expected = [UInt8](repeating: 0, count: taggedFrameLength)
        let written = expected.withUnsafeMutableBytes { write(mac: mac, vlan: vlan, into: $0.baseAddress!) }
        // The tag's priority and DEI bits (the top nibble of byte 14) are the sender's to
        // choose; everything else is fixed.
        for i in 0..<written {
            let mask: UInt8 = vlan != nil && i == 14 ? 0x0F : 0xFF
            guard frame[i] & mask == expected[i] & mask else { return nil }
        }
        return (mac, vlan)
    }

    private static func isTagged(_ vlan: UInt16?) -> Bool { (vlan ?? 0) != 0 }
}
