/// The one codec for TCP segmentation offload (TSO) and checksum completion, used wherever a
/// device does that work: vmxnet3 emulation on the emulated path, the NIC model on passthrough,
/// the shell in software when its plugin cannot. Reads a host-private copy of the frame (the
/// guest cannot change it between check and use) and writes into buffers the caller owns; no
/// allocation. Every request is validated against the frame: nothing a guest says is trusted.
public struct TCPSegmentation: Sendable {
    /// Why a segmentation request was refused; the caller counts it and drops the frame.
    public enum Refusal: Error, Equatable, Sendable {
        /// Not Ethernet + IPv4/IPv6 + TCP (IPv4 fragments and IPv6 extension headers included).
        case notTCP
        /// The header length the sender gave is not the headers' length in the frame.
        case headerLengthMismatch
        /// MSS 0, or a segment that would not fit the largest frame the path takes.
        case badMSS
        /// More than `maximumSegments` segments.
        case tooManySegments
        /// The frame ends inside its headers.
        case truncated
    }

    /// vmxnet3 and Linux both bound a TSO request (24 descriptors, 64 KiB); 64 segments of at
    /// least 1 KiB cover a 64 KiB super-frame, and keep a hostile MSS of 1 from turning one
    /// frame into 65 000.
    public static let maximumSegments = 64

    public let segmentCount: Int
    public let headerLength: Int
    public let mss: Int
    /// Where the IP header starts (after Ethernet and an optional 802.1Q tag) and the TCP one.
    let ipOffset: Int
    let tcpOffset: Int
    let isIPv6: Bool
    /// TCP payload bytes of the super-frame.
    public let payloadLength: Int

    /// Plans the segmentation of `frame` (which the caller keeps unchanged until the segments
    /// are written), or says why it may not be done.
    public init(frame: UnsafeRawBufferPointer, headerLength: Int, mss: Int, maxSegmentFrame: Int) throws(Refusal) {
        guard let l = Self.locateTCP(frame) else { throw Self.refusal(frame) }
        let tcpHeader = Int(frame[l.tcp + 12] >> 4) * 4
        guard tcpHeader >= 20 else { throw .notTCP }
        guard l.tcp + tcpHeader <= frame.count else { throw .truncated }
        guard headerLength == l.tcp + tcpHeader else { throw .headerLengthMismatch }
        guard mss >= 1, headerLength + mss <= maxSegmentFrame else { throw .badMSS }
        let payload = frame.count - headerLength
        let count = max(1, (payload + mss - 1) / mss)
        guard count <= Self.maximumSegments else { throw .tooManySegments }
        self.segmentCount = count
        self.headerLength = headerLength
        self.mss = mss
        self.ipOffset = l.ip
        self.tcpOffset = l.tcp
        self.isIPv6 = l.isIPv6
        self.payloadLength = payload
    }

    /// Bytes segment `index` will have.
    @inlinable
    public func segmentLength(_ index: Int) -> Int { headerLength + min(mss, payloadLength - index * mss) }

