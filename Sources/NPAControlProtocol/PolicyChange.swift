/// An administrator's change to one guest's policy on a running host (`npa policy set`): each
/// field nil is left as it is. A plain value: the admin client makes it, the host validates it
/// whole (VLAN IDs, unicast MACs, the guest's running state) before applying any of it.
///
/// Wire form: guest (string) | present (u8: 1 MACs, 2 VLANs, 4 promiscuous, 8 passthrough) |
/// [MACs: any (u8: 1 any, 0 a list) | count (u16) | MAC (u64) each] | [VLANs: count (u16) |
/// ID (u16) each] | [promiscuous (u8)] | [passthrough (u8)].
public struct PolicyChange: Equatable, Sendable {
    /// Which MACs the guest may use: any unicast MAC, or only these (the first is its default).
    public enum MACs: Equatable, Sendable {
        case any
        case only([MACAddress])
    }

    public var guest: String
    public var macs: MACs?
    /// The VLANs the guest may join (VLAN 0, untagged, is always allowed: added by the host).
    public var vlans: [UInt16]?
    public var allowPromiscuous: Bool?
    public var allowPassthrough: Bool?

    public init(guest: String, macs: MACs? = nil, vlans: [UInt16]? = nil, allowPromiscuous: Bool? = nil, allowPassthrough: Bool? = nil) {
        self.guest = guest
        self.macs = macs
        self.vlans = vlans
        self.allowPromiscuous = allowPromiscuous
        self.allowPassthrough = allowPassthrough
    }

    /// True if it changes nothing (no option given).
    public var isEmpty: Bool { macs == nil && vlans == nil && allowPromiscuous == nil && allowPassthrough == nil }

    /// The most MACs or VLAN IDs one change carries (a VLAN list of every ID fits).
    public static let maximumEntries = 4096

    public func encode(into w: inout ByteWriter) {
        w.string(guest)
        var present: UInt8 = 0
        if macs != nil { present |= 1 }
        if vlans != nil { present |= 2 }
        if allowPromiscuous != nil { present |= 4 }
        if allowPassthrough != nil { present |= 8 }
        w.u8(present)
        switch macs {
        case .none: break
        case .any?:
            w.u8(1)
            w.u16(0)
        case .only(let list)?:
            w.u8(0)
            w.u16(UInt16(min(list.count, Self.maximumEntries)))
            for mac in list.prefix(Self.maximumEntries) { w.u64(mac.value) }
        }
        if let vlans {
            w.u16(UInt16(min(vlans.count, Self.maximumEntries)))
            for vlan in vlans.prefix(Self.maximumEntries) { w.u16(vlan) }
        }
        if let allowPromiscuous { w.u8(allowPromiscuous ? 1 : 0) }
        if let allowPassthrough { w.u8(allowPassthrough ? 1 : 0) }
    }

    /// Parses what `encode(into:)` wrote; every count is checked before anything is read.
    public init(from r: inout ByteReader) throws {
        guest = try r.string()
        let present = try r.u8()
        guard present & ~0x0F == 0 else { throw ProtocolError("unknown policy fields 0x\(String(present, radix: 16))") }
        if present & 1 != 0 {
            let any = try r.u8()
            let count = Int(try r.u16())
            guard count <= Self.maximumEntries else { throw ProtocolError("\(count) MACs, at most \(Self.maximumEntries)") }
            var list: [MACAddress] = []
            for _ in 0..<count { list.append(MACAddress(value: try r.u64())) }
            macs = any == 1 ? .any : .only(list)
        }
        if present & 2 != 0 {
            let count = Int(try r.u16())
            guard count <= Self.maximumEntries else { throw ProtocolError("\(count) VLANs, at most \(Self.maximumEntries)") }
            var list: [UInt16] = []
            for _ in 0..<count { list.append(try r.u16()) }
            vlans = list
        }
        if present & 4 != 0 { allowPromiscuous = try r.u8() != 0 }
        if present & 8 != 0 { allowPassthrough = try r.u8() != 0 }
    }
}
