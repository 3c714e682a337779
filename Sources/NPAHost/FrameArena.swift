import Glibc

/// Host-private staging for one TX burst. Frames are copied here out of guest memory before
/// anything parses them, so a guest cannot change a header between the policy check and the
/// delivery (anti-spoofing would otherwise be a race). Allocated once; reused every burst.
///
/// It also remembers, per TX chain the burst consumed, where the chain ended and what became of
/// it, because completions are written only after the switch has taken the frames: a frame
/// the switch holds back (its receiver has no buffer yet) stays in the guest's TX ring.
///
/// A TSO chain is copied whole into `superFrame` first, then cut into segments, one slot each:
/// one chain, several frames (at most `TCPSegmentation.maximumSegments`, which `capacity` holds).
final class FrameArena {
    static let slotSize = 16384
    /// The longest TSO super-frame a guest may hand the device (NPA_TSO_MAX_FRAME).
    static let superFrameSize = 65535
    let capacity: Int
    let base: UnsafeMutableRawPointer
    let lengths: UnsafeMutablePointer<Int>
    /// Per frame: the RX completion checksum bits (`VMXNET3Descriptor.RxCompletion.ChecksumBits`)
    /// a receiver gets with it, non-zero when the device made or checked its checksums.
    let checksumBits: UnsafeMutablePointer<UInt32>
    var count = 0
    /// Per consumed chain: the ring position after it (`next << 1 | generation`), its EOP
    /// descriptor index, its outcome (`>= 0`: the first arena frame it became; `< 0`:
    /// `-1 - DropReason.rawValue`) and the arena frame count after it (so a chain with a good
    /// outcome became frames `outcome ..< frameEnd`: one, or a TSO chain's segments).
    let chainEnds: UnsafeMutablePointer<UInt32>
    let chainEOPs: UnsafeMutablePointer<UInt32>
    let chainOutcomes: UnsafeMutablePointer<Int32>
    let chainFrameEnds: UnsafeMutablePointer<Int32>
    var chains = 0
    /// Staging for one TSO chain, copied out of guest memory before it is planned and cut.
    let superFrame: UnsafeMutableRawPointer
    /// Scratch for one TX chain: (address, length) of up to 16 descriptors, read once each.
    let chainAddresses: UnsafeMutablePointer<UInt64>
    let chainLengths: UnsafeMutablePointer<UInt32>
    /// Destination ports of one routed frame.
    var destinations: UnsafeMutablePointer<Int32>
    private var destinationCapacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity * Self.slotSize, alignment: 64)
        lengths = .allocate(capacity: capacity)
        checksumBits = .allocate(capacity: capacity)
        chainFrameEnds = .allocate(capacity: capacity)
        superFrame = .allocate(byteCount: Self.superFrameSize + 1, alignment: 64)
        chainEnds = .allocate(capacity: capacity)
        chainEOPs = .allocate(capacity: capacity)
        chainOutcomes = .allocate(capacity: capacity)
        chainAddresses = .allocate(capacity: 32)
        chainLengths = .allocate(capacity: 32)
        destinationCapacity = 64
        destinations = .allocate(capacity: destinationCapacity)
    }

    /// Grows the destination list when ports are added (control path only).
    func ensureDestinations(_ ports: Int) {
        guard ports > destinationCapacity else { return }
        destinations.deallocate()
        destinationCapacity = ports * 2
        destinations = .allocate(capacity: destinationCapacity)
    }

    @inline(__always)
    func slot(_ i: Int) -> UnsafeMutableRawPointer { base + i &* Self.slotSize }

    deinit {
        base.deallocate()
        lengths.deallocate()
        checksumBits.deallocate()
        chainFrameEnds.deallocate()
        superFrame.deallocate()
        chainEnds.deallocate()
        chainEOPs.deallocate()
        chainOutcomes.deallocate()
        chainAddresses.deallocate()
        chainLengths.deallocate()
        destinations.deallocate()
    }
}
