import Testing

@testable import NPAHost

/// The two sides of a migration as state machines on their own: the happy paths, every
/// rollback before the commit, and what happens after it — without sockets, threads or clocks.
@Suite struct MigrationMachineTests {
    typealias Source = MigrationSourceMachine
    typealias Destination = MigrationDestinationMachine
    static let ticket = Source.Ticket(token: Array(repeating: 7, count: 16), controlSocket: "/run/b.sock")
    static let ms: UInt64 = 1_000_000

    /// Drives a source through `events`, one millisecond apart; returns every action in order.
    static func run(_ m: inout Source, _ events: [Source.Event], from start: UInt64 = 0) throws -> [Source.Action] {
        var actions: [Source.Action] = []
        for (i, e) in events.enumerated() { actions += try m.handle(e, now: start + UInt64(i + 1) * ms) }
        return actions
    }

    @Test func anEmulatedGuestMovesAndTheSourceForwardsUntilTheGraceEnds() throws {
        var m = Source(wasPassthrough: false, now: 0)
        let actions = try Self.run(&m, [.connected, .prepared(Self.ticket), .stateAccepted, .guestArrived, .guestMoved, .announced])
        #expect(actions == [.sendPrepare, .stopHoldAndSendState, .offerMove(Self.ticket), .forwardHeldFrames, .forwardHeldFrames])
        #expect(m.isCommitted)
        #expect(m.tick(now: 7 * Self.ms) == [.forwardHeldFrames])
        let end = 6 * Self.ms + m.limits.forwardingGraceMilliseconds * Self.ms
        #expect(m.tick(now: end) == [.forwardHeldFrames, .sendForwardingDone, .releaseVNIC, .closeChannel])
        #expect(m.state == .completed)
        #expect(m.times.phases.map(\.name) == ["connecting", "preparing", "transferring", "awaiting-guest", "forwarding"])
    }

    @Test func forwardingEndsOnceAnnouncedAndQuiet() throws {
        var m = Source(
            wasPassthrough: false,
            limits: .init(phaseMilliseconds: 5000, forwardingGraceMilliseconds: 200, forwardingQuietMilliseconds: 10),
            now: 0)
        _ = try Self.run(&m, [.connected, .prepared(Self.ticket), .stateAccepted, .guestArrived])
        let quiet = m.limits.forwardingQuietMilliseconds * Self.ms
        // Not announced yet: quiet does not count.
        #expect(m.tick(now: 100 * Self.ms, lastFrameOrAnnouncement: 0) == [.forwardHeldFrames])
        _ = try m.handle(.announced, now: 100 * Self.ms)
        #expect(m.tick(now: 100 * Self.ms + quiet - 1, lastFrameOrAnnouncement: 100 * Self.ms) == [.forwardHeldFrames])
        // A frame forwarded later starts the quiet period again.
        #expect(m.tick(now: 100 * Self.ms + quiet, lastFrameOrAnnouncement: 105 * Self.ms) == [.forwardHeldFrames])
        // A frame forwarded after the tick's clock was read is activity, not a long silence.
        #expect(m.tick(now: 105 * Self.ms + quiet - 1, lastFrameOrAnnouncement: 106 * Self.ms + quiet) == [.forwardHeldFrames])
        // Quiet, but a wire of this host may still hold frames for the guest: not yet.
        #expect(m.tick(now: 105 * Self.ms + quiet, lastFrameOrAnnouncement: 105 * Self.ms, wiresDrained: false) == [.forwardHeldFrames])
        #expect(m.tick(now: 105 * Self.ms + quiet, lastFrameOrAnnouncement: 105 * Self.ms).contains(.sendForwardingDone))
        #expect(m.state == .completed)
    }

