import NPAControlProtocol

/// The frames the traffic workloads send: Ethernet + IPv4 + UDP, with a flow id and a sequence
/// number in the payload so the receiver can prove delivery (exactly once, in order per flow).
/// Each flow has its own UDP source port, so RSS keeps a flow on one RX queue.
public enum TrafficFrame {
    public static let magic: UInt32 = 0x4E50_4157  // "NPAW"
    public static let minimumLength = 64
    public static let maximumLength = 9018
    static let payloadOffset = 14 + 20 + 8
    /// The flow id of a receiver's acknowledgement in a windowed stream; its sequence number is
    /// how many distinct frames the receiver has verified so far.
    public static let acknowledgementFlow = UInt32.max

    /// Writes a frame of `length` bytes into `buffer`; returns the length.
    @inline(__always)
    public static func write(
        into buffer: UnsafeMutableRawBufferPointer, destination: MACAddress, source: MACAddress,
        flow: UInt32, sequence: UInt64, length: Int
    ) -> Int {
        let p = buffer.baseAddress!
        func be16(_ v: UInt16, _ off: Int) { p.storeBytes(of: v.bigEndian, toByteOffset: off, as: UInt16.self) }
        func be32(_ v: UInt32, _ off: Int) { p.storeBytes(of: v.bigEndian, toByteOffset: off, as: UInt32.self) }
        // MACs as one 4-byte and one 2-byte store each (this runs once per frame sent).
        be32(UInt32(truncatingIfNeeded: destination.value >> 16), 0)
        be16(UInt16(truncatingIfNeeded: destination.value), 4)
        be32(UInt32(truncatingIfNeeded: source.value >> 16), 6)
        be16(UInt16(truncatingIfNeeded: source.value), 10)
        be16(0x0800, 12)
        // IPv4: 10.0.x.y addresses derived from the MACs, protocol UDP.
        let ipLength = UInt16(length - 14)
        be16(0x4500, 14)
        be16(ipLength, 16)
        // Identification: the sequence's low bits; flags and fragment offset 0 (a whole datagram:
        // tcpdump and tshark decode the UDP inside).
        be32(UInt32(truncatingIfNeeded: sequence) << 16, 18)
        be16(0x4011, 22)  // TTL 64, UDP
        be16(0, 24)
        be32(0x0A00_0000 | UInt32(truncatingIfNeeded: source.value & 0xFFFF), 26)
        be32(0x0A00_0000 | UInt32(truncatingIfNeeded: destination.value & 0xFFFF), 30)
        var sum: UInt32 = 0
        for off in stride(from: 14, to: 34, by: 2) { sum &+= UInt32(UInt16(bigEndian: p.load(fromByteOffset: off, as: UInt16.self))) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) &+ (sum >> 16) }
        be16(~UInt16(sum), 24)
        // UDP: source port names the flow.
        be16(UInt16(truncatingIfNeeded: 10000 &+ flow), 34)
        be16(9, 36)
        be16(UInt16(length - 34), 38)
        be16(0, 40)
        p.storeBytes(of: magic.littleEndian, toByteOffset: payloadOffset, as: UInt32.self)
        p.storeBytes(of: flow.littleEndian, toByteOffset: payloadOffset + 4, as: UInt32.self)
        p.storeBytes(of: sequence.littleEndian, toByteOffset: payloadOffset + 8, as: UInt64.self)
        p.storeBytes(of: UInt32(length).littleEndian, toByteOffset: payloadOffset + 16, as: UInt32.self)
        return length
    }

    /// Reads (flow, sequence) from a workload frame; nil if it is not one or its length is wrong.
    @inline(__always)
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> (flow: UInt32, sequence: UInt64)? {
        guard bytes.count >= minimumLength, let p = bytes.baseAddress else { return nil }
        guard UInt32(littleEndian: p.loadUnaligned(fromByteOffset: payloadOffset, as: UInt32.self)) == magic else { return nil }
        let length = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: payloadOffset + 16, as: UInt32.self))
        guard Int(length) == bytes.count else { return nil }
        return (
            UInt32(littleEndian: p.loadUnaligned(fromByteOffset: payloadOffset + 4, as: UInt32.self)),
            UInt64(littleEndian: p.loadUnaligned(fromByteOffset: payloadOffset + 8, as: UInt64.self))
        )
    }

    /// The source MAC of a frame.
    public static func source(_ bytes: UnsafeRawBufferPointer) -> MACAddress {
        MACAddress(bytes: bytes[6..<12])
    }
}
