/// When each vNIC that arrived on this host announces itself next: QEMU's self-announce
/// schedule (`qemu_announce_self`, net/announce.c, with the defaults of its migration parameters
/// announce-initial 50 ms, announce-max 550 ms, announce-rounds 5, announce-step 100 ms): the
/// first round at once, then a round after 50, 150, 250 and 350 ms — `initial + (k - 1) × step`
/// after round k, at most `max`. A round sends the guest's gratuitous RARP frames
/// (`SelfAnnounce`), one per VLAN, out of every wire of the host (`HostDataPath.announceSelf`).
///
/// A plain state machine: it keeps deadlines and says which vNICs are due; the data path builds
/// and sends the frames; the event loop bounds its epoll wait by `nextDeadline` and calls
/// `HostDataPath.serviceAnnouncements(now:)`. Never a sleep. Host thread only.
struct SelfAnnouncer {
    /// QEMU's AnnounceParameters, in milliseconds.
    struct Schedule: Equatable, Sendable {
        var initialMilliseconds: UInt64 = 50
        var maximumMilliseconds: UInt64 = 550
        var rounds = 5
        var stepMilliseconds: UInt64 = 100

        /// The wait after round `done` (1-based) before the next one (qemu_announce_timer_step).
        func delayNanoseconds(afterRound done: Int) -> UInt64 {
            let step = initialMilliseconds + UInt64(max(0, done - 1)) * stepMilliseconds
            return min(step, maximumMilliseconds) * 1_000_000
        }
    }

    var schedule = Schedule()
    /// The vNICs (by guest name) with rounds left: rounds done so far and when the next is due.
    private(set) var pending: [(name: String, roundsDone: Int, due: UInt64)] = []

    /// The earliest time a round is due, if any is.
    var nextDeadline: UInt64? { pending.map(\.due).min() }

    /// Starts (or restarts: a vNIC that arrives again begins afresh) the announcements of
    /// `name`; its first round is due `now`.
    mutating func start(_ name: String, now: UInt64) {
        cancel(name)
        pending.append((name, 0, now))
    }

    mutating func cancel(_ name: String) { pending.removeAll { $0.name == name } }

    /// The vNICs whose round is due at `now`, each counted as done and rescheduled (or retired
    /// after its last round).
    mutating func due(now: UInt64) -> [String] {
        var names: [String] = []
        for i in pending.indices where pending[i].due <= now {
            names.append(pending[i].name)
            pending[i].roundsDone += 1
            pending[i].due = now + schedule.delayNanoseconds(afterRound: pending[i].roundsDone)
        }
        pending.removeAll { $0.roundsDone >= schedule.rounds }
        return names
    }
}
