import NPARingFormats
import Testing

/// Receive-side coalescing, checked against its inverse: a super-frame cut by `TCPSegmentation`
/// and coalesced again is the same super-frame, byte for byte; and every rule that keeps a
/// segment out (Linux GRO's) holds, with the order of everything kept.
@Suite struct TCPCoalescingTests {
    static let mss = 1448

    /// A TCP super-frame as a sender's kernel hands it to a device: Ethernet (optionally one VLAN
    /// tag), IPv4 without options (DF, a correct header checksum) or IPv6, TCP with timestamps,
    /// `payload` bytes counting up, the TCP checksum field holding the pseudo-header seed.
    static func superFrame(ipv6: Bool = false, vlan: Bool = false, payload: Int, flags: UInt8 = 0x18) -> (bytes: [UInt8], headerLength: Int)
    {
        var f: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
        if vlan { f += [0x81, 0x00, 0x00, 0x07] }
        let ip = f.count + 2
        if ipv6 {
            f += [0x86, 0xDD, 0x60, 0, 0, 0, 0, 0, 6, 64] + (0..<16).map { UInt8($0) } + (0..<16).map { UInt8(100 + $0) }
        } else {
            f += [0x08, 0x00, 0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        }
        let tcp = f.count
        f += [0x13, 0x89, 0xC3, 0x50, 0x10, 0x00, 0x00, 0x00, 0, 0, 0, 9, 0x80, flags, 0xFF, 0xFF, 0, 0, 0, 0]
        f += [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]  // NOP NOP timestamps
        let headerLength = f.count
        f += (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let tcpLength = f.count - tcp
        var pseudo: UInt64 = 6 + UInt64(tcpLength)
        if ipv6 {
            store16(&f, ip + 4, tcpLength)
            pseudo += f.withUnsafeBytes { InternetChecksum.accumulate($0.baseAddress! + ip + 8, count: 32) }
        } else {
            store16(&f, ip + 2, f.count - ip)
            store16(
                &f, ip + 10, Int(~f.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress! + ip, count: 20)) })
            )
            pseudo += f.withUnsafeBytes { InternetChecksum.accumulate($0.baseAddress! + ip + 12, count: 8) }
        }
        store16(&f, tcp + 16, Int(InternetChecksum.fold(pseudo)))
        return (f, headerLength)
    }

    static func store16(_ f: inout [UInt8], _ at: Int, _ value: Int) {
        f[at] = UInt8(truncatingIfNeeded: value >> 8)
        f[at + 1] = UInt8(truncatingIfNeeded: value)
    }

    /// The segments a device cuts `frame` into (each a whole frame with valid checksums).
    static func segments(of frame: [UInt8], headerLength: Int, mss: Int = mss) throws -> [[UInt8]] {
        try frame.withUnsafeBytes { raw in
            let plan = try TCPSegmentation(frame: raw, headerLength: headerLength, mss: mss, maxSegmentFrame: headerLength + mss)
            return (0..<plan.segmentCount).map { i in
                var out = [UInt8](repeating: 0, count: plan.segmentLength(i))
                _ = out.withUnsafeMutableBytes { plan.writeSegment(i, from: raw, into: $0.baseAddress!) }
                return out
            }
        }
    }

    /// What the coalescer gave up, in order: a frame passed through (0 segments) or a held run.
    struct Output {
        var bytes: [UInt8]
        var segments: Int
        var mss = 0
        var headerLength = 0
        var tcpOffset = 0
    }

    /// Drives the coalescer as the TAP bridge does, over one batch.
    static func coalesce(_ frames: [[UInt8]], valid: [Bool]? = nil, bufferBytes: Int = 65536) -> [Output] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferBytes, alignment: 64)
        defer { buffer.deallocate() }
        var coalescer = TCPCoalescing(buffer: buffer)
        var out: [Output] = []
        func take() {
            let s = coalescer.takePending()
            out.append(
                Output(bytes: Array(s.bytes), segments: s.segmentCount, mss: s.mss, headerLength: s.headerLength, tcpOffset: s.tcpOffset))
        }
        for (i, frame) in frames.enumerated() {
            var done = false
            while !done {
                let decision = frame.withUnsafeBytes { coalescer.offer($0, checksumValid: valid?[i] ?? true) }
                switch decision {
                case .held: done = true
                case .passThrough:
                    out.append(Output(bytes: frame, segments: 0))
                    done = true
                case .flushPendingFirst: take()
                }
            }
        }
        if coalescer.hasPending { take() }
        return out
    }

    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func segmentsCoalesceBackIntoTheSuperFrameTheyWereCutFrom(ipv6: Bool, vlan: Bool) throws {
        let (frame, headerLength) = Self.superFrame(ipv6: ipv6, vlan: vlan, payload: 40_000)
        let cut = try Self.segments(of: frame, headerLength: headerLength)
        #expect(cut.count == 28)
        let out = Self.coalesce(cut)
        try #require(out.count == 1)
        // The same bytes: first segment's headers and id, IP length and checksum, the last one's
        // PSH, and the pseudo-header seed in the TCP checksum field.
        #expect(out[0].bytes == frame)
        #expect(out[0].segments == 28 && out[0].mss == Self.mss && out[0].headerLength == headerLength)
        #expect(out[0].tcpOffset == headerLength - 32)
        // Completing the checksum (what the kernel may do) makes it a valid frame.
        var completed = out[0].bytes
        let done = completed.withUnsafeMutableBytes {
            TCPSegmentation.completeChecksum(in: $0, start: headerLength - 32, field: headerLength - 16)
        }
        #expect(done && completed.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) })
    }

    @Test func theFirstSegmentsCWRIsKeptAndLaterOnesMayNotCarryOne() throws {
        let (frame, headerLength) = Self.superFrame(payload: 5000, flags: 0x10 | 0x40 | 0x80)  // ACK ECE CWR
        let cut = try Self.segments(of: frame, headerLength: headerLength)
        #expect(Self.coalesce(cut).map(\.bytes) == [frame])
        var withCWR = cut
        withCWR[2][47] |= 0x80
        #expect(Self.coalesce(withCWR).map(\.segments) == [2, 2])
    }

    /// No super-frame passes 65535 bytes of IP length, the buffer, or 64 segments; together they
    /// carry every segment, in order.
    @Test(arguments: [(1448, 65536), (500, 65536), (1448, 20000)])
    func superFramesStayWithinTheLimits(mss: Int, bufferBytes: Int) throws {
        let (frame, headerLength) = Self.superFrame(payload: 200 * mss)
        // Cut in pieces of at most 64 KiB (a segmenting device takes no more).
        var cut: [[UInt8]] = []
        let per = 40 * mss
        for start in stride(from: 0, to: 200 * mss, by: per) {
            var piece = Self.superFrame(payload: per, flags: 0x10).bytes
            piece.replaceSubrange(headerLength..., with: frame[(headerLength + start)..<(headerLength + start + per)])
            let sequence = UInt32(0x1000_0000) &+ UInt32(start)
            piece.replaceSubrange(38..<42, with: withUnsafeBytes(of: sequence.bigEndian, Array.init))
            Self.store16(&piece, 18, 0x1234 + start / mss)  // ids count on across pieces
            cut += try Self.segments(of: piece, headerLength: headerLength, mss: mss)
        }
        let out = Self.coalesce(cut, bufferBytes: bufferBytes)
        var payload: [UInt8] = []
        for o in out {
            #expect(o.segments >= 1 && o.segments <= 64)
            #expect(o.bytes.count <= bufferBytes && o.bytes.count - 14 <= 65535)
            payload += o.bytes[headerLength...]
        }
        #expect(out.map(\.segments).reduce(0, +) == 200)
        #expect(payload == Array(frame[headerLength...]))
        if mss == 500 { #expect(out.first?.segments == 64) }
    }

    /// Each rule keeps an altered third segment out of the run: the first two are given up
    /// together, then the third as it came (passed through, or as a run of its own).
    @Test(arguments: Refusal.allCases)
    func aSegmentThatBreaksARuleIsNotMerged(_ refusal: Refusal) throws {
        let (frame, headerLength) = Self.superFrame(payload: 5 * Self.mss)
        let segments = try Self.segments(of: frame, headerLength: headerLength)
        var cut = Array(segments[0..<3])
        var valid = [Bool](repeating: true, count: cut.count)
        let tcp = 34
        switch refusal {
        case .sequenceGap: cut[2] = segments[3]
        case .otherPort: cut[2][tcp + 1] ^= 1
        case .otherAddress: cut[2][29] ^= 1
        case .otherTTL: cut[2][22] -= 1
        case .otherTOS: cut[2][15] = 0x10
        case .otherACKNumber: cut[2][tcp + 11] ^= 1
        case .otherWindow: cut[2][tcp + 15] ^= 1
        case .otherTimestamp: cut[2][tcp + 27] ^= 1
        case .ipIDNotCounting: cut[2][19] ^= 0x40
        case .syn: cut[2][tcp + 13] |= 0x02
        case .fin: cut[2][tcp + 13] |= 0x01
        case .rst: cut[2][tcp + 13] |= 0x04
        case .urg: cut[2][tcp + 13] |= 0x20
        case .noACK: cut[2][tcp + 13] &= ~0x10
        case .longer:
            cut[2] += [0]
            Self.store16(&cut[2], 16, cut[2].count - 14)
        case .notChecksumValid: valid[2] = false
        case .vlanTagged: cut[2].insert(contentsOf: [0x81, 0x00, 0x00, 0x07], at: 12)
        case .notTCP: cut[2][23] = 17
        }
        let out = Self.coalesce(cut, valid: valid)
        #expect(out.count == 2 && out[0].segments == 2, "\(out.map(\.segments))")
        #expect(out.count == 2 && out[1].bytes == cut[2] && out[1].segments <= 1, "\(out.map(\.segments))")
    }

    enum Refusal: CaseIterable, Sendable {
        case sequenceGap, otherPort, otherAddress, otherTTL, otherTOS, otherACKNumber, otherWindow, otherTimestamp
        case ipIDNotCounting, syn, fin, rst, urg, noACK, longer, notChecksumValid, vlanTagged, notTCP
    }

    /// A short segment or one with PSH is a run's last; the next one starts a new run.
    @Test func aShortOrPushedSegmentEndsTheRun() throws {
        let (frame, headerLength) = Self.superFrame(payload: 5 * Self.mss)
        let cut = try Self.segments(of: frame, headerLength: headerLength)
        var short = Array(cut[1][..<(headerLength + 1000)])
        Self.store16(&short, 16, short.count - 14)
        var pushed = cut[1]
        pushed[47] |= 0x08
        #expect(Self.coalesce([cut[0], short, cut[2]]).map(\.segments) == [2, 1])
        let out = Self.coalesce([cut[0], pushed, cut[2], cut[3]])
        #expect(out.map(\.segments) == [2, 2])
        #expect(out[0].bytes[47] & 0x08 != 0 && out[1].bytes[47] & 0x08 == 0)
        // A pushed segment alone and a pure ACK: passed through as they came.
        var ack = Array(cut[0][..<headerLength])
        Self.store16(&ack, 16, headerLength - 14)
        #expect(Self.coalesce([pushed, ack]).map(\.segments) == [0, 0])
    }

    @Test func anIPv6SegmentWithAnotherHopLimitOrFlowLabelIsNotMerged() throws {
        let (frame, headerLength) = Self.superFrame(ipv6: true, payload: 3 * Self.mss, flags: 0x10)
        let cut = try Self.segments(of: frame, headerLength: headerLength)
        #expect(Self.coalesce(cut).map(\.segments) == [3])
        var hopLimit = cut
        for i in 1..<3 { hopLimit[i][21] -= 1 }
        #expect(Self.coalesce(hopLimit).map(\.segments) == [1, 2])
        var flowLabel = cut
        flowLabel[2][17] = 0x42
        #expect(Self.coalesce(flowLabel).map(\.segments) == [2, 1])
    }

    /// With DF a sender may keep one IP id for every segment (Linux's "atomic" datagrams).
    @Test func aFixedIPIDWithDFMerges() throws {
        let (frame, headerLength) = Self.superFrame(payload: 3 * Self.mss, flags: 0x10)
        var cut = try Self.segments(of: frame, headerLength: headerLength)
        for i in 1..<3 { cut[i][18...19] = cut[0][18...19] }
        #expect(Self.coalesce(cut).map(\.segments) == [3])
        for i in 0..<3 { cut[i][20] = 0 }  // no DF: the id must count
        #expect(Self.coalesce(cut).map(\.segments) == [1, 1, 1])
    }

    /// Frames that are not TCP, between two runs of one flow, keep their place.
    @Test func otherFramesKeepTheirPlace() throws {
        let (frame, headerLength) = Self.superFrame(payload: 4 * Self.mss)
        let cut = try Self.segments(of: frame, headerLength: headerLength)
        let arp = [UInt8](repeating: 0xFF, count: 6) + [0x02, 0, 0, 0, 0, 1, 0x08, 0x06] + [UInt8](repeating: 0, count: 28)
        let out = Self.coalesce([cut[0], cut[1], arp, cut[2], cut[3]])
        #expect(out.map(\.segments) == [2, 0, 2])
        #expect(out[1].bytes == arp)
    }

    /// Ethernet padding after a short segment: the IP length is not the frame's, so it passes.
    @Test func aPaddedFrameIsPassedThrough() throws {
        let (frame, headerLength) = Self.superFrame(payload: 2)
        var padded = try Self.segments(of: frame, headerLength: headerLength)[0]
        padded += [0, 0, 0]
        #expect(Self.coalesce([padded]).map(\.segments) == [0])
    }
}
