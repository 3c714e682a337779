/// The source host's side of one live migration, as a state machine that does no I/O: each event
/// (a message from the destination over the migration channel, the guest's answer on its control
/// connection, the end of a switch-out, a deadline) changes the state and returns the actions
/// the host must perform, in order; an event the state does not expect is refused and changes
/// nothing.
///
/// The line it never crosses twice is the *commit*: the guest's device resuming at the
/// destination. Before it, any failure rolls back (the device resumes here, switched back in if
/// it was in passthrough, and the frames held meanwhile are delivered first). After it, the
/// guest lives at the destination whatever happens next; what is left here is forwarding the
/// frames that still reach this host for it, then releasing its vNIC.
///
/// Who decides the commit: the guest's own answer (`moved` / `moveFailed`) or the destination's
/// `guestArrived`, whichever comes first. The destination honours the guest's token only while
/// its channel to this host is up and no abort came, so a timed-out source never resumes a
/// device the destination already runs: it asks the destination to abort and waits for the
/// answer (or for the channel to drop, which cancels the token there).
///
/// Only the host thread touches it; times are given, never read.
struct MigrationSourceMachine {
    /// What the destination gave for the guest to re-attach: its control socket and a
    /// one-time token.
    struct Ticket: Equatable {
        var token: [UInt8]
        var controlSocket: String
    }

    enum State: Equatable {
        /// The channel to the destination is being opened and authenticated.
        case connecting
        /// `prepare` was sent: the destination checks capacity, the name, the MAC and its policy.
        case preparing
        /// The destination accepted; the vNIC leaves its VF first (only an emulated vNIC moves).
        case switchingOut(Ticket)
        /// The device is stopped here and its state sent; frames for the guest are held here.
        case transferring(Ticket)
        /// The destination holds the state; the guest was told where to go.
        case awaitingGuest(Ticket)
        /// The source gave up waiting and asked the destination to abort; it resumes the device
        /// only once the destination confirms (or the channel drops, which cancels the token).
        case aborting(reason: String)
        /// Committed: the guest runs at the destination. Frames that still reach this host for it
        /// are forwarded until the destination announced the MAC and a grace period passed.
        case forwarding(announced: Bool)
        case completed
        /// Rolled back (or, after the commit, ended early): why.
        case failed(String)
    }

    /// What the host does for an event, in the order given.
    enum Action: Equatable {
        case sendPrepare
        /// Switch the vNIC out of passthrough with the existing switch machinery.
        case switchOut
        /// Stop the device, save and encode its state, hold every frame for it from now on, and
        /// send the state.
        case stopHoldAndSendState
        /// Raise DIC; the guest's next query gets a move offer with the ticket.
        case offerMove(Ticket)
        /// Send the frames held so far to the destination (repeated while forwarding).
        case forwardHeldFrames
        case sendForwardingDone
        /// Remove the vNIC here (the guest lives at the destination); what is still held is
        /// discarded: it was forwarded, or it arrived after forwarding ended.
        case releaseVNIC
        /// Roll back: resume the stopped device here and deliver what was held first.
        case resumeDevice
        /// Roll back: the vNIC was in passthrough when the migration began; switch it back in
        /// (once any switch-out under way has ended).
        case switchBackIn
        case sendAbort(String)
        case closeChannel
    }

    enum Event: Equatable {
        case connected
        case prepared(Ticket)
        /// The destination refused (or, while aborting, confirmed the abort).
        case refused(String)
        case switchedOut
        case switchOutFailed(String)
        case stateAccepted
        /// The guest told this host it re-attached at the destination.
        case guestMoved
        /// The guest could not re-attach at the destination; it stays here.
        case guestMoveFailed(String)
        /// The destination resumed the device for the guest.
        case guestArrived
        /// The destination's first self-announcement went out.
        case announced
        case channelLost(String)
        /// The guest's control connection closed (the guest process ended).
        case guestGone
    }

    typealias Refusal = MigrationEventRefusal

    /// How long each phase may take before the migration gives up (or, after the commit, stops
    /// forwarding), and how long frames are forwarded after the announcement.
    struct Limits: Equatable {
        var phaseMilliseconds: UInt64 = 5000
        var forwardingGraceMilliseconds: UInt64 = 200
        /// Forwarding also ends once the announcement went out, this host's wires drained
        /// (`tick`'s `wiresDrained`) and no frame reached this host for the guest for this long:
        /// the network has learnt the new port (a Linux bridge does on the first RARP frame), and
        /// the destination holds direct frames meanwhile, so every millisecond here is the
        /// guest's downtime (with the whole 200 ms grace, the migration soak's downtime p99 was
        /// ~300 ms; with 10 ms, under 20 ms, nothing lost or reordered).
        var forwardingQuietMilliseconds: UInt64 = 10
    }

