import NPAControlProtocol
import NPARingFormats
import NPAShell
import NPATestSupport
import Testing

/// TX offloads on the emulated path, end to end between two guests on one in-process host: a
/// TSO super-frame leaves the sender's shell as one vmxnet3 descriptor (om 3), the host's
/// device emulation cuts it, and the receiver gets MTU-sized segments whose checksums are good
/// and flagged so; a bogus request is dropped and counted; a shell without device offloads
/// sends the very same bytes, cut in software.
@Suite(.serialized) struct OffloadTests {
    /// The test frames' headers are 70 (IPv4 with an option) and 86 bytes (IPv6), with 32 bytes
    /// of TCP: an MSS of 1428 fits both in a 1500-byte MTU.
    static let mss = 1428

    /// Buffers that hold a 16 KB super-frame (the largest a vmxnet3 descriptor takes).
    func attach(_ host: TestHost, _ name: String, deviceOffloads: Bool = true) throws -> VirtualNIC {
        var c = VirtualNIC.Configuration(name: name)
        c.memoryBytes = 32 << 20
        c.ringSize = 256
        c.bufferSize = 16320
        c.deviceOffloads = deviceOffloads
        return try VirtualNIC.attach(hostSocket: host.socketPath, configuration: c)
    }

    /// The codec tests' super-frame, addressed from `from` to `to`, with a good IPv4 header
    /// checksum (what Linux hands a device) and the TCP checksum field holding the
    /// pseudo-header seed (CHECKSUM_PARTIAL), so the same bytes serve TSO and csum requests.
    static func superFrame(ipv6: Bool, payload: Int, from: MACAddress, to: MACAddress) -> (bytes: [UInt8], headerLength: Int) {
        var (f, headerLength) = TCPSegmentationTests.superFrame(ipv6: ipv6, vlan: false, payload: payload)
        f.replaceSubrange(0..<6, with: to.bytes)
        f.replaceSubrange(6..<12, with: from.bytes)
        let ip = 14
        let tcp = ipv6 ? ip + 40 : ip + Int(f[ip] & 0x0F) * 4
        let tcpLength = f.count - tcp
        var seed: UInt64
        if ipv6 {
            f[ip + 4] = UInt8(tcpLength >> 8)
            f[ip + 5] = UInt8(tcpLength & 0xFF)
            seed = f.withUnsafeBytes { InternetChecksum.accumulate($0.baseAddress! + ip + 8, count: 32) }
        } else {
            let total = f.count - ip
            f[ip + 2] = UInt8(total >> 8)
            f[ip + 3] = UInt8(total & 0xFF)
            f[ip + 10] = 0
            f[ip + 11] = 0
            let sum = ~f.withUnsafeBytes { InternetChecksum.fold(InternetChecksum.accumulate($0.baseAddress! + ip, count: tcp - ip)) }
            f[ip + 10] = UInt8(sum >> 8)
            f[ip + 11] = UInt8(sum & 0xFF)
            seed = f.withUnsafeBytes { InternetChecksum.accumulate($0.baseAddress! + ip + 12, count: 8) }
        }
        seed &+= 6 &+ UInt64(tcpLength)
        let folded = InternetChecksum.fold(seed)
        f[tcp + 16] = UInt8(folded >> 8)
        f[tcp + 17] = UInt8(folded & 0xFF)
        return (f, headerLength)
    }

    /// Sends `frame` with `offload`; returns how many frames the shell handed over.
    func send(_ nic: VirtualNIC, _ frame: [UInt8], _ offload: TransmitOffload) -> Int {
        nic.transmitOffloaded(count: 1) { _, buffer in
            buffer.copyBytes(from: frame)
            return (frame.count, offload)
        }
    }

    /// Receives `count` frames (or what came within the timeout), with their checksum flag.
    func receive(_ nic: VirtualNIC, count: Int) -> [(bytes: [UInt8], checksumValid: Bool)] {
        var got: [(bytes: [UInt8], checksumValid: Bool)] = []
        _ = eventually {
            nic.receive(maxFrames: count - got.count, timeoutMilliseconds: 50) { got.append((Array($0.bytes), $0.checksumValid)) }
            return got.count >= count
        }
        return got
    }