    /// Wires that never drain (an engine stuck, a fence that cannot pass) hold forwarding only up
    /// to the grace period after the announcement.
    @Test func undrainedWiresHoldForwardingOnlyUntilTheGracePeriodEnds() throws {
        var m = Source(
            wasPassthrough: false,
            limits: .init(phaseMilliseconds: 5000, forwardingGraceMilliseconds: 200, forwardingQuietMilliseconds: 10),
            now: 0)
        _ = try Self.run(&m, [.connected, .prepared(Self.ticket), .stateAccepted, .announced])
        let announcedAt = m.times.committedAt ?? 0
        #expect(m.tick(now: announcedAt + 199 * Self.ms, lastFrameOrAnnouncement: 0, wiresDrained: false) == [.forwardHeldFrames])
        #expect(
            m.tick(now: announcedAt + 200 * Self.ms, lastFrameOrAnnouncement: 0, wiresDrained: false) == [
                .forwardHeldFrames, .sendForwardingDone, .releaseVNIC, .closeChannel,
            ])
    }

    @Test func aGuestInPassthroughSwitchesOutFirstAndBackInWhenTheDestinationGivesUp() throws {
        var m = Source(wasPassthrough: true, now: 0)
        #expect(try Self.run(&m, [.connected, .prepared(Self.ticket)]) == [.sendPrepare, .switchOut])
        #expect(try m.handle(.switchedOut, now: 3 * Self.ms) == [.stopHoldAndSendState])
        #expect(try m.handle(.refused("no VF"), now: 4 * Self.ms) == [.resumeDevice, .switchBackIn, .closeChannel])
        #expect(m.state == .failed("the destination refused the device state: no VF"))
        #expect(!m.isCommitted)
    }

    @Test func everyFailureBeforeTheCommitRollsBack() throws {
        // (events that lead there, the failing event, the actions expected)
        let cases: [([Source.Event], Source.Event, [Source.Action])] = [
            ([], .channelLost("refused"), [.closeChannel]),
            ([.connected], .refused("MAC owned"), [.closeChannel]),
            ([.connected], .channelLost("reset"), [.closeChannel]),
            ([.connected, .prepared(Self.ticket)], .refused("bad state"), [.resumeDevice, .closeChannel]),
            ([.connected, .prepared(Self.ticket)], .channelLost("cut"), [.resumeDevice, .closeChannel]),
            (
                [.connected, .prepared(Self.ticket), .stateAccepted], .guestMoveFailed("no socket"),
                [.sendAbort("the guest could not re-attach at the destination: no socket"), .resumeDevice, .closeChannel]
            ),
            ([.connected, .prepared(Self.ticket), .stateAccepted], .channelLost("cut"), [.resumeDevice, .closeChannel]),
            ([.connected, .prepared(Self.ticket), .stateAccepted], .refused("token expired"), [.resumeDevice, .closeChannel]),
        ]
        for (before, failing, expected) in cases {
            var m = Source(wasPassthrough: false, now: 0)
            _ = try Self.run(&m, before)
            #expect(try m.handle(failing, now: 100 * Self.ms) == expected, "\(before) then \(failing)")
            guard case .failed = m.state else {
                Issue.record("not failed after \(failing)")
                continue
            }
            #expect(!m.isCommitted)
        }
    }

    @Test func aSilentGuestMakesTheSourceAskForAnAbortAndResumeOnlyWhenConfirmed() throws {
        var m = Source(wasPassthrough: false, now: 0)
        _ = try Self.run(&m, [.connected, .prepared(Self.ticket), .stateAccepted])
        #expect(m.tick(now: 4 * Self.ms) == [])
        let late = 3 * Self.ms + m.limits.phaseMilliseconds * Self.ms
        #expect(m.tick(now: late) == [.sendAbort("the guest did not re-attach at the destination in time")])
        // Not resumed yet: the destination may have taken the guest meanwhile.
        #expect(m.phase == "aborting")
        #expect(try m.handle(.refused("aborted"), now: late + Self.ms) == [.resumeDevice, .closeChannel])
    }

    @Test func anArrivalThatCrossesTheAbortCommits() throws {
        var m = Source(wasPassthrough: false, now: 0)
        _ = try Self.run(&m, [.connected, .prepared(Self.ticket), .stateAccepted])
        _ = m.tick(now: 10_000 * Self.ms)
        #expect(try m.handle(.guestArrived, now: 10_001 * Self.ms) == [.forwardHeldFrames])
        #expect(m.isCommitted)
    }

    @Test func anAnnouncementBeforeTheArrivalCommitsToo() throws {
        var m = Source(wasPassthrough: false, now: 0)
        _ = try Self.run(&m, [.connected, .prepared(Self.ticket), .stateAccepted])
        #expect(try m.handle(.announced, now: 4 * Self.ms) == [.forwardHeldFrames])
        #expect(m.isCommitted && m.state == .forwarding(announced: true))
        #expect(try m.handle(.guestArrived, now: 5 * Self.ms) == [])
        #expect(m.tick(now: 4 * Self.ms + m.limits.forwardingGraceMilliseconds * Self.ms).contains(.sendForwardingDone))
    }

    @Test func afterTheCommitALostChannelReleasesTheVNICAndNeverResumesIt() throws {
        var m = Source(wasPassthrough: true, now: 0)
        _ = try Self.run(&m, [.connected, .prepared(Self.ticket), .switchedOut, .stateAccepted, .guestMoved])
        let actions = try m.handle(.channelLost("reset"), now: 10 * Self.ms)
        #expect(actions == [.releaseVNIC, .closeChannel])
        #expect(!actions.contains(.resumeDevice) && !actions.contains(.switchBackIn))
        #expect(m.isCommitted)
    }

    @Test func phasesTimeOutBeforeTheCommit() throws {
        let limit = Source.Limits().phaseMilliseconds * Self.ms
        var connecting = Source(wasPassthrough: true, now: 0)
        #expect(connecting.tick(now: limit) == [.sendAbort("timed out while connecting"), .closeChannel])
        var switching = Source(wasPassthrough: true, now: 0)
        _ = try Self.run(&switching, [.connected, .prepared(Self.ticket)])
        #expect(switching.tick(now: 2 * Self.ms + limit) == [.sendAbort("timed out while switching-out"), .switchBackIn, .closeChannel])
        var transferring = Source(wasPassthrough: false, now: 0)
        _ = try Self.run(&transferring, [.connected, .prepared(Self.ticket)])
        #expect(transferring.tick(now: 2 * Self.ms + limit) == [.sendAbort("timed out while transferring"), .resumeDevice, .closeChannel])
    }

    @Test func unexpectedEventsAreRefusedAndChangeNothing() {
        var m = Source(wasPassthrough: false, now: 0)
        #expect(throws: Source.Refusal.self) { try m.handle(.stateAccepted, now: 1) }
        #expect(throws: Source.Refusal.self) { try m.handle(.announced, now: 1) }
        #expect(m.state == .connecting)
    }

    // MARK: Destination

    static let token: [UInt8] = Array(repeating: 9, count: 16)

    @Test func theDestinationHonoursTheTokenOnlyWhileWaitingForTheGuest() throws {
        var d = Destination(now: 0)
        #expect(d.acceptedToken == nil)
        #expect(try d.handle(.prepareAccepted(token: Self.token), now: 1) == [.sendPrepared(token: Self.token)])
        #expect(d.acceptedToken == nil)
        #expect(try d.handle(.stateAccepted, now: 2) == [.sendStateAccepted])
        #expect(d.acceptedToken == Self.token)
        #expect(try d.handle(.guestArrived, now: 3) == [.holdDirectFramesAndAnnounce, .sendGuestArrived])
        #expect(d.acceptedToken == nil)
        #expect(try d.handle(.forwardedFrames, now: 4) == [.deliverForwardedFrames])
        #expect(try d.handle(.announced, now: 5) == [.sendAnnounced])
        #expect(try d.handle(.announced, now: 6) == [])
        #expect(try d.handle(.forwardingDone, now: 7) == [.endForwarding, .switchInIfAllowed, .closeChannel])
        #expect(d.state == .completed)
    }

    @Test func theDestinationCancelsItsReservationWhenTheSourceGivesUp() throws {
        var d = Destination(now: 0)
        _ = try d.handle(.prepareAccepted(token: Self.token), now: 1)
        _ = try d.handle(.stateAccepted, now: 2)
        #expect(
            try d.handle(.abort("guest silent"), now: 3) == [
                .cancelArrival, .sendRefused("the source gave up: guest silent"), .closeChannel,
            ])
        #expect(d.acceptedToken == nil)

        var cut = Destination(now: 0)
        _ = try cut.handle(.prepareAccepted(token: Self.token), now: 1)
        #expect(try cut.handle(.channelLost("reset"), now: 2) == [.cancelArrival, .closeChannel])

        var late = Destination(now: 0)
        _ = try late.handle(.prepareAccepted(token: Self.token), now: 1)
        _ = try late.handle(.stateAccepted, now: 2)
        #expect(
            late.tick(now: 2 + late.limits.phaseMilliseconds * Self.ms) == [
                .cancelArrival, .sendRefused("timed out awaiting-guest"), .closeChannel,
            ])
    }

    @Test func afterTheArrivalTheGuestStaysWhateverTheSourceDoes() throws {
        var d = Destination(now: 0)
        _ = try d.handle(.prepareAccepted(token: Self.token), now: 1)
        _ = try d.handle(.stateAccepted, now: 2)
        _ = try d.handle(.guestArrived, now: 3)
        #expect(try d.handle(.channelLost("reset"), now: 4) == [.endForwarding, .switchInIfAllowed, .closeChannel])
        #expect(d.state == .completed)
    }

    @Test func aRefusedPrepareOrStateIsToldToTheSource() throws {
        var d = Destination(now: 0)
        #expect(try d.handle(.prepareRefused("MAC owned"), now: 1) == [.sendRefused("MAC owned"), .closeChannel])
        var s = Destination(now: 0)
        _ = try s.handle(.prepareAccepted(token: Self.token), now: 1)
        #expect(try s.handle(.stateRefused("ring size 5"), now: 2) == [.cancelArrival, .sendRefused("ring size 5"), .closeChannel])
        #expect(throws: Destination.Refusal.self) { try s.handle(.guestArrived, now: 3) }
    }
}
