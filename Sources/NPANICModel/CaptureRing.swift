import NPASystem

/// A bounded single-producer, single-consumer ring of frame copies for a packet capture: the
/// producer is one data path (the host's thread copying what device emulation sees, or the NIC
/// engine mirroring a VF's frames under the NIC's lock), the consumer is the capture's writer
/// thread. Each slot keeps a frame's bytes (up to `snapLength`), its length on the wire, which
/// way it went and when (monotonic nanoseconds, taken by the producer).
///
/// Built like `FrameQueue` (slots allocated once, free-running UInt32 indices in their own cache
/// lines, release on publish, acquire on read); unlike it, a full ring never signals nor waits:
/// the copy is dropped and counted (`drops`, the producer's own counter), so a writer that falls
/// behind costs the data path nothing but the copy it did not make.
public final class CaptureRing: @unchecked Sendable {
    /// Which way a frame went, seen from the guest.
    public enum Direction: UInt32, Sendable {
        /// The guest received it.
        case received = 0
        /// The guest sent it.
        case transmitted = 1
    }

    /// The most of a frame a slot keeps: the NIC's largest frame fits whole.
    public static let snapLength = 9216
    public let capacity: UInt32
    private let slots: UnsafeMutableRawPointer
    /// Per slot: captured length, original length, direction (3 × UInt32), timestamp (UInt64).
    private let metadata: UnsafeMutableRawPointer
    private let indices: UnsafeMutableRawPointer  // head at 0, tail at 64
    private static let metadataStride = 24
    /// Copies the producer found no room for. Written by the producer only; a reader on another
    /// thread may see a slightly old value.
    public private(set) var drops: UInt64 = 0

    public init(capacity: UInt32) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0)
        self.capacity = capacity
        slots = .allocate(byteCount: Int(capacity) * Self.snapLength, alignment: 64)
        metadata = .allocate(byteCount: Int(capacity) * Self.metadataStride, alignment: 64)
        indices = .allocate(byteCount: 128, alignment: 64)
        indices.initializeMemory(as: UInt8.self, repeating: 0, count: 128)
    }

    deinit {
        slots.deallocate()
        metadata.deallocate()
        indices.deallocate()
    }

    /// Producer side: copies `frame` (truncated to `snapLength`) with its direction and time.
    /// False, and counted in `drops`, when the ring is full.
    @inline(__always)
    @discardableResult
    public func push(_ frame: UnsafeRawPointer, length: Int, direction: Direction, timestamp: UInt64) -> Bool {
        // Acquire: the consumer is done with a slot before it publishes the head past it.
        let head = SharedWord.loadAcquire(indices)
        let tail = SharedWord.loadRelaxed(indices + 64)
        guard tail &- head < capacity else {
            drops &+= 1
            return false
        }
        let i = Int(tail & (capacity &- 1))
        let captured = min(length, Self.snapLength)
        (slots + i &* Self.snapLength).copyMemory(from: frame, byteCount: captured)
        let m = metadata + i &* Self.metadataStride
        m.storeBytes(of: UInt32(captured), as: UInt32.self)
        m.storeBytes(of: UInt32(truncatingIfNeeded: length), toByteOffset: 4, as: UInt32.self)
        m.storeBytes(of: direction.rawValue, toByteOffset: 8, as: UInt32.self)
        m.storeBytes(of: timestamp, toByteOffset: 16, as: UInt64.self)
        // Release: the slot's bytes and metadata are visible before the new tail.
        SharedWord.storeRelease(indices + 64, tail &+ 1)
        return true
    }

    /// One captured frame as the consumer sees it (valid only during `pop`'s call of its body).
    public struct Record {
        public let bytes: UnsafeRawBufferPointer
        public let originalLength: Int
        public let direction: Direction
        public let timestamp: UInt64
    }

    /// Consumer side: the timestamp of the oldest copy, if any (to merge two rings in time order).
    public var oldestTimestamp: UInt64? {
        let head = SharedWord.loadRelaxed(indices)
        guard head != SharedWord.loadAcquire(indices + 64) else { return nil }
        return (metadata + Int(head & (capacity &- 1)) &* Self.metadataStride).load(fromByteOffset: 16, as: UInt64.self)
    }

    /// Consumer side: hands up to `max` copies to `body`, oldest first, and frees their slots.
    /// Returns how many it handed over.
    @discardableResult
    public func pop(max: Int, _ body: (Record) -> Void) -> Int {
        var head = SharedWord.loadRelaxed(indices)
        let tail = SharedWord.loadAcquire(indices + 64)
        var n = 0
        while head != tail && n < max {
            let i = Int(head & (capacity &- 1))
            let m = metadata + i &* Self.metadataStride
            let captured = Int(m.load(as: UInt32.self))
            body(
                Record(
                    bytes: UnsafeRawBufferPointer(start: slots + i &* Self.snapLength, count: captured),
                    originalLength: Int(m.load(fromByteOffset: 4, as: UInt32.self)),
                    direction: Direction(rawValue: m.load(fromByteOffset: 8, as: UInt32.self)) ?? .received,
                    timestamp: m.load(fromByteOffset: 16, as: UInt64.self)))
            head &+= 1
            n += 1
        }
        // Release: this side's reads of the slots happen before the producer reuses them.
        SharedWord.storeRelease(indices, head)
        return n
    }

    /// Consumer side: whether nothing is waiting.
    public var isEmpty: Bool { SharedWord.loadRelaxed(indices) == SharedWord.loadAcquire(indices + 64) }
}
