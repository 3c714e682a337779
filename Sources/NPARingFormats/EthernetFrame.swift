/// Reading the few Ethernet/IP fields switching and RSS need, from host-private bytes (frames
/// are copied out of guest memory before they are parsed, so the guest cannot change them
/// between the check and the use).
public enum EthernetFrame {
    public static let headerLength = 14
    public static let vlanTagLength = 4
    public static let etherTypeVLAN: UInt16 = 0x8100
    public static let etherTypeIPv4: UInt16 = 0x0800
    public static let etherTypeIPv6: UInt16 = 0x86DD

    /// The 6-byte MAC at `offset` as a 48-bit number (first byte most significant): one 4- and
    /// one 2-byte load, since this runs several times per switched frame.
    @inlinable @inline(__always)
    public static func mac(_ p: UnsafeRawPointer, at offset: Int) -> UInt64 {
        UInt64(u32(p, at: offset)) << 16 | UInt64(u16(p, at: offset + 4))
    }

    @inlinable
    public static func storeMAC(_ value: UInt64, _ p: UnsafeMutableRawPointer, at offset: Int) {
        for i in 0..<6 { p.storeBytes(of: UInt8(truncatingIfNeeded: value >> (40 - 8 * i)), toByteOffset: offset + i, as: UInt8.self) }
    }

    /// Big-endian (network order) fields at any alignment.
    @inlinable @inline(__always)
    public static func u16(_ p: UnsafeRawPointer, at offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable @inline(__always)
    public static func u32(_ p: UnsafeRawPointer, at offset: Int) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// The 802.1Q VLAN ID of a frame of at least 14 bytes, 0 if untagged.
    @inlinable @inline(__always)
    public static func vlanID(_ p: UnsafeRawPointer, length: Int) -> UInt16 {
        guard length >= headerLength + vlanTagLength, u16(p, at: 12) == etherTypeVLAN else { return 0 }
        return u16(p, at: 14) & 0x0FFF
    }

    /// An RSS-style flow hash: the IPv4 5-tuple (addresses, protocol, ports) when present, else
    /// the MAC pair and EtherType. Same flow → same hash → same RX queue, so order is kept.
    @inlinable
    public static func flowHash(_ p: UnsafeRawPointer, length: Int) -> UInt32 {
        var l3 = headerLength
        var etherType = length >= headerLength ? u16(p, at: 12) : 0
        if etherType == etherTypeVLAN, length >= headerLength + vlanTagLength {
            etherType = u16(p, at: 16)
            l3 += vlanTagLength
        }
        var h: UInt64
        if etherType == etherTypeIPv4, length >= l3 + 20 {
            let ihl = Int(p.load(fromByteOffset: l3, as: UInt8.self) & 0x0F) * 4
            let proto = UInt64(p.load(fromByteOffset: l3 + 9, as: UInt8.self))
            h = UInt64(u32(p, at: l3 + 12)) << 32 | UInt64(u32(p, at: l3 + 16))
            h ^= proto &* 0x9E37_79B9_7F4A_7C15
            if (proto == 6 || proto == 17), ihl >= 20, length >= l3 + ihl + 4 {
                h ^= UInt64(u32(p, at: l3 + ihl)) &* 0xC2B2_AE3D_27D4_EB4F
            }
        } else {
            h = length >= headerLength ? mac(p, at: 0) ^ (mac(p, at: 6) << 13) ^ UInt64(etherType) : 0
        }
        // splitmix64 finaliser: cheap and spreads nearby tuples across queues.
        h ^= h >> 30
        h = h &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 27
        h = h &* 0x94D0_49BB_1331_11EB
        h ^= h >> 31
        return UInt32(truncatingIfNeeded: h)
    }
}