    static func sequence(_ frame: [UInt8], tcp: Int) -> UInt32 {
        frame[tcp + 4..<tcp + 8].reduce(0) { $0 << 8 | UInt32($1) }
    }

    @Test(arguments: [false, true])
    func aTSOSuperFrameArrivesAsSegmentsWithGoodFlaggedChecksums(ipv6: Bool) throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "tso-a"), b = try attach(host, "tso-b")
        let (frame, headerLength) = Self.superFrame(ipv6: ipv6, payload: 10_000, from: a.mac, to: b.mac)
        #expect(send(a, frame, .segmentation(headerLength: headerLength, mss: Self.mss)) == 1)
        let segments = receive(b, count: 8)
        #expect(segments.count == 8)  // 7 × 1428 + 4
        let tcp = ipv6 ? 54 : 14 + Int(frame[14] & 0x0F) * 4
        var payload: [UInt8] = []
        for (k, segment) in segments.enumerated() {
            #expect(segment.bytes.count == headerLength + min(Self.mss, 10_000 - k * Self.mss))
            #expect(segment.bytes.count - 14 <= 1500)
            #expect(segment.checksumValid)
            #expect(segment.bytes.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) })
            #expect(Self.sequence(segment.bytes, tcp: tcp) == Self.sequence(frame, tcp: tcp) &+ UInt32(k * Self.mss))
            payload += segment.bytes[headerLength...]
        }
        #expect(payload == Array(frame[headerLength...]))
        #expect(a.flush(timeoutMilliseconds: 10_000))  // one chain, one completion: the buffer is back
        let counters = try a.deviceCounters()
        #expect(counters["tx_frames"] == 8)
        #expect(counters["drop_bad_offload"] == 0)
        #expect(try b.deviceCounters()["rx_frames"] == 8)
    }

    @Test func aChecksumOffloadArrivesCompletedAndFlagged() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "csum-a"), b = try attach(host, "csum-b")
        let (frame, _) = Self.superFrame(ipv6: false, payload: 1000, from: a.mac, to: b.mac)
        let tcp = 14 + Int(frame[14] & 0x0F) * 4
        #expect(send(a, frame, .checksum(start: tcp, field: tcp + 16)) == 1)
        let got = receive(b, count: 1)
        #expect(got.count == 1)
        #expect(got.first?.checksumValid == true)
        #expect(got.first?.bytes.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) } == true)
        // Only the checksum field changed.
        if let bytes = got.first?.bytes {
            var expected = frame
            expected[tcp + 16] = bytes[tcp + 16]
            expected[tcp + 17] = bytes[tcp + 17]
            #expect(bytes == expected)
        }
    }

    /// A guest's TSO request that its frame does not bear out (the header length is not the
    /// headers', the MSS makes segments longer than the MTU, a checksum offset past the end) is
    /// completed, dropped and counted as `bad_offload`; nothing reaches the receiver, and the
    /// device keeps working for good frames.
    @Test func aBogusOffloadRequestIsDroppedAndCounted() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "evil-a"), b = try attach(host, "evil-b")
        let (frame, headerLength) = Self.superFrame(ipv6: false, payload: 5000, from: a.mac, to: b.mac)
        #expect(send(a, frame, .segmentation(headerLength: headerLength + 4, mss: Self.mss)) == 1)
        #expect(send(a, frame, .segmentation(headerLength: headerLength - 2, mss: Self.mss)) == 1)
        #expect(send(a, frame, .segmentation(headerLength: headerLength, mss: 1445)) == 1)  // one byte past the MTU (headers 70)
        #expect(send(a, frame, .segmentation(headerLength: headerLength, mss: 9000)) == 1)
        // A checksum field past the end the shell itself refuses (it never reaches the device).
        let (small, _) = Self.superFrame(ipv6: false, payload: 100, from: a.mac, to: b.mac)
        #expect(send(a, small, .checksum(start: 40, field: 1000)) == 1)
        #expect(a.offloadRequestsRefused == 1)
        #expect(a.flush(timeoutMilliseconds: 10_000))
        #expect(try eventually { try a.deviceCounters()["drop_bad_offload"] == 4 })
        #expect(b.receive(maxFrames: 16, timeoutMilliseconds: 100).isEmpty)
        #expect(send(a, frame, .segmentation(headerLength: headerLength, mss: Self.mss)) == 1)
        #expect(receive(b, count: 4).count == 4)  // 3 × 1428 + 716
        #expect(try a.deviceCounters()["drop_bad_offload"] == 4)
    }

    /// A shell whose device does no offloads (`deviceOffloads: false`, as for a plugin that
    /// declares none) cuts and checksums in software: the receiver gets the same bytes as from
    /// the device's segmentation, only without the device's checksum-valid flag.
    @Test(arguments: [false, true])
    func theShellsSoftwareFallbackSendsTheSameBytes(ipv6: Bool) throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "sw-a"), soft = try attach(host, "sw-soft", deviceOffloads: false), b = try attach(host, "sw-b")
        for sender in [a, soft] {
            let (frame, headerLength) = Self.superFrame(ipv6: ipv6, payload: 9000, from: sender.mac, to: b.mac)
            #expect(send(sender, frame, .segmentation(headerLength: headerLength, mss: Self.mss)) == 1)
        }
        let viaDevice = receive(b, count: 7)
        let viaShell = receive(b, count: 7)
        #expect(viaDevice.count == 7 && viaShell.count == 7)  // 6 × 1428 + 432
        for (d, s) in zip(viaDevice, viaShell) {
            #expect(Array(d.bytes[12...]) == Array(s.bytes[12...]))  // all but the source MAC
            #expect(d.checksumValid && !s.checksumValid)
        }
        #expect(try soft.deviceCounters()["tx_frames"] == 7)
        // A checksum request in software too.
        let (frame, _) = Self.superFrame(ipv6: ipv6, payload: 700, from: soft.mac, to: b.mac)
        let tcp = ipv6 ? 54 : 14 + Int(frame[14] & 0x0F) * 4
        #expect(send(soft, frame, .checksum(start: tcp, field: tcp + 16)) == 1)
        #expect(receive(b, count: 1).first?.bytes.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) } == true)
        #expect(soft.offloadRequestsRefused == 0)
    }

    /// Writes TX descriptor `slot` of queue 0 straight into guest memory, with an offload
    /// request in it, as a hostile (or any non-NPA vmxnet3) driver would.
    func writeTx(
        _ nic: VirtualNIC, slot: Int, address: UInt64, length: UInt32, eop: Bool, mode: VMXNET3Descriptor.OffloadMode,
        headerLength: UInt32, mssOrOffset: UInt32
    ) {
        let gm = nic.guestMemoryForTesting
        let ring = gm.loadU64(gpa: nic.queueTableGPAForTesting + VMXNET3.TxQueueDesc.txRingBasePA)!
        let d = ring + UInt64(slot) * 16
        let desc = VMXNET3Descriptor.Tx(
            address: address, length: length, generation: 1, endOfPacket: eop, offloadMode: mode, headerLength: headerLength,
            mssOrChecksumOffset: mssOrOffset)
        gm.storeU64(gpa: d, address)
        gm.storeU32(gpa: d + 12, desc.dword3)
        gm.storeU32(gpa: d + 8, desc.dword2)
    }

    /// Raw descriptors: a checksum offset past the frame, the encapsulation mode (om 1), and a
    /// TSO chain longer than any super-frame are each dropped and counted; a TSO super-frame
    /// spread over two descriptors (vmxnet3 allows chains; the NPA plugin never makes them) is
    /// cut like one in a single buffer.
    @Test func rawOffloadDescriptorsAreValidatedByTheDevice() throws {
        let host = try TestHost()
        defer { host.stop() }
        let evil = try attach(host, "raw-evil"), b = try attach(host, "raw-b")
        let (frame, headerLength) = Self.superFrame(ipv6: false, payload: 6000, from: evil.mac, to: b.mac)
        let at: UInt64 = 24 << 20
        let gm = evil.guestMemoryForTesting
        gm.pointer(gpa: at, length: UInt64(frame.count))!.copyMemory(from: frame, byteCount: frame.count)
        let length = UInt32(frame.count)
        // A frame the MTU allows, for the two non-TSO requests.
        let (small, _) = Self.superFrame(ipv6: false, payload: 500, from: evil.mac, to: b.mac)
        let smallAt: UInt64 = 26 << 20
        gm.pointer(gpa: smallAt, length: UInt64(small.count))!.copyMemory(from: small, byteCount: small.count)
        let tcp = UInt32(14 + Int(small[14] & 0x0F) * 4)
        let smallLength = UInt32(small.count)
        writeTx(
            evil, slot: 0, address: smallAt, length: smallLength, eop: true, mode: .checksum, headerLength: tcp, mssOrOffset: smallLength)
        writeTx(
            evil, slot: 1, address: smallAt, length: smallLength, eop: true, mode: .encapsulated, headerLength: tcp, mssOrOffset: tcp + 16)
        for i in 0..<5 {  // 5 × 16000 bytes: past the 65535 a super-frame may be
            writeTx(
                evil, slot: 2 + i, address: at, length: 16000, eop: i == 4, mode: .segmentation, headerLength: UInt32(headerLength),
                mssOrOffset: UInt32(Self.mss))
        }
        writeTx(
            evil, slot: 7, address: at, length: 1000, eop: false, mode: .segmentation, headerLength: UInt32(headerLength),
            mssOrOffset: UInt32(Self.mss))
        writeTx(evil, slot: 8, address: at + 1000, length: length - 1000, eop: true, mode: .none, headerLength: 0, mssOrOffset: 0)
        evil.registerPageForTesting.storeBytes(of: 9, toByteOffset: VMXNET3.RegisterPage.txProducer(0), as: UInt32.self)
        evil.kickForTesting()
        let segments = receive(b, count: 5)  // 4 × 1428 + 288
        #expect(segments.count == 5)
        #expect(segments.allSatisfy { $0.checksumValid && $0.bytes.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) } })
        #expect(segments.reduce([UInt8]()) { $0 + $1.bytes[headerLength...] } == Array(frame[headerLength...]))
        #expect(
            try eventually {
                let c = try evil.deviceCounters()
                return c["drop_bad_offload"] == 2 && c["drop_frame_too_long"] == 1 && c["tx_frames"] == 5
            }, "\((try? evil.deviceCounters())?.filter { $0.value != 0 } ?? [:])")
    }

    /// A receiver with fewer buffers than a burst of super-frames has segments: the switch stops
    /// part-way through a TSO chain, the chain stays in the sender's ring, and the next pass
    /// resumes after the segments already delivered: every segment arrives once, in order.
    @Test func aSuperFrameTheReceiverTakesInPartsArrivesOnceAndInOrder() throws {
        let host = try TestHost()
        defer { host.stop() }
        let a = try attach(host, "part-a")
        var c = VirtualNIC.Configuration(name: "part-b")
        c.ringSize = 32  // 31 buffers posted: a super-frame of 10 segments does not fit three times
        c.memoryBytes = 8 << 20
        let b = try VirtualNIC.attach(hostSocket: host.socketPath, configuration: c)
        let payload = 14_280  // 10 segments of 1428
        let (frame, headerLength) = Self.superFrame(ipv6: false, payload: payload, from: a.mac, to: b.mac)
        let tcp = 14 + Int(frame[14] & 0x0F) * 4
        let first = Self.sequence(frame, tcp: tcp)
        for k in 0..<6 {
            var f = frame
            let seq = first &+ UInt32(k * payload)
            for j in 0..<4 { f[tcp + 4 + j] = UInt8(truncatingIfNeeded: seq >> (24 - 8 * j)) }
            #expect(send(a, f, .segmentation(headerLength: headerLength, mss: Self.mss)) == 1)
        }
        // b takes nothing until the switch has stopped part-way (it has posted 31 buffers for
        // 60 segments): waiting on that counter, not on time, makes the stop certain.
        #expect(try eventually { (try b.deviceCounters()["sender_holds"] ?? 0) >= 1 })
        let got = receive(b, count: 60)
        #expect(got.count == 60)
        for (n, segment) in got.enumerated() {
            #expect(Self.sequence(segment.bytes, tcp: tcp) == first &+ UInt32(n * Self.mss), "segment \(n)")
            #expect(segment.bytes.withUnsafeBytes { TCPSegmentation.tcpOrUDPChecksumIsValid($0) })
        }
        #expect(b.receive(maxFrames: 16, timeoutMilliseconds: 100).isEmpty)  // nothing twice
        #expect(a.flush(timeoutMilliseconds: 10_000))
        #expect(try a.deviceCounters()["tx_frames"] == 60)
        #expect(try b.deviceCounters()["drop_no_buffers"] == 0)
    }
}