    let wasPassthrough: Bool
    let limits: Limits
    private(set) var state: State = .connecting
    private(set) var times: MigrationTimeline
    /// When the current phase must end.
    private(set) var deadline: UInt64

    init(wasPassthrough: Bool, limits: Limits = Limits(), now: UInt64) {
        self.wasPassthrough = wasPassthrough
        self.limits = limits
        times = MigrationTimeline(startedAt: now)
        deadline = now + limits.phaseMilliseconds * 1_000_000
    }

    /// The phase a person reads in `npa status`.
    var phase: String {
        switch state {
        case .connecting: "connecting"
        case .preparing: "preparing"
        case .switchingOut: "switching-out"
        case .transferring: "transferring"
        case .awaitingGuest: "awaiting-guest"
        case .aborting: "aborting"
        case .forwarding: "forwarding"
        case .completed: "completed"
        case .failed: "failed"
        }
    }

    var isFinished: Bool {
        switch state {
        case .completed, .failed: true
        default: false
        }
    }

    /// True from the commit on: the guest's device runs at the destination.
    var isCommitted: Bool {
        switch state {
        case .forwarding, .completed: true
        case .failed: times.committedAt != nil
        default: false
        }
    }

    // MARK: Events

    mutating func handle(_ event: Event, now: UInt64) throws(Refusal) -> [Action] {
        switch (state, event) {
        case (.connecting, .connected):
            return enter(.preparing, now) + [.sendPrepare]
        case (.preparing, .prepared(let ticket)):
            if wasPassthrough { return enter(.switchingOut(ticket), now) + [.switchOut] }
            return enter(.transferring(ticket), now) + [.stopHoldAndSendState]
        case (.switchingOut(let ticket), .switchedOut):
            return enter(.transferring(ticket), now) + [.stopHoldAndSendState]
        case (.switchingOut, .switchOutFailed(let why)):
            return fail("switch-out failed: \(why)", now, stopped: false, abort: true, mayHaveSwitchedOut: true)
        case (.transferring(let ticket), .stateAccepted):
            return enter(.awaitingGuest(ticket), now) + [.offerMove(ticket)]

        // The commit, whichever witness speaks first.
        case (.awaitingGuest, .guestMoved), (.awaitingGuest, .guestArrived), (.aborting, .guestArrived), (.aborting, .guestMoved):
            times.committedAt = now
            return enter(.forwarding(announced: false), now, deadline: now + limits.phaseMilliseconds * 1_000_000)
                + [.forwardHeldFrames]
        case (.awaitingGuest, .announced), (.aborting, .announced):
            // The destination announces only a guest whose device resumed there: a commit too.
            times.committedAt = now
            _ = enter(.forwarding(announced: true), now, deadline: now + limits.forwardingGraceMilliseconds * 1_000_000)
            return [.forwardHeldFrames]
        case (.awaitingGuest, .guestMoveFailed(let why)):
            return fail("the guest could not re-attach at the destination: \(why)", now, stopped: true, abort: true)
        case (.aborting(let why), .refused), (.aborting(let why), .channelLost):
            return fail(why, now, stopped: true, abort: false)
        case (.aborting(let why), .guestMoveFailed):
            return fail(why, now, stopped: true, abort: false)

        case (.forwarding(false), .announced):
            // Still the forwarding phase: from here it ends a grace period later.
            state = .forwarding(announced: true)
            deadline = now + limits.forwardingGraceMilliseconds * 1_000_000
            return [.forwardHeldFrames]
        case (.forwarding, .guestMoved), (.forwarding, .guestArrived), (.forwarding, .guestGone):
            return []  // the other witness of the commit, or the guest's old connection closing
        case (.forwarding, .channelLost(let why)):
            // Nothing more can reach the destination: what is still held here is lost with the
            // channel, and counted when the vNIC is released.
            times.note(phase: phase, endedAt: now)
            state = .failed("the channel closed while forwarding: \(why)")
            times.endedAt = now
            return [.releaseVNIC, .closeChannel]

        // Before the commit, anything else that goes wrong rolls back.
        case (.connecting, .channelLost(let why)), (.preparing, .channelLost(let why)):
            return fail("the destination is unreachable: \(why)", now, stopped: false, abort: false)
        case (.preparing, .refused(let why)):
            return fail("the destination refused: \(why)", now, stopped: false, abort: false)
        case (.switchingOut, .refused(let why)), (.switchingOut, .channelLost(let why)):
            return fail("the destination gave up: \(why)", now, stopped: false, abort: false, mayHaveSwitchedOut: true)
        case (.transferring, .refused(let why)):
            return fail("the destination refused the device state: \(why)", now, stopped: true, abort: false)
        case (.transferring, .channelLost(let why)):
            return fail("the channel closed during the transfer: \(why)", now, stopped: true, abort: false)
        case (.awaitingGuest, .refused(let why)), (.awaitingGuest, .channelLost(let why)):
            // The destination cancels the token with the channel or its refusal: the guest's
            // answer (it will fail to re-attach) is not needed to know it stays here.
            return fail("the destination gave up before the guest arrived: \(why)", now, stopped: true, abort: false)
        case (_, .guestGone) where !isFinished:
            state = .failed("the guest went away")
            times.endedAt = now
            return [.sendAbort("the guest went away"), .closeChannel]
        default:
            throw .unexpected("\(event)", in: phase)
        }
    }

