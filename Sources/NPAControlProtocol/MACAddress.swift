/// A 48-bit Ethernet address, held in the low 48 bits of a UInt64 in wire order (first byte is
/// the most significant), so comparisons and hashing are one integer operation.
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let value: UInt64

    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(value: 0)

    public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 6)
        var v: UInt64 = 0
        for b in bytes { v = (v << 8) | UInt64(b) }
        self.init(value: v)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`); nil if malformed.
    public init?(_ text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for p in parts {
            guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
            v = (v << 8) | UInt64(b)
        }
        self.init(value: v)
    }

    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * $0)) } }
    public var isMulticast: Bool { (value >> 40) & 1 == 1 }
    public var isBroadcast: Bool { value == 0xFFFF_FFFF_FFFF }
    public var isUnicast: Bool { !isMulticast }

    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.value < b.value }
}
