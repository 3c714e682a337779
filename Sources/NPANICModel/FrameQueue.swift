import NPASystem

/// A single-producer, single-consumer queue of frames in host memory: the PF's receive queue,
/// filled by the NIC engine (producer) and emptied by the host's PF driver (consumer) on another
/// thread. Slots are allocated once; a full queue drops and counts (it never blocks the engine).
///
/// Indices are free-running UInt32s in their own cache lines; the producer publishes `tail` with
/// a release store after writing the slot, the consumer publishes `head` the same way.
public final class FrameQueue: @unchecked Sendable {
    public static let slotSize = 9216
    public let capacity: UInt32
    private let slots: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<UInt32>
    private let indices: UnsafeMutableRawPointer  // head at 0, tail at 64
    public private(set) var drops: UInt64 = 0
    /// Signalled after a push when the consumer said it sleeps (`consumerSleeping`).
    public let wake: EventNotifier

    public init(capacity: UInt32) {
        wake = try! EventNotifier()
        precondition(capacity > 0 && capacity & (capacity - 1) == 0)
        self.capacity = capacity
        slots = .allocate(byteCount: Int(capacity) * Self.slotSize, alignment: 64)
        lengths = .allocate(capacity: Int(capacity))
        indices = .allocate(byteCount: 128, alignment: 64)
        indices.initializeMemory(as: UInt8.self, repeating: 0, count: 128)
    }

    deinit {
        slots.deallocate()
        lengths.deallocate()
        indices.deallocate()
    }

    /// A slot's length word carries, in its top bit, the producer's "checksums valid" mark.
    private static let checksumValidBit: UInt32 = 1 << 31

    /// Producer side. False (and counted) when the queue is full or the frame too long.
    /// `checksumValid`: the producer made (or checked) the frame's IP and TCP/UDP checksums.
    @discardableResult
    public func push(_ frame: UnsafeRawPointer, length: Int, checksumValid: Bool = false) -> Bool {
        let head = SharedWord.loadAcquire(indices)
        let tail = SharedWord.loadRelaxed(indices + 64)
        guard tail &- head < capacity, length <= Self.slotSize else {
            drops &+= 1
            return false
        }
        let i = Int(tail & (capacity - 1))
        (slots + i * Self.slotSize).copyMemory(from: frame, byteCount: length)
        lengths[i] = UInt32(length) | (checksumValid ? Self.checksumValidBit : 0)
        SharedWord.storeRelease(indices + 64, tail &+ 1)
        // Publish, then read the consumer's sleep flag (it announces, fences, re-checks).
        MemoryFence.sequentiallyConsistent()
        if SharedWord.loadRelaxed(indices + 4) != 0 { wake.signal() }
        return true
    }

    /// Consumer side: announce sleep (true) or wakefulness; after announcing sleep the consumer
    /// must check `isEmpty` once more before it blocks on `wake`.
    public func setConsumerSleeping(_ sleeping: Bool) {
        SharedWord.storeRelaxed(indices + 4, sleeping ? 1 : 0)
        if sleeping { MemoryFence.sequentiallyConsistent() }
    }

    /// Consumer side: hands up to `max` frames to `body` (valid only during the call).
    @discardableResult
    public func pop(max: Int, _ body: (UnsafeRawPointer, Int) -> Void) -> Int {
        pop(
            max: max,
            while: { frame, length in
                body(frame, length)
                return true
            })
    }

    /// Consumer side, with backpressure: hands up to `max` frames to `body` in order and stops
    /// at the first one `body` does not take (returns false for); that frame stays at the head
    /// for the next call. Returns the frames taken.
    @discardableResult
    public func pop(max: Int, while body: (UnsafeRawPointer, Int) -> Bool) -> Int {
        popMarked(max: max, while: { frame, length, _ in body(frame, length) })
    }

    /// `pop(max:while:)`, with each frame's "checksums valid" mark (see `push`).
    @discardableResult
    public func popMarked(max: Int, while body: (UnsafeRawPointer, Int, Bool) -> Bool) -> Int {
        var head = SharedWord.loadRelaxed(indices)
        let tail = SharedWord.loadAcquire(indices + 64)
        var n = 0
        while head != tail && n < max {
            let i = Int(head & (capacity - 1))
            let word = lengths[i]
            guard body(slots + i * Self.slotSize, Int(word & ~Self.checksumValidBit), word & Self.checksumValidBit != 0) else { break }
            head &+= 1
            n += 1
        }
        SharedWord.storeRelease(indices, head)
        return n
    }

    /// Producer side: how many pushes would find a free slot now.
    @inline(__always)
    public var freeSlots: UInt32 { capacity &- (SharedWord.loadRelaxed(indices + 64) &- SharedWord.loadAcquire(indices)) }

    /// Producer side: true if a push would find a free slot now.
    @inline(__always)
    public var hasRoom: Bool { SharedWord.loadRelaxed(indices + 64) &- SharedWord.loadAcquire(indices) < capacity }

    /// Frames pushed so far, and frames popped so far (free-running, wrapping at 2^32): once
    /// `popped` has caught up with a value `pushed` had, every frame pushed before is consumed.
    public var pushed: UInt32 { SharedWord.loadAcquire(indices + 64) }
    public var popped: UInt32 { SharedWord.loadAcquire(indices) }

    public var isEmpty: Bool { SharedWord.loadAcquire(indices) == SharedWord.loadAcquire(indices + 64) }
}