    /// The clock moved on: a phase past its deadline fails (before the commit) or ends
    /// forwarding (after it); while forwarding, held frames go out on every tick, and
    /// forwarding ends early once announced, quiet since `lastFrameOrAnnouncement`, and
    /// `wiresDrained` (every frame this host's wires held when the announcement came has been
    /// through the hold: `WireDrainFence`).
    mutating func tick(now: UInt64, lastFrameOrAnnouncement: UInt64? = nil, wiresDrained: Bool = true) -> [Action] {
        switch state {
        case .forwarding(let announced):
            // (A frame may have been forwarded after `now` was read: that is not quiet, not a wrap.)
            let quiet =
                announced && wiresDrained
                && lastFrameOrAnnouncement.map { now >= $0 && now - $0 >= limits.forwardingQuietMilliseconds * 1_000_000 } == true
            guard now >= deadline || quiet else { return [.forwardHeldFrames] }
            if !announced {
                // The destination never said it announced: forward what is here and end anyway,
                // bounded, rather than hold the vNIC here for ever.
                times.noteAnnouncementMissing()
            }
            times.note(phase: phase, endedAt: now)
            state = .completed
            times.endedAt = now
            return [.forwardHeldFrames, .sendForwardingDone, .releaseVNIC, .closeChannel]
        case .awaitingGuest:
            guard now >= deadline else { return [] }
            let why = "the guest did not re-attach at the destination in time"
            state = .aborting(reason: why)
            deadline = now + limits.phaseMilliseconds * 1_000_000
            return [.sendAbort(why)]
        case .aborting(let why):
            guard now >= deadline else { return [] }
            // Neither the destination nor the guest answered: close the channel, which
            // cancels the token there, and take the device back.
            return fail(why, now, stopped: true, abort: false)
        case .connecting, .preparing, .switchingOut, .transferring:
            guard now >= deadline else { return [] }
            var stopped = false
            var switching = false
            if case .transferring = state { stopped = true }
            if case .switchingOut = state { switching = true }
            return fail("timed out while \(phase)", now, stopped: stopped, abort: true, mayHaveSwitchedOut: switching || stopped)
        case .completed, .failed:
            return []
        }
    }

    // MARK: Helpers

    private mutating func enter(_ next: State, _ now: UInt64, deadline: UInt64? = nil) -> [Action] {
        times.note(phase: phase, endedAt: now)
        state = next
        self.deadline = deadline ?? now + limits.phaseMilliseconds * 1_000_000
        return []
    }

    /// Ends the migration before the commit. `stopped`: the device was stopped here and must
    /// resume; `mayHaveSwitchedOut`: a switch-out happened or is under way, so a vNIC that was
    /// in passthrough goes back.
    private mutating func fail(_ why: String, _ now: UInt64, stopped: Bool, abort: Bool, mayHaveSwitchedOut: Bool = false) -> [Action] {
        times.note(phase: phase, endedAt: now)
        state = .failed(why)
        times.endedAt = now
        var actions: [Action] = []
        if abort { actions.append(.sendAbort(why)) }
        if stopped { actions.append(.resumeDevice) }
        if wasPassthrough && (stopped || mayHaveSwitchedOut) { actions.append(.switchBackIn) }
        actions.append(.closeChannel)
        return actions
    }
}
