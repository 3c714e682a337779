/// Receive-side TCP coalescing, the inverse of `TCPSegmentation`: merges consecutive received
/// segments of one TCP flow into one super-frame, as Linux's GRO does for a NIC driver
/// (napi_gro_receive; the rules of net/ipv4/tcp_offload.c tcp_gro_receive, inet_gro_receive
/// and ipv6_gro_receive), so a receiver hands its OS one 64 KiB frame instead of 45 MTU-sized
/// ones. Pure bytes: it copies each frame it holds into the buffer the caller gives it and
/// writes the merged headers there; no allocation, no system call. It keeps one flow pending
/// at a time, so every frame it does not merge makes it give the pending one up first: the
/// order of all frames is kept.
///
/// The caller drives it (a state machine that returns decisions; the caller does the I/O):
/// `offer` each frame; on `.flushPendingFirst` write `takePending()` and offer the frame again;
/// on `.passThrough` write the frame as it is; at the end of a batch write `takePending()` if
/// `hasPending`. A super-frame's bytes live in the buffer until the next `offer`.
///
/// Merged: checksum-valid (the device vouched) Ethernet (+ one 802.1Q tag) + IPv4 without
/// options or fragments, or IPv6 without extension headers, + TCP with ACK and payload. A
/// segment joins when every header byte equals the first segment's (MACs, tag, TOS/traffic
/// class, TTL/hop limit, DF, flow label, addresses, ports, ACK number, window, options — the
/// timestamp included, as Linux compares them) except the lengths, checksums, the IPv4 id (which
/// counts up by one per segment, or stays fixed with DF) and the sequence number (which must
/// continue the previous segment's), it carries no SYN/FIN/RST/URG/CWR, no more payload than the
/// first (the MSS), and the result stays within 64 segments, an IP length of 65535 and the
/// buffer. A shorter segment or one with PSH is the last one.
public struct TCPCoalescing {
    /// What the caller does with an offered frame.
    public enum Decision: Equatable, Sendable {
        /// The frame is now part of the pending super-frame (copied: the caller may reuse it).
        case held
        /// A pending super-frame must go first: write `takePending()`, then offer the frame again.
        case flushPendingFirst
        /// Nothing is pending and the frame is not one to merge: write it unchanged.
        case passThrough
    }

    /// A pending super-frame, finished: what a virtio-net GSO header describes. With one segment
    /// the bytes are the frame as it came (its checksums complete); with more, the first segment's
    /// headers with the IP length and IPv4 header checksum rewritten, the last segment's PSH, and
    /// in the TCP checksum field the pseudo-header sum over the whole TCP length, as a
    /// CHECKSUM_PARTIAL frame carries it (`TCPSegmentation.completeChecksum` finishes it).
    public struct SuperFrame {
        public let bytes: UnsafeRawBufferPointer
        public let segmentCount: Int
        /// Payload bytes of every segment but the last (gso_size).
        public let mss: Int
        /// Ethernet, IP and TCP headers (hdr_len).
        public let headerLength: Int
        /// Where the TCP header starts (csum_start; the checksum is 16 bytes into it).
        public let tcpOffset: Int
        public let isIPv6: Bool
        /// The first segment had CWR (the GSO type then carries ECN, as Linux sets it).
        public let congestionWindowReduced: Bool
    }

    public static let maximumSegments = TCPSegmentation.maximumSegments

    static let fin: UInt8 = 0x01
    static let syn: UInt8 = 0x02
    static let rst: UInt8 = 0x04
    static let psh: UInt8 = 0x08
    static let ack: UInt8 = 0x10
    static let urg: UInt8 = 0x20
    static let cwr: UInt8 = 0x80

    private let buffer: UnsafeMutableRawBufferPointer
    /// Bytes of the pending super-frame in `buffer`; 0 when none is pending.
    private var length = 0
    private var segmentCount = 0
    private var mss = 0
    private var headerLength = 0
    private var ipOffset = 0
    private var tcpOffset = 0
    private var isIPv6 = false
    private var firstIPID: UInt16 = 0
    /// The IPv4 ids stay the first's (DF), rather than count up: set by the second segment.
    private var fixedIPID = false
    private var nextSequence: UInt32 = 0
    /// False once the pending super-frame has its last segment (PSH, or shorter than the MSS).
    private var open = false
    private var pushed = false

