import FuzzSupport
import Glibc
import NPARingFormats

// The segmentation/checksum codec, which every offloading device runs on a guest's frame with
// the guest's own header length and MSS. Input: header length (u16 LE), MSS (u16 LE), then the
// frame. Any request is refused with a reason or planned; a planned one yields segments whose
// payloads are the frame's payload in order and whose IP and TCP checksums verify. Checksum
// completion at the same offsets never writes outside the frame. Never a trap.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 4 else { return 0 }
    let headerLength = Int(data[0]) | Int(data[1]) << 8
    let mss = Int(data[2]) | Int(data[3]) << 8
    let frame = UnsafeRawBufferPointer(start: data + 4, count: size - 4)
    if let plan = try? TCPSegmentation(frame: frame, headerLength: headerLength, mss: mss, maxSegmentFrame: 9018) {
        let out = UnsafeMutableRawPointer.allocate(byteCount: 9018, alignment: 8)
        defer { out.deallocate() }
        var payload = 0
        for i in 0..<plan.segmentCount {
            let n = plan.writeSegment(i, from: frame, into: out)
            invariant(n == plan.segmentLength(i) && n <= 9018, "segment \(i) is \(n) bytes")
            invariant(
                memcmp(out + headerLength, frame.baseAddress! + headerLength + payload, n - headerLength) == 0,
                "segment \(i) payload out of order")
            payload += n - headerLength
            invariant(
                TCPSegmentation.tcpOrUDPChecksumIsValid(UnsafeRawBufferPointer(start: out, count: n)),
                "segment \(i) checksum does not verify")
        }
        invariant(payload == frame.count - headerLength, "segments carry \(payload) of \(frame.count - headerLength) payload bytes")
    }
    guard !frame.isEmpty else { return 0 }
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: frame.count, alignment: 8)
    defer { copy.deallocate() }
    copy.copyMemory(from: frame)
    if !TCPSegmentation.completeChecksum(in: copy, start: headerLength, field: mss) {
        invariant(memcmp(copy.baseAddress!, frame.baseAddress!, frame.count) == 0, "a refused completion changed the frame")
    }
    return 0
}
