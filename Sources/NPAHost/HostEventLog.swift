import Glibc
import NPAControlProtocol
import NPASystem

/// The host's event log: the last `capacity` control events (`HostEvent`), in a ring, for
/// `npa events`. The roles record into it where control events already happen — the control
/// server (attach, detach, refusals, plugin faults), the PF driver (switch phases, VF resets),
/// the emulated device (a guest's faults, its error state), the migration coordinator (phases) —
/// never per frame on the data path. Recording reads two vDSO clocks and stores one value: no
/// system call, no lock.
///
/// It owns the ring and the sequence counter and touches nothing else. Host thread only (the
/// admin socket's readers are served on it too), so it needs no lock. Sequences start at 1, go
/// up by one per event and are never reused while the host runs; the oldest events are let go
/// when the ring is full, and a reader learns how many it missed from `oldestHeld`.
final class HostEventLog {
    /// How many events are kept (`event_log_size`).
    let capacity: Int
    /// Slot `(sequence - 1) % capacity` holds the event of that sequence.
    private var ring: [HostEvent] = []
    private var nextSequence: UInt64 = 1
    /// Every event recorded since the host started, by kind (the metrics' `npa_events_total`):
    /// unlike the ring, never forgets.
    private(set) var recordedByKind: [HostEvent.Kind: UInt64] = [:]
    private let startedAt: UInt64

    init(capacity: Int) {
        precondition(capacity >= 1, "the event log keeps at least one event")
        self.capacity = capacity
        startedAt = Clock.monotonicNanoseconds()
    }

    /// The newest sequence recorded (0: none yet).
    var latest: UInt64 { nextSequence - 1 }
    /// The oldest sequence still held (`latest + 1` while none is).
    var oldestHeld: UInt64 { nextSequence - UInt64(ring.count) }

    /// Records one event now. `detail` is cut to `HostEvent.maximumDetailBytes` and `vnic` to a
    /// guest name's length (on a character boundary): a guest's long reason, or the name in an
    /// attach refused for it, cannot make an event outgrow a reply page.
    func record(_ kind: HostEvent.Kind, vnic: String? = nil, _ detail: String) {
        let event = HostEvent(
            sequence: nextSequence, uptimeNanoseconds: Clock.monotonicNanoseconds() &- startedAt, wallClockNanoseconds: Self.wallClock(),
            kind: kind, vnic: vnic.map { Self.cut($0, to: GuestName.maximumLength) },
            detail: Self.cut(detail, to: HostEvent.maximumDetailBytes))
        if ring.count < capacity {
            ring.append(event)
        } else {
            ring[Int((nextSequence - 1) % UInt64(capacity))] = event
        }
        nextSequence += 1
        recordedByKind[kind, default: 0] &+= 1
    }

    /// Why a request for events is refused.
    enum Refusal: Error, Equatable, CustomStringConvertible {
        case fromTheFuture(requested: UInt64, latest: UInt64)

        var description: String {
            switch self {
            case .fromTheFuture(let requested, let latest):
                "no events after sequence \(requested): the newest is \(latest) (was the host restarted? start again from 0)"
            }
        }
    }

    /// The events held after `sequence`, oldest first, as many as fit in `maximumBytes` of the
    /// reply (at least one, however long), with where the log stands.
    func events(after sequence: UInt64, maximumBytes: Int = HostEventBatch.maximumEncodedBytes) -> Result<HostEventBatch, Refusal> {
        guard sequence <= latest else { return .failure(.fromTheFuture(requested: sequence, latest: latest)) }
        var page: [HostEvent] = []
        var bytes = 0
        var next = max(sequence + 1, oldestHeld)
        while next <= latest {
            let event = ring[Int((next - 1) % UInt64(capacity))]
            bytes += event.encodedSize
            if bytes > maximumBytes && !page.isEmpty { break }
            page.append(event)
            next += 1
        }
        return .success(HostEventBatch(oldestHeld: oldestHeld, latest: latest, capacity: UInt32(clamping: capacity), events: page))
    }

    /// CLOCK_REALTIME, read through the vDSO like the monotonic clock.
    private static func wallClock() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    private static func cut(_ text: String, to bytes: Int) -> String {
        guard text.utf8.count > bytes else { return text }
        var kept = ""
        for c in text {
            if kept.utf8.count + c.utf8.count > bytes - 3 { break }
            kept.append(c)
        }
        return kept + "..."
    }
}