    /// Works in `buffer`, which the caller owns and keeps alive while this value is used. A
    /// 64 KiB buffer takes the largest super-frame; a smaller one bounds them.
    public init(buffer: UnsafeMutableRawBufferPointer) {
        self.buffer = buffer
    }

    public var hasPending: Bool { length > 0 }

    /// Decides what happens to `frame` (the caller keeps it unchanged during the call).
    public mutating func offer(_ frame: UnsafeRawBufferPointer, checksumValid: Bool) -> Decision {
        guard checksumValid, let segment = Segment(frame) else { return length > 0 ? .flushPendingFirst : .passThrough }
        if length > 0 {
            guard open, joins(segment, frame) else { return .flushPendingFirst }
            let base = buffer.baseAddress!
            if segmentCount == 1 && !isIPv6 { fixedIPID = EthernetFrame.u16(frame.baseAddress!, at: ipOffset + 4) == firstIPID }
            (base + length).copyMemory(from: frame.baseAddress! + segment.headerLength, byteCount: segment.payload)
            length += segment.payload
            segmentCount += 1
            nextSequence = segment.sequence &+ UInt32(truncatingIfNeeded: segment.payload)
            if segment.flags & Self.psh != 0 {
                pushed = true
                open = false
            }
            if segment.payload < mss { open = false }
            return .held
        }
        // A segment with PSH ends a super-frame at once: alone, it is simply passed on.
        guard segment.flags & Self.psh == 0, frame.count <= buffer.count else { return .passThrough }
        buffer.baseAddress!.copyMemory(from: frame.baseAddress!, byteCount: frame.count)
        length = frame.count
        segmentCount = 1
        mss = segment.payload
        headerLength = segment.headerLength
        ipOffset = segment.ip
        tcpOffset = segment.tcp
        isIPv6 = segment.isIPv6
        firstIPID = isIPv6 ? 0 : EthernetFrame.u16(frame.baseAddress!, at: segment.ip + 4)
        nextSequence = segment.sequence &+ UInt32(truncatingIfNeeded: segment.payload)
        open = true
        pushed = false
        fixedIPID = false
        return .held
    }

    /// Finishes the pending super-frame and gives it up; its bytes stay valid until the next
    /// `offer`. Only when `hasPending`.
    public mutating func takePending() -> SuperFrame {
        precondition(length > 0, "no super-frame is pending")
        let base = buffer.baseAddress!
        let firstFlags = base.load(fromByteOffset: tcpOffset + 13, as: UInt8.self)
        if segmentCount > 1 {
            let tcpLength = length - tcpOffset
            var pseudo: UInt64
            if isIPv6 {
                TCPSegmentation.store16(UInt16(truncatingIfNeeded: tcpLength), base, ipOffset + 4)
                pseudo = InternetChecksum.accumulate(base + ipOffset + 8, count: 32)
            } else {
                TCPSegmentation.store16(UInt16(truncatingIfNeeded: length - ipOffset), base, ipOffset + 2)
                TCPSegmentation.store16(0, base, ipOffset + 10)
                let sum = InternetChecksum.accumulate(base + ipOffset, count: tcpOffset - ipOffset)
                TCPSegmentation.store16(~InternetChecksum.fold(sum), base, ipOffset + 10)
                pseudo = InternetChecksum.accumulate(base + ipOffset + 12, count: 8)
            }
            pseudo &+= 6 &+ UInt64(tcpLength)
            TCPSegmentation.store16(InternetChecksum.fold(pseudo), base, tcpOffset + 16)
            if pushed { base.storeBytes(of: firstFlags | Self.psh, toByteOffset: tcpOffset + 13, as: UInt8.self) }
        }
        let frame = SuperFrame(
            bytes: UnsafeRawBufferPointer(start: base, count: length), segmentCount: segmentCount, mss: mss,
            headerLength: headerLength, tcpOffset: tcpOffset, isIPv6: isIPv6, congestionWindowReduced: firstFlags & Self.cwr != 0)
        length = 0
        segmentCount = 0
        open = false
        return frame
    }

