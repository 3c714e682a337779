import FuzzSupport
import Glibc
import NPARingFormats

// Receive-side coalescing over any sequence of received frames: mostly segments of one TCP
// stream (the fuzzer picks gaps, short and pushed segments, flag and header changes, a second
// flow, a claim that checksums are bad) mixed with arbitrary frames. Every frame comes out
// exactly once, in order: passed through unchanged, or inside a super-frame that re-segments
// (with TCPSegmentation, at its MSS) into exactly the segments that went in — equal but for the
// IPv4 id and the checksums, which a device rewrites — whose completed checksums verify, within
// 64 segments, an IP length of 65535 and the buffer. Never a trap.
//
// Input: options (bit 0 IPv6, bit 1 VLAN tag, bit 2 a small buffer), MSS (u16 LE), buffer size
// (u16 LE), then operations of one byte each: bits 0-1 the kind (0, 1: the stream's next
// segment; 2: a raw frame, length u8 then bytes; 3: the stream moves to another port), bit 2
// not checksum-valid, bit 3 PSH, bit 4 a shorter payload (u16 LE follows), bit 5 one header
// byte changed (offset u8, xor u8 follow), bit 6 skip a segment's worth of sequence, bit 7 CWR.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    let options = input.u8()
    let ipv6 = options & 1 != 0, vlan = options & 2 != 0
    let mss = 1 + Int(input.u16()) % 1460
    let sizeChoice = Int(input.u16())
    let bufferBytes = options & 4 != 0 ? 64 + sizeChoice % 65536 : 65536
    var stream = Stream(ipv6: ipv6, vlan: vlan)
    var frames: [([UInt8], Bool)] = []
    while !input.isAtEnd && frames.count < 256 {
        let op = input.u8()
        let valid = op & 4 == 0
        switch op & 3 {
        case 2:
            let n = Int(input.u8())
            frames.append(((0..<n).map { _ in input.u8() }, valid))
            continue
        case 3:
            stream.port &+= 1
            continue
        default: break
        }
        let payload = op & 0x10 != 0 ? Int(input.u16()) % (mss + 2) : mss
        if op & 0x40 != 0 { stream.sequence &+= UInt32(mss) }
        var frame = stream.next(payload: payload, flags: 0x10 | (op & 0x08) | (op & 0x80))
        if op & 0x20 != 0 {
            let at = Int(input.u8()) % stream.headerLength
            frame[at] ^= input.u8()
        }
        frames.append((frame, valid))
    }
    check(frames, bufferBytes: bufferBytes)
    return 0
}

/// Coalesces `frames` as the TAP bridge does and checks every output against what went in.
func check(_ frames: [([UInt8], Bool)], bufferBytes: Int) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferBytes, alignment: 64)
    defer { buffer.deallocate() }
    var coalescer = TCPCoalescing(buffer: buffer)
    var consumed = 0  // frames accounted for by outputs so far
    func takePending() {
        let s = coalescer.takePending()
        invariant(s.segmentCount >= 1 && s.segmentCount <= 64, "\(s.segmentCount) segments")
        invariant(s.bytes.count <= bufferBytes, "a super-frame of \(s.bytes.count) bytes in a \(bufferBytes)-byte buffer")
        invariant(consumed + s.segmentCount <= frames.count, "more segments out than went in")
        if s.segmentCount == 1 {
            invariant(Array(s.bytes) == frames[consumed].0, "a single held frame changed")
        } else {
            compare(s, with: frames[consumed..<(consumed + s.segmentCount)].map(\.0))
        }
        consumed += s.segmentCount
    }
    for (i, (frame, valid)) in frames.enumerated() {
        var rounds = 0
        while true {
            rounds += 1
            invariant(rounds <= 2, "frame \(i) was asked to wait twice")
            let decision = frame.withUnsafeBytes { coalescer.offer($0, checksumValid: valid) }
            if decision == .held {
                invariant(valid, "frame \(i) held without the device vouching for it")
                break
            }
            if decision == .passThrough {
                invariant(!coalescer.hasPending && consumed == i, "frame \(i) passed with another before it pending")
                consumed += 1
                break
            }
            invariant(coalescer.hasPending, "flush asked with nothing pending")
            takePending()
        }
    }
    if coalescer.hasPending { takePending() }
    invariant(consumed == frames.count, "\(frames.count) frames in, \(consumed) out")
}

