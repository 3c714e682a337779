import NPARingFormats

/// The device's TX offloads (vmxnet3 om 2 and 3), done on the host-private copy of a chain the
/// guest sent: checksum completion and TCP segmentation, both by the one codec in
/// NPARingFormats, which validates every request against the frame. What the device made it
/// vouches for to the receiver with the RX completion's checksum bits.
extension EmulatedDevice {
    /// A packet's offload request as its SOP descriptor states it; nothing in it is trusted.
    struct OffloadRequest {
        var mode: UInt32 = 0
        var headerLength = 0
        var mssOrChecksumOffset = 0

        init() {}

        @inline(__always)
        init(_ sop: VMXNET3Descriptor.Tx) {
            mode = sop.offloadMode
            headerLength = Int(sop.headerLength)
            mssOrChecksumOffset = Int(sop.mssOrChecksumOffset)
        }

        var isSegmentation: Bool { mode == VMXNET3Descriptor.OffloadMode.segmentation.rawValue }
        var isChecksum: Bool { mode == VMXNET3Descriptor.OffloadMode.checksum.rawValue }

        /// The segments a chain of `chainBytes` becomes if its request is what it says.
        func estimatedSegments(chainBytes: Int) -> Int {
            let mss = max(1, mssOrChecksumOffset)
            return max(1, (chainBytes - headerLength + mss - 1) / mss)
        }
    }

    enum SegmentStaging { case staged, refused, noRoom }

    /// Plans the TSO super-frame staged in `arena.superFrame` (`length` bytes) and writes its
    /// segments, after the first `skip` (already taken by the switch on an earlier pass), into
    /// the arena's next slots: each a frame of at most the MTU, IP and TCP checksums made.
    func stageSegments(of request: OffloadRequest, length: Int, skipping skip: Int, into arena: FrameArena) -> SegmentStaging {
        let frame = UnsafeRawBufferPointer(start: arena.superFrame, count: length)
        let plan: TCPSegmentation
        do {
            // Each segment's IP packet fits the MTU: MTU + 14, or + 18 with an 802.1Q tag.
            let tagged = EthernetFrame.u16(arena.superFrame, at: 12) == EthernetFrame.etherTypeVLAN
            plan = try TCPSegmentation(
                frame: frame, headerLength: request.headerLength, mss: request.mssOrChecksumOffset,
                maxSegmentFrame: maximumFrameLength - (tagged ? 0 : EthernetFrame.vlanTagLength))
        } catch {
            return .refused
        }
        guard plan.segmentCount - skip <= arena.capacity - arena.count else { return .noRoom }
        guard skip < plan.segmentCount else { return .staged }  // a guest that rewrote its chain
        var bits: UInt32 = 0
        for k in skip..<plan.segmentCount {
            let i = arena.count
            arena.lengths[i] = plan.writeSegment(k, from: frame, into: arena.slot(i))
            // Every segment has the same headers but for lengths, ids, sequence: one look does.
            if k == skip { bits = Self.checksumBits(ofMade: UnsafeRawPointer(arena.slot(i)), length: arena.lengths[i], l4Protocol: 6) }
            arena.checksumBits[i] = bits
            arena.count += 1
        }
        return .staged
    }

    /// Completes the checksum a csum request asks for in the frame staged at `frame`; returns
    /// the RX checksum bits it earns (0 when what was completed is not the frame's TCP or UDP
    /// checksum), or nil when the request does not lie in the frame.
    func completeChecksum(of request: OffloadRequest, in frame: UnsafeMutableRawPointer, length: Int) -> UInt32? {
        let start = request.headerLength
        let field = request.mssOrChecksumOffset
        guard TCPSegmentation.completeChecksum(in: UnsafeMutableRawBufferPointer(start: frame, count: length), start: start, field: field)
        else { return nil }
        guard let l4 = Self.transportHeader(UnsafeRawPointer(frame), length: length), l4.offset == start,
            (l4.proto == 6 && field == start + 16) || (l4.proto == 17 && field == start + 6)
        else { return 0 }
        return Self.checksumBits(ofMade: UnsafeRawPointer(frame), length: length, l4Protocol: l4.proto)
    }

    /// The RX completion bits for a frame the NIC marked as having made its checksums: those of
    /// its TCP or UDP header, 0 for anything else.
    static func checksumBits(ofMarked frame: UnsafeRawPointer, length: Int) -> UInt32 {
        guard let l4 = transportHeader(frame, length: length), l4.proto == 6 || l4.proto == 17 else { return 0 }
        return checksumBits(ofMade: frame, length: length, l4Protocol: l4.proto)
    }

    /// The RX completion bits for a frame whose TCP (6) or UDP (17) checksum the device made: IP
    /// version, protocol, `tuc`, and for IPv4 `ipc` when its header checksum is right too.
    static func checksumBits(ofMade frame: UnsafeRawPointer, length: Int, l4Protocol: UInt8) -> UInt32 {
        typealias Bits = VMXNET3Descriptor.RxCompletion.ChecksumBits
        var bits: Bits = [.transportValid, l4Protocol == 6 ? .tcp : .udp]
        let (ip, etherType) = networkHeader(frame, length: length)
        if etherType == EthernetFrame.etherTypeIPv6 {
            bits.insert(.ipv6)
        } else if etherType == EthernetFrame.etherTypeIPv4, length >= ip + 20 {
            bits.insert(.ipv4)
            let header = Int(frame.load(fromByteOffset: ip, as: UInt8.self) & 0x0F) * 4
            if header >= 20, length >= ip + header,
                InternetChecksum.fold(InternetChecksum.accumulate(frame + ip, count: header)) == 0xFFFF
            {
                bits.insert(.ipv4ChecksumValid)
            }
        } else {
            return 0
        }
        return bits.rawValue
    }

    /// Where the network header starts (after one 802.1Q tag, if any) and its EtherType.
    @inline(__always)
    static func networkHeader(_ frame: UnsafeRawPointer, length: Int) -> (offset: Int, etherType: UInt16) {
        let etherType = EthernetFrame.u16(frame, at: 12)
        guard etherType == EthernetFrame.etherTypeVLAN, length >= 18 else { return (EthernetFrame.headerLength, etherType) }
        return (EthernetFrame.headerLength + EthernetFrame.vlanTagLength, EthernetFrame.u16(frame, at: 16))
    }

    /// The offset and protocol of an IPv4 or IPv6 (no extension headers) frame's L4 header.
    static func transportHeader(_ frame: UnsafeRawPointer, length: Int) -> (offset: Int, proto: UInt8)? {
        let (ip, etherType) = networkHeader(frame, length: length)
        if etherType == EthernetFrame.etherTypeIPv4, length >= ip + 20 {
            return (ip + Int(frame.load(fromByteOffset: ip, as: UInt8.self) & 0x0F) * 4, frame.load(fromByteOffset: ip + 9, as: UInt8.self))
        }
        if etherType == EthernetFrame.etherTypeIPv6, length >= ip + 40 {
            return (ip + 40, frame.load(fromByteOffset: ip + 6, as: UInt8.self))
        }
        return nil
    }
}
