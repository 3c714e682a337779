/// When each phase of one migration ended, as either host saw it: what `npa status` and
/// `npa migrate --json` show. Times are monotonic nanoseconds, given by the host's thread.
struct MigrationTimeline: Equatable {
    struct Phase: Equatable {
        var name: String
        var milliseconds: Double
    }

    let startedAt: UInt64
    private(set) var phases: [Phase] = []
    private var phaseStartedAt: UInt64
    /// When the guest's device resumed at the destination (as this host learnt it).
    var committedAt: UInt64?
    var endedAt: UInt64?
    /// The destination never confirmed its announcement; forwarding ended on its deadline.
    private(set) var announcementMissing = false

    init(startedAt: UInt64) {
        self.startedAt = startedAt
        phaseStartedAt = startedAt
    }

    mutating func note(phase: String, endedAt now: UInt64) {
        phases.append(Phase(name: phase, milliseconds: Double(now &- phaseStartedAt) / 1e6))
        phaseStartedAt = now
    }

    mutating func noteAnnouncementMissing() { announcementMissing = true }

    /// Start to end (or to now, while under way).
    func totalMilliseconds(now: UInt64) -> Double { Double((endedAt ?? now) &- startedAt) / 1e6 }
}