/// A super-frame re-segmented at its MSS must give back `inputs`, but for the IPv4 id and the
/// checksums; completed, its own checksums must verify.
func compare(_ s: TCPCoalescing.SuperFrame, with inputs: [[UInt8]]) {
    let ip = s.tcpOffset - (s.isIPv6 ? 40 : 20)
    invariant(s.bytes.count - ip - (s.isIPv6 ? 40 : 0) <= 0xFFFF, "IP length past 65535")
    let plan: TCPSegmentation
    do {
        plan = try TCPSegmentation(frame: s.bytes, headerLength: s.headerLength, mss: s.mss, maxSegmentFrame: s.headerLength + s.mss)
    } catch {
        invariant(false, "the super-frame does not re-segment: \(error)")
        return
    }
    invariant(plan.segmentCount == inputs.count, "\(inputs.count) segments in, \(plan.segmentCount) out")
    var out = [UInt8](repeating: 0, count: s.headerLength + s.mss)
    let rewritten =
        s.isIPv6 ? [s.tcpOffset + 16, s.tcpOffset + 17] : [ip + 4, ip + 5, ip + 10, ip + 11, s.tcpOffset + 16, s.tcpOffset + 17]
    for (i, input) in inputs.enumerated() {
        let n = out.withUnsafeMutableBytes { plan.writeSegment(i, from: s.bytes, into: $0.baseAddress!) }
        var segment = Array(out[0..<n])
        invariant(n == input.count, "segment \(i): \(n) bytes, \(input.count) went in")
        var expected = input
        for at in rewritten {
            segment[at] = 0
            expected[at] = 0
        }
        invariant(segment == expected, "segment \(i) differs from what went in")
    }
    let completed = UnsafeMutableRawBufferPointer.allocate(byteCount: s.bytes.count, alignment: 8)
    defer { completed.deallocate() }
    completed.copyMemory(from: s.bytes)
    invariant(TCPSegmentation.completeChecksum(in: completed, start: s.tcpOffset, field: s.tcpOffset + 16), "checksum offsets")
    invariant(TCPSegmentation.tcpOrUDPChecksumIsValid(UnsafeRawBufferPointer(completed)), "the completed super-frame's checksums fail")
}

/// One TCP stream's segments, as a segmenting sender writes them (valid checksums, counting ids).
struct Stream {
    let ipv6: Bool
    let vlan: Bool
    var port: UInt16 = 40000
    var sequence: UInt32 = 0xFFFF_F000  // wraps within a run
    var ipID: UInt16 = 0xFFF0
    var headerLength: Int { (vlan ? 18 : 14) + (ipv6 ? 40 : 20) + 32 }

    mutating func next(payload: Int, flags: UInt8) -> [UInt8] {
        var f: [UInt8] = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1]
        if vlan { f += [0x81, 0x00, 0x00, 0x07] }
        let ip = f.count + 2
        let tcpLength = 32 + payload
        if ipv6 {
            f += [0x86, 0xDD, 0x60, 0, 0x12, 0x34, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF), 6, 64]
            f += (0..<16).map { UInt8($0) } + (0..<16).map { UInt8(100 + $0) }
        } else {
            let total = 20 + tcpLength
            f += [0x08, 0x00, 0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), UInt8(ipID >> 8), UInt8(ipID & 0xFF), 0x40, 0, 64, 6, 0, 0]
            f += [10, 0, 0, 1, 10, 0, 0, 2]
            ipID &+= 1
        }
        let tcp = f.count
        f += [UInt8(port >> 8), UInt8(port & 0xFF), 0x14, 0x51]
        f += withUnsafeBytes(of: sequence.bigEndian, Array.init)
        f += [0, 0, 0, 9, 0x80, flags, 0xFF, 0xFF, 0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
        f += (0..<payload).map { UInt8(truncatingIfNeeded: Int(sequence) &+ $0) }
        sequence &+= UInt32(payload)
        f.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress!
            var pseudo: UInt64 = 6 + UInt64(tcpLength)
            if ipv6 {
                pseudo &+= InternetChecksum.accumulate(p + ip + 8, count: 32)
            } else {
                let sum = ~InternetChecksum.fold(InternetChecksum.accumulate(p + ip, count: 20))
                p.storeBytes(of: sum.bigEndian, toByteOffset: ip + 10, as: UInt16.self)
                pseudo &+= InternetChecksum.accumulate(p + ip + 12, count: 8)
            }
            let sum = ~InternetChecksum.fold(InternetChecksum.accumulate(p + tcp, count: tcpLength, into: pseudo))
            p.storeBytes(of: sum.bigEndian, toByteOffset: tcp + 16, as: UInt16.self)
        }
        return f
    }
}