    /// Writes segment `index` (a whole frame) to `out`, which has room for `segmentLength`, and
    /// returns its length: the headers with IP length, IPv4 id and header checksum, TCP
    /// sequence number, flags and checksum rewritten for this slice of the payload.
    public func writeSegment(_ index: Int, from frame: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int {
        precondition(index >= 0 && index < segmentCount)
        let base = frame.baseAddress!
        let slice = min(mss, payloadLength - index * mss)
        out.copyMemory(from: base, byteCount: headerLength)
        (out + headerLength).copyMemory(from: base + headerLength + index * mss, byteCount: slice)
        let tcpLength = headerLength - tcpOffset + slice
        var pseudo: UInt64
        if isIPv6 {
            Self.store16(UInt16(truncatingIfNeeded: tcpLength), out, ipOffset + 4)
            pseudo = InternetChecksum.accumulate(out + ipOffset + 8, count: 32)
        } else {
            Self.store16(UInt16(truncatingIfNeeded: tcpOffset - ipOffset + tcpLength), out, ipOffset + 2)
            let id = EthernetFrame.u16(out, at: ipOffset + 4) &+ UInt16(truncatingIfNeeded: index)
            Self.store16(id, out, ipOffset + 4)
            Self.store16(0, out, ipOffset + 10)
            let ipHeader = tcpOffset - ipOffset
            Self.store16(~InternetChecksum.fold(InternetChecksum.accumulate(out + ipOffset, count: ipHeader)), out, ipOffset + 10)
            pseudo = InternetChecksum.accumulate(out + ipOffset + 12, count: 8)
        }
        pseudo &+= 6 &+ UInt64(tcpLength)
        let sequence = EthernetFrame.u32(out, at: tcpOffset + 4) &+ UInt32(truncatingIfNeeded: index * mss)
        out.storeBytes(of: sequence.bigEndian, toByteOffset: tcpOffset + 4, as: UInt32.self)
        var flags = out.load(fromByteOffset: tcpOffset + 13, as: UInt8.self)
        if index != segmentCount - 1 { flags &= ~(0x01 | 0x08) }  // FIN and PSH end the stream
        if index != 0 { flags &= ~0x80 }  // CWR answers once
        out.storeBytes(of: flags, toByteOffset: tcpOffset + 13, as: UInt8.self)
        Self.store16(0, out, tcpOffset + 16)
        let sum = InternetChecksum.accumulate(out + tcpOffset, count: tcpLength, into: pseudo)
        Self.store16(~InternetChecksum.fold(sum), out, tcpOffset + 16)
        return headerLength + slice
    }

    /// Completes a CHECKSUM_PARTIAL frame in place: sums `[start, end)` (the field at `field`
    /// holds the pseudo-header seed) and stores the complement, 0xFFFF for 0 as Linux does (a
    /// UDP checksum of 0 means "none"). False, and the frame untouched, when the offsets do not
    /// lie in the frame.
    public static func completeChecksum(in frame: UnsafeMutableRawBufferPointer, start: Int, field: Int) -> Bool {
        guard start >= 0, field >= start, field + 2 <= frame.count, let base = frame.baseAddress else { return false }
        let folded = ~InternetChecksum.fold(InternetChecksum.accumulate(base + start, count: frame.count - start))
        store16(folded == 0 ? 0xFFFF : folded, base, field)
        return true
    }

    /// Whether an IPv4 (header checksum included) or IPv6 frame's TCP or UDP checksum is right;
    /// false for anything else. Bytes past the IP length (Ethernet padding) are not summed.
    public static func tcpOrUDPChecksumIsValid(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard let l = locateL4(frame), l.proto == 6 || l.proto == 17 else { return false }
        let base = frame.baseAddress!
        let l4Length: Int
        var sum: UInt64
        if l.isIPv6 {
            l4Length = Int(EthernetFrame.u16(base, at: l.ip + 4))
            sum = InternetChecksum.accumulate(base + l.ip + 8, count: 32)
        } else {
            let ipHeader = l.l4 - l.ip
            guard InternetChecksum.fold(InternetChecksum.accumulate(base + l.ip, count: ipHeader)) == 0xFFFF else { return false }
            l4Length = Int(EthernetFrame.u16(base, at: l.ip + 2)) - ipHeader
            sum = InternetChecksum.accumulate(base + l.ip + 12, count: 8)
        }
        guard l4Length >= (l.proto == 6 ? 20 : 8), l.l4 + l4Length <= frame.count else { return false }
        if l.proto == 17 && !l.isIPv6 && EthernetFrame.u16(base, at: l.l4 + 6) == 0 { return true }
        sum &+= UInt64(l.proto) &+ UInt64(l4Length)
        return InternetChecksum.fold(InternetChecksum.accumulate(base + l.l4, count: l4Length, into: sum)) == 0xFFFF
    }

    // MARK: - Parsing

    /// IP and L4 offsets of an unfragmented IPv4 (any options) or IPv6 (no extension headers)
    /// frame, with its L4 protocol; nil if the headers are not all there.
    static func locateL4(_ frame: UnsafeRawBufferPointer) -> (ip: Int, l4: Int, proto: UInt8, isIPv6: Bool)? {
        guard frame.count >= EthernetFrame.headerLength, let base = frame.baseAddress else { return nil }
        var ip = EthernetFrame.headerLength
        var etherType = EthernetFrame.u16(base, at: 12)
        if etherType == EthernetFrame.etherTypeVLAN {
            guard frame.count >= ip + EthernetFrame.vlanTagLength else { return nil }
            etherType = EthernetFrame.u16(base, at: 16)
            ip += EthernetFrame.vlanTagLength
        }
        if etherType == EthernetFrame.etherTypeIPv4 {
            guard frame.count >= ip + 20, frame[ip] >> 4 == 4 else { return nil }
            let header = Int(frame[ip] & 0x0F) * 4
            guard header >= 20, frame.count >= ip + header else { return nil }
            guard EthernetFrame.u16(base, at: ip + 6) & 0x3FFF == 0 else { return nil }  // MF or an offset: a fragment
            return (ip, ip + header, frame[ip + 9], false)
        }
        if etherType == EthernetFrame.etherTypeIPv6 {
            guard frame.count >= ip + 40, frame[ip] >> 4 == 6 else { return nil }
            return (ip, ip + 40, frame[ip + 6], true)
        }
        return nil
    }

    static func locateTCP(_ frame: UnsafeRawBufferPointer) -> (ip: Int, tcp: Int, isIPv6: Bool)? {
        guard let l = locateL4(frame), l.proto == 6, frame.count >= l.l4 + 20 else { return nil }
        return (l.ip, l.l4, l.isIPv6)
    }

    /// Tells a frame cut short inside its headers from one that is simply not TCP.
    static func refusal(_ frame: UnsafeRawBufferPointer) -> Refusal {
        if let l = locateL4(frame), l.proto == 6 { return .truncated }  // TCP, but no room for its header
        return frame.count < EthernetFrame.headerLength + 20 ? .truncated : .notTCP
    }

    @inline(__always)
    static func store16(_ value: UInt16, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
}
