import NPAControlProtocol
import NPARingFormats
import NPAShell
import NPASystem

/// The offload check of `PluginTestHarness`: the guest sends TCP frames the way a kernel hands
/// them to an offloading device — half with a checksum request (CHECKSUM_PARTIAL: the field
/// holds only the pseudo-header seed), half as TSO super-frames of one buffer — and the peer
/// must receive every payload byte once, in finished segments whose IP and TCP checksums are
/// valid. The shell passes a request to the plugin only if the plugin declared that offload and
/// does the work itself otherwise, so this holds for any plugin; what it tests is that a plugin
/// which declares offloads hands them to its NIC correctly. Touches only the two vNICs.
struct PluginTestOffloads {
    static let ipOffset = 14
    static let l4Offset = 34
    static let tcpChecksumOffset = 50
    /// Ethernet + IPv4 + TCP, no options.
    static let headerLength = 54
    static let mss = 536

    let frames: Int
    let stallSeconds: Double

    /// Sends the frames; nil if every byte arrived intact, else what went wrong.
    func run(_ guest: VirtualNIC, _ peer: VirtualNIC) -> (failure: String?, segments: Int) {
        let refusedBefore = guest.offloadRequestsRefused
        // Frame i carries payload bytes at TCP sequence numbers i << 16 + offset.
        var expectedBytes = 0, receivedBytes = 0, segments = 0, damaged = 0, badChecksums = 0
        var sent = 0
        var lastProgress = Clock.monotonicNanoseconds()
        let maximumFrame = guest.configuration.bufferSize
        while receivedBytes < expectedBytes || sent < frames {
            // At most ~128 KiB (a few hundred segments) unreceived: no queue on the way overflows.
            if sent < frames && expectedBytes - receivedBytes < 128 << 10 {
                let segmented = sent % 2 == 1
                let payload = segmented ? maximumFrame - Self.headerLength - sent % 200 : 600 + sent % 800
                let frame = Self.tcpFrame(to: peer.mac, from: guest.mac, index: sent, payload: payload)
                let taken = guest.transmitOffloaded(count: 1) { _, buffer in
                    frame.withUnsafeBytes { buffer.copyMemory(from: $0) }
                    return (
                        frame.count,
                        segmented
                            ? .segmentation(headerLength: Self.headerLength, mss: Self.mss)
                            : .checksum(start: Self.l4Offset, field: Self.tcpChecksumOffset)
                    )
                }
                if taken == 1 {
                    sent += 1
                    expectedBytes += payload
                }
            }
            let n = peer.receive(maxFrames: 256, timeoutMilliseconds: sent < frames ? 0 : 1) { received in
                segments += 1
                let bytes = received.bytes
                guard TCPSegmentation.tcpOrUDPChecksumIsValid(bytes) else {
                    badChecksums += 1
                    return
                }
                guard let intact = Self.payloadIsIntact(bytes) else {
                    damaged += 1
                    return
                }
                receivedBytes += intact
            }
            _ = guest.receive(maxFrames: 256, timeoutMilliseconds: 0) { _ in }
            let now = Clock.monotonicNanoseconds()
            if n > 0 { lastProgress = now } else if Double(now - lastProgress) / 1e9 > stallSeconds { break }
        }
        var problems: [String] = []
        if receivedBytes != expectedBytes { problems.append("\(receivedBytes) of \(expectedBytes) payload bytes arrived") }
        if badChecksums > 0 { problems.append("\(badChecksums) segments with a wrong IP or TCP checksum") }
        if damaged > 0 { problems.append("\(damaged) segments with payload bytes out of place") }
        let refused = guest.offloadRequestsRefused - refusedBefore
        if refused > 0 { problems.append("\(refused) offload requests refused") }
        return (problems.isEmpty ? nil : problems.joined(separator: "; "), segments)
    }

    static func payloadByte(index: Int, offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 7 &+ index &* 13 &+ 3) }

    /// A TCP frame (PSH|ACK) whose checksum field holds the pseudo-header seed, as Linux leaves
    /// it for a device that offloads.
    static func tcpFrame(to destination: MACAddress, from source: MACAddress, index: Int, payload: Int) -> [UInt8] {
        let total = 20 + 20 + payload
        var ip: [UInt8] = [
            0x45, 0, UInt8(truncatingIfNeeded: total >> 8), UInt8(truncatingIfNeeded: total), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0,
            10, 0, 0, 1, 10, 0, 0, 2,
        ]
        let sum = ~ip.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress!, count: 20)) }
        ip[10] = UInt8(sum >> 8)
        ip[11] = UInt8(sum & 0xFF)
        var f = destination.bytes + source.bytes + [0x08, 0x00] + ip
        f += [0x9C, 0x40, 0x14, 0x51]  // ports 40000 -> 5201
        f += withUnsafeBytes(of: (UInt32(truncatingIfNeeded: index) << 16).bigEndian, Array.init)
        f += [0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
        f += (0..<payload).map { payloadByte(index: index, offset: $0) }
        let seed = f.withUnsafeBytes {
            InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress! + ipOffset + 12, count: 8) + 6 + UInt64(20 + payload))
        }
        f[tcpChecksumOffset] = UInt8(seed >> 8)
        f[tcpChecksumOffset + 1] = UInt8(seed & 0xFF)
        return f
    }

    /// The number of payload bytes of a received segment if each is the one its sequence number
    /// places there; nil if one is not (or it is not one of these TCP frames).
    static func payloadIsIntact(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= headerLength, bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 6 else { return nil }
        let sequence = (0..<4).reduce(0) { $0 << 8 | Int(bytes[38 + $1]) }
        let index = sequence >> 16, first = sequence & 0xFFFF
        for i in headerLength..<bytes.count where bytes[i] != payloadByte(index: index, offset: first + i - headerLength) {
            return nil
        }
        return bytes.count - headerLength
    }
}
