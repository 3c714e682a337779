import NPARingFormats

/// The 12-byte virtio_net_hdr_v1 a TAP opened with IFF_VNET_HDR puts before every frame
/// (virtio 1.0 section 5.1.6, little endian): what the kernel asks of the device for a frame it
/// sends (complete a checksum, cut a GSO super-frame), and what the device tells the kernel
/// about a frame it receives (its checksums are good). Pure bytes; no system calls.
///
/// The kernel is one more sender the vNIC does not trust: `transmitOffload` validates the
/// request against the frame with the same codec the device uses, so a frame the host would
/// refuse is dropped (and counted) here instead.
struct VirtioNetHeader {
    static let size = 12
    static let needsChecksum: UInt8 = 1
    static let dataValid: UInt8 = 2
    static let gsoNone: UInt8 = 0
    static let gsoTCPv4: UInt8 = 1
    static let gsoTCPv6: UInt8 = 4
    static let gsoECN: UInt8 = 0x80

    var flags: UInt8
    var gsoType: UInt8
    var headerLength: Int
    var gsoSize: Int
    var checksumStart: Int
    var checksumOffset: Int

    init(_ p: UnsafeRawPointer) {
        func u16(_ offset: Int) -> Int { Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))) }
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = u16(2)
        gsoSize = u16(4)
        checksumStart = u16(6)
        checksumOffset = u16(8)
    }

    /// A header for a frame going to the kernel: no offload, "checksums good" if `dataValid`.
    static func write(dataValid: Bool, into p: UnsafeMutableRawPointer) {
        p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        if dataValid { p.storeBytes(of: Self.dataValid, as: UInt8.self) }
    }

    /// A header for a coalesced super-frame going to the kernel, as a GRO-ing driver hands one
    /// up: NEEDS_CSUM from the TCP header (the checksum field holds the pseudo-header sum), GSO
    /// TCPv4 or TCPv6 (with ECN when the first segment had CWR), gso_size the MSS, hdr_len
    /// every header, so the kernel can cut it again exactly if it forwards it.
    static func write(superFrame frame: TCPCoalescing.SuperFrame, into p: UnsafeMutableRawPointer) {
        func store16(_ value: Int, _ offset: Int) {
            p.storeBytes(of: UInt16(truncatingIfNeeded: value).littleEndian, toByteOffset: offset, as: UInt16.self)
        }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        p.storeBytes(of: needsChecksum, as: UInt8.self)
        let gso = (frame.isIPv6 ? gsoTCPv6 : gsoTCPv4) | (frame.congestionWindowReduced ? gsoECN : 0)
        p.storeBytes(of: gso, toByteOffset: 1, as: UInt8.self)
        store16(frame.headerLength, 2)
        store16(frame.mss, 4)
        store16(frame.tcpOffset, 6)
        store16(16, 8)
    }

    /// What the frame (`length` bytes at `frame`, after this header) asks of the device, or nil
    /// when the request is bogus: a GSO type other than TCP, a GSO frame without NEEDS_CSUM or
    /// whose TCP header is not at csum_start, a gso_size of 0 or one whose segments would not
    /// fit `maxSegmentFrame`, a super-frame the codec refuses, a checksum outside the frame.
    /// The header length is the frame's own (hdr_len is a hint in virtio; Linux's tun puts
    /// the linear part's length there).
    func transmitOffload(frame: UnsafeRawPointer, length: Int, maxSegmentFrame: Int) -> TransmitOffload? {
        let gso = gsoType & ~Self.gsoECN
        if gso == Self.gsoNone {
            guard flags & Self.needsChecksum != 0 else { return TransmitOffload.none }
            let field = checksumStart + checksumOffset
            guard checksumStart < length, field + 2 <= length else { return nil }
            return .checksum(start: checksumStart, field: field)
        }
        guard gso == Self.gsoTCPv4 || gso == Self.gsoTCPv6, flags & Self.needsChecksum != 0, checksumOffset == 16,
            gsoSize >= 1, checksumStart + 20 <= length
        else { return nil }
        let tcpHeader = Int(frame.load(fromByteOffset: checksumStart + 12, as: UInt8.self) >> 4) * 4
        let headers = checksumStart + tcpHeader
        guard tcpHeader >= 20, headers <= length, headers + gsoSize <= maxSegmentFrame else { return nil }
        // One segment's worth is an ordinary frame that needs its checksum.
        if length - headers <= gsoSize { return .checksum(start: checksumStart, field: checksumStart + 16) }
        guard
            let plan = try? TCPSegmentation(
                frame: UnsafeRawBufferPointer(start: frame, count: length), headerLength: headers, mss: gsoSize,
                maxSegmentFrame: maxSegmentFrame), plan.segmentCount > 1
        else { return nil }
        return .segmentation(headerLength: headers, mss: gsoSize)
    }
}
