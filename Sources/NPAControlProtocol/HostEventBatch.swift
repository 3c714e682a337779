/// The host's answer to "the events after sequence S" (`ControlMessage.eventsRequest`): one page
/// of the events it still holds after S, oldest first, and where its log stands, so that a
/// reader learns both what it missed (the ring let it go) and whether more pages follow.
///
/// Wire form: oldestHeld (u64) | latest (u64) | capacity (u32) | count (u16) | events.
public struct HostEventBatch: Equatable, Sendable {
    /// The oldest sequence the host still holds (`latest + 1` while it holds none).
    public var oldestHeld: UInt64
    /// The newest sequence the host has recorded (0: none yet).
    public var latest: UInt64
    /// How many events the host keeps (`event_log_size`).
    public var capacity: UInt32
    /// Events after the requested sequence, oldest first; a page: maybe not all up to `latest`.
    public var events: [HostEvent]

    public init(oldestHeld: UInt64, latest: UInt64, capacity: UInt32, events: [HostEvent]) {
        self.oldestHeld = oldestHeld
        self.latest = latest
        self.capacity = capacity
        self.events = events
    }

    /// Events after `sequence` that the host let go before this page was asked for.
    public func lost(after sequence: UInt64) -> UInt64 {
        oldestHeld > sequence &+ 1 ? oldestHeld - sequence - 1 : 0
    }

    /// Where a reader that asked for the events after `sequence` goes on from.
    public func cursor(after sequence: UInt64) -> UInt64 {
        events.last?.sequence ?? max(sequence, oldestHeld &- 1)
    }

    /// The most events one reply carries is what fits in a control message.
    public static let maximumEncodedBytes = ControlMessage.maximumPayload - 64

    public func encode(into w: inout ByteWriter) {
        w.u64(oldestHeld)
        w.u64(latest)
        w.u32(capacity)
        w.u16(UInt16(min(events.count, Int(UInt16.max))))
        for e in events.prefix(Int(UInt16.max)) { e.encode(into: &w) }
    }

    public init(from r: inout ByteReader) throws {
        oldestHeld = try r.u64()
        latest = try r.u64()
        capacity = try r.u32()
        let count = Int(try r.u16())
        events = []
        for _ in 0..<count { events.append(try HostEvent(from: &r)) }
    }
}
