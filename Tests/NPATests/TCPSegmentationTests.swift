import NPARingFormats
import Testing

/// The segmentation/checksum codec every offloading device uses, checked against a plain
/// byte-by-byte reference and against the invariants a receiver's TCP relies on.
@Suite struct TCPSegmentationTests {
    /// RFC 1071 the slow, obvious way: the reference the fast sum must equal.
    static func referenceSum(_ bytes: [UInt8]) -> UInt16 {
        var s: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let hi = UInt32(bytes[i]) << 8
            let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            s += hi | lo
            s = (s & 0xFFFF) + (s >> 16)
            i += 2
        }
        return UInt16(s)
    }

    @Test(arguments: [0, 1, 2, 7, 8, 9, 15, 16, 17, 1499, 1500, 9001])
    func theFastSumEqualsTheReference(length: Int) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let fast = bytes.withUnsafeBytes {
            InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: length))
        }
        #expect(fast == Self.referenceSum(bytes))
    }

    /// A TCP super-frame: Ethernet (optionally one VLAN tag), IPv4 with options or IPv6, a TCP
    /// header with options, `payload` bytes counting up; checksums left as the sender's seed.
    static func superFrame(ipv6: Bool, vlan: Bool, payload: Int, flags: UInt8 = 0x18 | 0x01 | 0x80) -> (bytes: [UInt8], headerLength: Int) {
        var f: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
        if vlan { f += [0x81, 0x00, 0x00, 0x07] }
        let tcpHeader = 32
        if ipv6 {
            f += [0x86, 0xDD, 0x60, 0, 0, 0, 0, 0, 6, 64] + (0..<16).map { UInt8($0) } + (0..<16).map { UInt8(100 + $0) }
        } else {
            // IHL 6: one option word, so the header is not the usual 20 bytes.
            f += [0x08, 0x00, 0x46, 0, 0, 0, 0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1, 1, 0]
        }
        f += [0x13, 0x89, 0xC3, 0x50, 0x10, 0x00, 0x00, 0x00, 0, 0, 0, 9, UInt8(tcpHeader / 4) << 4, flags, 0xFF, 0xFF, 0xAB, 0xCD, 0, 0]
        f += [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]  // NOP NOP timestamps
        let headerLength = f.count
        f += (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        return (f, headerLength)
    }

    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func segmentsCarryThePayloadInOrderWithValidChecksums(ipv6: Bool, vlan: Bool) throws {
        let (frame, headerLength) = Self.superFrame(ipv6: ipv6, vlan: vlan, payload: 10_000)
        let mss = 1448
        try frame.withUnsafeBytes { raw in
            let plan = try TCPSegmentation(frame: raw, headerLength: headerLength, mss: mss, maxSegmentFrame: headerLength + mss)
            #expect(plan.segmentCount == 7)  // 6 full segments and 1312 bytes
            var payload: [UInt8] = []
            var out = [UInt8](repeating: 0, count: 2048)
            for i in 0..<plan.segmentCount {
                let n = out.withUnsafeMutableBytes { plan.writeSegment(i, from: raw, into: $0.baseAddress!) }
                #expect(n == plan.segmentLength(i))
                #expect(n == headerLength + (i < 6 ? mss : 10_000 - 6 * mss))
                let segment = Array(out[0..<n])
                #expect(segment.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) }, "segment \(i)")
                let tcp = headerLength - 32
                let seq =
                    UInt32(segment[tcp + 4]) << 24 | UInt32(segment[tcp + 5]) << 16 | UInt32(segment[tcp + 6]) << 8
                    | UInt32(segment[tcp + 7])
                #expect(seq == 0x1000_0000 &+ UInt32(i * mss))
                let flags = segment[tcp + 13]
                #expect(flags & 0x10 != 0)  // ACK on every segment
                #expect((flags & 0x09 != 0) == (i == plan.segmentCount - 1))  // FIN, PSH only last
                #expect((flags & 0x80 != 0) == (i == 0))  // CWR only first
                if !ipv6 {
                    let ip = vlan ? 18 : 14
                    #expect(Int(segment[ip + 2]) << 8 | Int(segment[ip + 3]) == n - ip)
                    #expect(UInt16(segment[ip + 4]) << 8 | UInt16(segment[ip + 5]) == 0x1234 &+ UInt16(i))
                }
                payload += segment[headerLength...]
            }
            #expect(payload == Array(frame[headerLength...]))
        }
    }

    @Test func hostileRequestsAreRefusedNotTrusted() throws {
        let (frame, headerLength) = Self.superFrame(ipv6: false, vlan: false, payload: 3000)
        func refusal(_ bytes: [UInt8], _ hlen: Int, _ mss: Int, max: Int = 1518) -> TCPSegmentation.Refusal? {
            bytes.withUnsafeBytes { raw -> TCPSegmentation.Refusal? in
                do {
                    _ = try TCPSegmentation(frame: raw, headerLength: hlen, mss: mss, maxSegmentFrame: max)
                    return nil
                } catch let refusal as TCPSegmentation.Refusal { return refusal } catch { return nil }
            }
        }
        #expect(refusal(frame, headerLength, 1448) == nil)
        #expect(refusal(frame, headerLength - 4, 1448) == .headerLengthMismatch)
        #expect(refusal(frame, headerLength + 4, 1448) == .headerLengthMismatch)
        #expect(refusal(frame, headerLength, 0) == .badMSS)
        #expect(refusal(frame, headerLength, 1500) == .badMSS)  // header + MSS past the frame limit
        #expect(refusal(frame, headerLength, 1) == .tooManySegments)
        #expect(refusal(Array(frame[0..<(headerLength - 10)]), headerLength, 1448) == .truncated)
        var udp = frame
        udp[14 + 9] = 17
        #expect(refusal(udp, headerLength, 1448) == .notTCP)
        var fragment = frame
        fragment[14 + 6] = 0x20  // more fragments
        #expect(refusal(fragment, headerLength, 1448) == .notTCP)
        var arp = frame
        arp[12] = 0x08
        arp[13] = 0x06
        #expect(refusal(arp, headerLength, 1448) == .notTCP)
        var badOffset = frame
        badOffset[headerLength - 32 + 12] = 0x20  // TCP data offset 8 bytes
        #expect(refusal(badOffset, headerLength, 1448) == .notTCP)
    }

    /// CHECKSUM_PARTIAL as Linux leaves it: the pseudo-header sum in the field, the device adds
    /// the rest. The completed frame verifies; offsets outside the frame leave it untouched.
    @Test func checksumCompletionFinishesAPartialChecksum() {
        var (frame, headerLength) = Self.superFrame(ipv6: false, vlan: false, payload: 777, flags: 0x18)
        let ip = 14
        let tcp = headerLength - 32
        let tcpLength = frame.count - tcp
        frame[ip + 2] = UInt8((frame.count - ip) >> 8)
        frame[ip + 3] = UInt8((frame.count - ip) & 0xFF)
        frame[ip + 10] = 0
        frame[ip + 11] = 0
        let ipSum = ~Self.referenceSum(Array(frame[ip..<tcp]))
        frame[ip + 10] = UInt8(ipSum >> 8)
        frame[ip + 11] = UInt8(ipSum & 0xFF)
        let seed = Self.referenceSum(Array(frame[(ip + 12)..<(ip + 20)]) + [0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF)])
        frame[tcp + 16] = UInt8(seed >> 8)
        frame[tcp + 17] = UInt8(seed & 0xFF)
        #expect(frame.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) } == false)
        let before = frame
        let end = frame.count
        #expect(frame.withUnsafeMutableBytes { TCPSegmentation.completeChecksum(in: $0, start: tcp, field: end - 1) } == false)
        #expect(frame.withUnsafeMutableBytes { TCPSegmentation.completeChecksum(in: $0, start: tcp, field: tcp - 2) } == false)
        #expect(frame == before)
        #expect(frame.withUnsafeMutableBytes { TCPSegmentation.completeChecksum(in: $0, start: tcp, field: tcp + 16) })
        #expect(frame.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) })
        frame[end - 1] ^= 0x40
        #expect(frame.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) } == false)
    }
}
