import NPAControlProtocol
import NPARingFormats

/// IPv4 frames as a kernel hands them to a device that offloads: a TCP super-frame for TSO, or
/// a TCP/UDP frame whose L4 checksum field holds only the pseudo-header seed (CHECKSUM_PARTIAL).
/// Ethernet + IPv4 (20 bytes, correct header checksum, DF) + TCP (20 bytes) or UDP (8 bytes);
/// the payload counts up so a test can check every byte lands where it belongs.
package enum OffloadFrames {
    package static let ipOffset = 14
    package static let l4Offset = 34
    /// Ethernet + IPv4 + TCP.
    package static let tcpHeaderLength = 54
    package static let tcpChecksumOffset = 50
    package static let udpChecksumOffset = 40
    package static let firstIPID: UInt16 = 0x1234

    package static func payloadByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 7 &+ 3) }

    /// A TCP frame of `payload` bytes (a super-frame when that is more than an MSS); its TCP
    /// checksum field holds the pseudo-header seed, as Linux leaves it for the device.
    package static func tcp(to dst: MACAddress, from src: MACAddress, payload: Int, sequence: UInt32 = 1_000_000, flags: UInt8 = 0x19)
        -> [UInt8]
    {
        var f = header(to: dst, from: src, proto: 6, l4Length: 20 + payload)
        f += [0x9C, 0x40, 0x14, 0x51]  // ports 40000 -> 5201
        f += withUnsafeBytes(of: sequence.bigEndian, Array.init)
        f += [0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]
        f += (0..<payload).map(payloadByte)
        storeSeed(&f, at: tcpChecksumOffset, proto: 6)
        return f
    }

    /// A UDP frame of `payload` bytes, its checksum field the pseudo-header seed.
    package static func udp(to dst: MACAddress, from src: MACAddress, payload: Int) -> [UInt8] {
        var f = header(to: dst, from: src, proto: 17, l4Length: 8 + payload)
        f += [0x9C, 0x40, 0x14, 0x51, UInt8((8 + payload) >> 8), UInt8((8 + payload) & 0xFF), 0, 0]
        f += (0..<payload).map(payloadByte)
        storeSeed(&f, at: udpChecksumOffset, proto: 17)
        return f
    }

    private static func header(to dst: MACAddress, from src: MACAddress, proto: UInt8, l4Length: Int) -> [UInt8] {
        let total = 20 + l4Length
        var ip: [UInt8] = [
            0x45, 0, UInt8(truncatingIfNeeded: total >> 8), UInt8(truncatingIfNeeded: total), UInt8(firstIPID >> 8),
            UInt8(firstIPID & 0xFF), 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]
        let sum = ~ip.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress!, count: 20)) }
        ip[10] = UInt8(sum >> 8)
        ip[11] = UInt8(sum & 0xFF)
        return dst.bytes + src.bytes + [0x08, 0x00] + ip
    }

    /// CHECKSUM_PARTIAL's seed: the folded, not complemented, pseudo-header sum.
    private static func storeSeed(_ f: inout [UInt8], at field: Int, proto: UInt8) {
        let l4Length = f.count - l4Offset
        let seed = f.withUnsafeBytes {
            InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress! + ipOffset + 12, count: 8) + UInt64(proto) + UInt64(l4Length))
        }
        f[field] = UInt8(seed >> 8)
        f[field + 1] = UInt8(seed & 0xFF)
    }

    /// What is wrong with `segments` as the TSO segmentation of `frame` at `mss` (nil: nothing):
    /// their number and lengths, IP lengths and ids, sequence numbers, FIN/PSH only on the last,
    /// every payload byte in place, and valid IP and TCP checksums (the codec's verifier).
    package static func segmentationProblem(_ segments: [[UInt8]], of frame: [UInt8], mss: Int) -> String? {
        let h = tcpHeaderLength, payload = frame.count - h
        let count = (payload + mss - 1) / mss
        guard segments.count == count else { return "\(segments.count) segments, expected \(count)" }
        let firstSequence = u32(frame, 38)
        for (i, s) in segments.enumerated() {
            let slice = min(mss, payload - i * mss)
            guard s.count == h + slice else { return "segment \(i): \(s.count) bytes, expected \(h + slice)" }
            guard Int(u16(s, ipOffset + 2)) == s.count - 14 else { return "segment \(i): IP total length \(u16(s, ipOffset + 2))" }
            guard u16(s, ipOffset + 4) == firstIPID &+ UInt16(i) else { return "segment \(i): IP id \(u16(s, ipOffset + 4))" }
            guard u32(s, 38) == firstSequence &+ UInt32(i * mss) else { return "segment \(i): sequence \(u32(s, 38))" }
            let finOrPush = s[47] & 0x09 != 0
            guard finOrPush == (i == count - 1) else { return "segment \(i): TCP flags \(s[47])" }
            guard Array(s[h...]) == Array(frame[(h + i * mss)..<(h + i * mss + slice)]) else { return "segment \(i): payload differs" }
            guard s.withUnsafeBytes({ TCPSegmentation.tcpOrUDPChecksumIsValid($0) }) else { return "segment \(i): bad checksum" }
        }
        return nil
    }

    package static func u16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }
    package static func u32(_ f: [UInt8], _ at: Int) -> UInt32 { UInt32(u16(f, at)) << 16 | UInt32(u16(f, at + 2)) }
}