    /// Whether `segment` continues the pending super-frame and fits it.
    private func joins(_ segment: Segment, _ frame: UnsafeRawBufferPointer) -> Bool {
        guard segment.headerLength == headerLength, segment.tcp == tcpOffset, segment.isIPv6 == isIPv6,
            segment.sequence == nextSequence, segment.payload <= mss,
            segmentCount < Self.maximumSegments, length + segment.payload <= buffer.count,
            length + segment.payload - ipOffset - (isIPv6 ? 40 : 0) <= 0xFFFF
        else { return false }
        let p = UnsafeRawPointer(buffer.baseAddress!)
        let f = frame.baseAddress!
        let ip = ipOffset
        let tcp = tcpOffset
        // Every header byte but the lengths, checksums, IPv4 id, sequence number and flags.
        if isIPv6 {
            guard Self.same(p, f, 0, ip + 4), Self.same(p, f, ip + 6, tcp + 4) else { return false }
        } else {
            guard Self.same(p, f, 0, ip + 2), Self.same(p, f, ip + 6, ip + 10), Self.same(p, f, ip + 12, tcp + 4) else { return false }
            // The id counts up per segment (what a segmenting sender writes), or, with DF, may stay
            // the first's; the second segment sets which, as Linux's inet_gro_flush does.
            let id = EthernetFrame.u16(f, at: ip + 4)
            let dontFragment = EthernetFrame.u16(f, at: ip + 6) & 0x4000 != 0
            let counting = id == firstIPID &+ UInt16(truncatingIfNeeded: segmentCount)
            let fixed = dontFragment && id == firstIPID
            guard segmentCount == 1 ? counting || fixed : (fixedIPID ? fixed : counting) else { return false }
        }
        guard Self.same(p, f, tcp + 8, tcp + 13), Self.same(p, f, tcp + 14, tcp + 16), Self.same(p, f, tcp + 18, headerLength)
        else { return false }
        // Flags as the first segment's, but for PSH (a last segment's) and CWR (the first's only).
        let firstFlags = p.load(fromByteOffset: tcp + 13, as: UInt8.self)
        return segment.flags & ~Self.psh == firstFlags & ~Self.cwr
    }

    /// Whether bytes `[from, to)` of `a` and `b` are equal.
    @inline(__always)
    private static func same(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ from: Int, _ to: Int) -> Bool {
        var i = from
        while i + 8 <= to {
            if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
            i += 8
        }
        while i < to {
            if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
            i += 1
        }
        return true
    }

    /// A frame that may be merged at all, with the offsets merging needs; nil for any other.
    private struct Segment {
        let ip: Int
        let tcp: Int
        let headerLength: Int
        let payload: Int
        let isIPv6: Bool
        let flags: UInt8
        let sequence: UInt32

        init?(_ frame: UnsafeRawBufferPointer) {
            guard let l = TCPSegmentation.locateTCP(frame) else { return nil }
            let base = frame.baseAddress!
            // IPv4 with options is flushed by Linux (inet_gro_receive wants ihl 5); the IP length
            // must be the frame's (Ethernet padding after a short segment would end up inside).
            if l.isIPv6 {
                guard Int(EthernetFrame.u16(base, at: l.ip + 4)) == frame.count - l.tcp else { return nil }
            } else {
                guard l.tcp - l.ip == 20, Int(EthernetFrame.u16(base, at: l.ip + 2)) == frame.count - l.ip else { return nil }
            }
            let tcpHeader = Int(frame[l.tcp + 12] >> 4) * 4
            let flags = frame[l.tcp + 13]
            guard tcpHeader >= 20, l.tcp + tcpHeader < frame.count, flags & TCPCoalescing.ack != 0,
                flags & (TCPCoalescing.syn | TCPCoalescing.fin | TCPCoalescing.rst | TCPCoalescing.urg) == 0
            else { return nil }
            ip = l.ip
            tcp = l.tcp
            headerLength = l.tcp + tcpHeader
            payload = frame.count - headerLength
            isIPv6 = l.isIPv6
            self.flags = flags
            sequence = EthernetFrame.u32(base, at: l.tcp + 4)
        }
    }
}
