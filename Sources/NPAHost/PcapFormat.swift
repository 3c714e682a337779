/// The classic pcap file format (libpcap's savefile, as `tcpdump -w` writes it) with nanosecond
/// timestamps: magic 0xa1b23c4d, version 2.4, LINKTYPE_ETHERNET. Only the encoding, into caller
/// memory: `PacketCapture`'s writer does the I/O. Fields are written in this host's byte order,
/// which the magic announces (readers swap when it reads 0x4d3cb2a1).
enum PcapFormat {
    /// The magic number of a pcap file whose record timestamps are seconds and nanoseconds.
    static let nanosecondMagic: UInt32 = 0xa1b2_3c4d
    static let linkTypeEthernet: UInt32 = 1
    static let fileHeaderLength = 24
    static let recordHeaderLength = 16

    /// The 24-byte file header: magic, version 2.4, thiszone 0, sigfigs 0, snaplen, link type.
    static func fileHeader(snapLength: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v) { bytes += $0 } }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v) { bytes += $0 } }
        u32(nanosecondMagic)
        u16(2)
        u16(4)
        u32(0)
        u32(0)
        u32(UInt32(snapLength))
        u32(linkTypeEthernet)
        return bytes
    }

    /// Writes one record (its 16-byte header, then the captured bytes) at `destination`, which
    /// must hold `recordHeaderLength + frame.count` bytes. `nanoseconds`: wall-clock time since
    /// the epoch. Returns the bytes written.
    static func writeRecord(
        to destination: UnsafeMutableRawPointer, frame: UnsafeRawBufferPointer, originalLength: Int, nanoseconds: UInt64
    ) -> Int {
        destination.storeBytes(of: UInt32(truncatingIfNeeded: nanoseconds / 1_000_000_000), as: UInt32.self)
        destination.storeBytes(of: UInt32(nanoseconds % 1_000_000_000), toByteOffset: 4, as: UInt32.self)
        destination.storeBytes(of: UInt32(frame.count), toByteOffset: 8, as: UInt32.self)
        destination.storeBytes(of: UInt32(truncatingIfNeeded: originalLength), toByteOffset: 12, as: UInt32.self)
        if let base = frame.baseAddress { (destination + recordHeaderLength).copyMemory(from: base, byteCount: frame.count) }
        return recordHeaderLength + frame.count
    }
}
