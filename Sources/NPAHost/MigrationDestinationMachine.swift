/// The destination host's side of one live migration, as a state machine that does no I/O:
/// messages from the source over the migration channel, the guest re-attaching, the end of the
/// announcement and deadlines are its events; what the host must do, in order, its actions. The
/// host's own checks (capacity, name, MAC, policy; decoding the device state as strictly as guest
/// input) happen in the host, whose verdicts come back as events.
///
/// The guest's one-time token is honoured only in `awaitingGuest`: an abort from the source, the
/// channel dropping or the deadline cancels it, so the source may resume the device safely once
/// it hears (or stops hearing) from this host. From the guest's arrival on, the device runs here:
/// frames the source forwards are delivered before any that reach this host directly, until the
/// source says forwarding is done (or a deadline passes).
///
/// Only the host thread touches it; times are given, never read.
struct MigrationDestinationMachine {
    enum State: Equatable {
        /// The channel is authenticated; the source has not said what it brings.
        case awaitingPrepare
        /// This host accepted: the guest's name and MAC are reserved here under `token`.
        case awaitingState(token: [UInt8])
        /// The device state was checked and waits for the guest to present the token.
        case awaitingGuest(token: [UInt8])
        /// The device runs here; frames forwarded by the source go first.
        case forwarding(announced: Bool)
        case completed
        case failed(String)
    }

    enum Action: Equatable {
        case sendPrepared(token: [UInt8])
        case sendRefused(String)
        case sendStateAccepted
        /// Drop the reservation and any pending arrival under the token.
        case cancelArrival
        /// The device runs here: queue frames that reach this host directly behind the forwarded
        /// ones, start announcing the guest's MAC, tell the source.
        case holdDirectFramesAndAnnounce
        case sendGuestArrived
        case sendAnnounced
        /// Deliver what the source forwarded, now, ahead of direct frames.
        case deliverForwardedFrames
        /// Forwarding is over: deliver the direct frames held meanwhile, in order, and stop holding.
        case endForwarding
        /// Switch the guest into passthrough here if policy and a free VF allow.
        case switchInIfAllowed
        case closeChannel
    }

    enum Event: Equatable {
        /// The source's `prepare`, with this host's verdict on it.
        case prepareAccepted(token: [UInt8])
        case prepareRefused(String)
        /// The source's device state, with this host's verdict on it (decoded and checked).
        case stateAccepted
        case stateRefused(String)
        /// The guest presented the token and its device was restored here.
        case guestArrived
        /// The source sent frames it held for the guest.
        case forwardedFrames
        /// The first round of the self-announcement went out.
        case announced
        case forwardingDone
        case abort(String)
        case channelLost(String)
    }

    typealias Refusal = MigrationEventRefusal

    let limits: MigrationSourceMachine.Limits
    private(set) var state: State = .awaitingPrepare
    private(set) var times: MigrationTimeline
    private(set) var deadline: UInt64

    init(limits: MigrationSourceMachine.Limits = .init(), now: UInt64) {
        self.limits = limits
        times = MigrationTimeline(startedAt: now)
        deadline = now + limits.phaseMilliseconds * 1_000_000
    }

    var phase: String {
        switch state {
        case .awaitingPrepare: "awaiting-prepare"
        case .awaitingState: "awaiting-state"
        case .awaitingGuest: "awaiting-guest"
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

    /// The token a re-attaching guest must present now, if any.
    var acceptedToken: [UInt8]? {
        if case .awaitingGuest(let token) = state { return token }
        return nil
    }

    mutating func handle(_ event: Event, now: UInt64) throws(Refusal) -> [Action] {
        switch (state, event) {
        case (.awaitingPrepare, .prepareAccepted(let token)):
            enter(.awaitingState(token: token), now)
            return [.sendPrepared(token: token)]
        case (.awaitingPrepare, .prepareRefused(let why)):
            return fail(why, now, reservation: false, tell: true)
        case (.awaitingState(let token), .stateAccepted):
            enter(.awaitingGuest(token: token), now)
            return [.sendStateAccepted]
        case (.awaitingState, .stateRefused(let why)):
            return fail(why, now, reservation: true, tell: true)
        case (.awaitingGuest, .guestArrived):
            times.committedAt = now
            enter(.forwarding(announced: false), now)
            return [.holdDirectFramesAndAnnounce, .sendGuestArrived]
        case (.forwarding, .forwardedFrames):
            return [.deliverForwardedFrames]
        case (.forwarding(false), .announced):
            state = .forwarding(announced: true)
            return [.sendAnnounced]
        case (.forwarding, .announced):
            return []
        case (.forwarding, .forwardingDone):
            return finish(now) + [.closeChannel]
        case (.forwarding, .channelLost), (.forwarding, .abort):
            // After the arrival the guest lives here whatever the source says: nothing more will
            // be forwarded, so what reached this host directly goes to the guest now.
            return finish(now) + [.closeChannel]
        case (.awaitingPrepare, .abort(let why)), (.awaitingPrepare, .channelLost(let why)):
            return fail("the source gave up: \(why)", now, reservation: false, tell: false)
        case (.awaitingState, .abort(let why)), (.awaitingState, .channelLost(let why)),
            (.awaitingGuest, .abort(let why)), (.awaitingGuest, .channelLost(let why)):
            // Confirm the abort (the source resumes the device once it hears it).
            return fail("the source gave up: \(why)", now, reservation: true, tell: event != .channelLost(why))
        default:
            throw .unexpected("\(event)", in: phase)
        }
    }

    /// The clock moved on: before the arrival a deadline cancels the reservation; while
    /// forwarding it ends forwarding (the source went quiet).
    mutating func tick(now: UInt64) -> [Action] {
        guard now >= deadline, !isFinished else { return [] }
        switch state {
        case .forwarding:
            return finish(now) + [.closeChannel]
        case .awaitingPrepare:
            return fail("timed out \(phase)", now, reservation: false, tell: true)
        default:
            return fail("timed out \(phase)", now, reservation: true, tell: true)
        }
    }

    private mutating func enter(_ next: State, _ now: UInt64) {
        times.note(phase: phase, endedAt: now)
        state = next
        var limit = limits.phaseMilliseconds
        // The source forwards for up to its grace after its own phase began: this side waits
        // for it longer than that, so a short phase limit never cuts a committed migration.
        if case .forwarding = next { limit = 2 * limits.phaseMilliseconds + limits.forwardingGraceMilliseconds }
        deadline = now + limit * 1_000_000
    }

    private mutating func finish(_ now: UInt64) -> [Action] {
        times.note(phase: phase, endedAt: now)
        state = .completed
        times.endedAt = now
        return [.endForwarding, .switchInIfAllowed]
    }

    private mutating func fail(_ why: String, _ now: UInt64, reservation: Bool, tell: Bool) -> [Action] {
        times.note(phase: phase, endedAt: now)
        state = .failed(why)
        times.endedAt = now
        var actions: [Action] = []
        if reservation { actions.append(.cancelArrival) }
        if tell { actions.append(.sendRefused(why)) }
        actions.append(.closeChannel)
        return actions
    }
}
