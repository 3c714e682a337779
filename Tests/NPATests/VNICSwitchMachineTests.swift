import Testing

@testable import NPAHost

/// The host's switch state machine on its own: every state × every event, legal and illegal,
/// without sockets, threads or clocks.
@Suite struct VNICSwitchMachineTests {
    typealias Machine = VNICSwitchMachine
    typealias State = Machine.State
    static let vf = Machine.VFLease(nic: "nic0", index: 3, plugin: "npa-dring")

    enum Event: CaseIterable, Sendable {
        case vfAcquired, requestSwitchOut, resetVF, deadlinePassed, detached, hostSwitchInFailed
        case guestQueried, guestReady, guestActivated, guestFailedSwitchIn, guestBegan, guestFinished
    }

    enum Outcome: Equatable {
        case moves(State, [Machine.Action])
        case refused(Machine.Refusal)
    }

    /// Applies one event at time 10 s (the deadline limit is 1 ms, so a pending step expires).
    static func apply(_ event: Event, to m: inout Machine) -> Outcome {
        let now: UInt64 = 10_000_000_000
        func outcome(_ r: Result<[Machine.Action], Machine.Refusal>, _ m: Machine) -> Outcome {
            switch r {
            case .success(let actions): .moves(m.state, actions)
            case .failure(let refusal): .refused(refusal)
            }
        }
        switch event {
        case .vfAcquired: return outcome(m.vfAcquired(vf, now: now), m)
        case .requestSwitchOut: return outcome(m.requestSwitchOut(now: now), m)
        case .resetVF: return outcome(m.resetVF(reason: "test reset", now: now), m)
        case .deadlinePassed: let a = m.stepDeadlinePassed(now: now + 2_000_000, limitMilliseconds: 1); return .moves(m.state, a)
        case .detached: let a = m.detached(); return .moves(m.state, a)
        case .hostSwitchInFailed: return outcome(m.switchInFailed("no image"), m)
        case .guestQueried: let a = m.guestQueried(now: now); return .moves(m.state, a)
        case .guestReady: return outcome(m.guestReadyForVF(now: now), m)
        case .guestActivated: return outcome(m.guestActivatedVF(now: now), m)
        case .guestFailedSwitchIn: return outcome(m.guestFailedSwitchIn("plugin refused"), m)
        case .guestBegan: return outcome(m.guestBeganSwitchOut(now: now), m)
        case .guestFinished: return outcome(m.guestFinishedSwitchOut(now: now), m)
        }
    }

    /// Each state, reached from `emulated` by legal events only.
    static let paths: [(State, [Event])] = {
        let pt: [Event] = [.vfAcquired, .guestQueried, .guestReady, .guestActivated]
        return [
            (.emulated, []),
            (.switchInRequested(vf), [.vfAcquired]),
            (.switchInOffered(vf), [.vfAcquired, .guestQueried]),
            (.switchInPrepared(vf), [.vfAcquired, .guestQueried, .guestReady]),
            (.passthrough(vf), pt),
            (.switchOutRequested(vf), pt + [.requestSwitchOut]),
            (.switchOutAfterReset(vf, expired: false), pt + [.resetVF]),
            (.switchOutAfterReset(vf, expired: true), pt + [.resetVF, .deadlinePassed]),
            (.switchOutQuiesced(vf, expired: false), pt + [.requestSwitchOut, .guestBegan]),
            (.switchOutQuiesced(vf, expired: true), pt + [.resetVF, .deadlinePassed, .guestBegan]),
        ]
    }()

    /// The specification: what each event does in each state. Refusals change nothing.
    static func expected(_ state: State, _ event: Event) -> Outcome {
        let vf = Self.vf
        let released: Outcome = .moves(.emulated, [.releaseVF(vf)])
        switch (state, event) {
        case (.emulated, .vfAcquired): return .moves(.switchInRequested(vf), [.raiseDeviceImplementationChange])
        case (.passthrough, .vfAcquired): return .refused(.alreadyPassthrough)
        case (_, .vfAcquired): return .refused(.switchUnderWay)

        case (.passthrough, .requestSwitchOut): return .moves(.switchOutRequested(vf), [.raiseDeviceImplementationChange])
        case (.emulated, .requestSwitchOut): return .refused(.alreadyEmulated)
        case (_, .requestSwitchOut): return .refused(.switchUnderWay)

        case (.passthrough, .resetVF):
            return .moves(.switchOutAfterReset(vf, expired: false), [.resetVF(vf), .raiseDeviceImplementationChange])
        case (.switchOutRequested, .resetVF), (.switchOutAfterReset, .resetVF), (.switchOutQuiesced, .resetVF):
            return .refused(.switchUnderWay)
        case (_, .resetVF): return .refused(.notInPassthrough)

        case (.switchInRequested, .deadlinePassed), (.switchInOffered, .deadlinePassed), (.switchInPrepared, .deadlinePassed):
            return released
        case (.switchOutRequested, .deadlinePassed): return .moves(.passthrough(vf), [])
        case (.switchOutAfterReset, .deadlinePassed): return .moves(.switchOutAfterReset(vf, expired: true), [])
        case (.switchOutQuiesced, .deadlinePassed): return .moves(.switchOutQuiesced(vf, expired: true), [])
        case (_, .deadlinePassed): return .moves(state, [])

        case (.emulated, .detached): return .moves(.emulated, [])
        case (_, .detached): return released

        case (.switchInRequested, .hostSwitchInFailed), (.switchInOffered, .hostSwitchInFailed), (.switchInPrepared, .hostSwitchInFailed):
            return released
        case (_, .hostSwitchInFailed): return .refused(.noSwitchInUnderWay)
        case (.switchInRequested, .guestFailedSwitchIn), (.switchInOffered, .guestFailedSwitchIn),
            (.switchInPrepared, .guestFailedSwitchIn):
            return released
        case (_, .guestFailedSwitchIn): return .refused(.noSwitchInUnderWay)

        case (.switchInRequested, .guestQueried), (.switchInOffered, .guestQueried), (.switchInPrepared, .guestQueried):
            return .moves(.switchInOffered(vf), [.offerSwitchIn(vf)])
        case (.switchOutRequested, .guestQueried), (.switchOutAfterReset, .guestQueried), (.switchOutQuiesced, .guestQueried):
            return .moves(state, [.offerSwitchOut(vf)])
        case (_, .guestQueried): return .moves(state, [.offerNothing])

        case (.switchInOffered, .guestReady), (.switchInPrepared, .guestReady): return .moves(.switchInPrepared(vf), [.programVF(vf)])
        case (.switchInRequested, .guestReady): return .refused(.switchInNotOffered)
        case (_, .guestReady): return .refused(.noSwitchInUnderWay)

        case (.switchInPrepared, .guestActivated): return .moves(.passthrough(vf), [.moveMACToVF(vf)])
        case (.switchInRequested, .guestActivated), (.switchInOffered, .guestActivated): return .refused(.vfNotInitialised)
        case (_, .guestActivated): return .refused(.noSwitchInUnderWay)

        case (.switchOutRequested, .guestBegan): return .moves(.switchOutQuiesced(vf, expired: false), [.quiesceVFAndReturnMAC(vf)])
        case (.switchOutAfterReset(_, let expired), .guestBegan):
            return .moves(.switchOutQuiesced(vf, expired: expired), [.quiesceVFAndReturnMAC(vf)])
        case (.switchOutQuiesced, .guestBegan): return .refused(.switchOutAlreadyBegun)
        case (_, .guestBegan): return .refused(.noSwitchOutUnderWay)

        case (.switchOutQuiesced, .guestFinished): return released
        case (.switchInRequested, .guestFinished), (.switchInOffered, .guestFinished), (.switchInPrepared, .guestFinished): return released
        case (.switchOutRequested, .guestFinished), (.switchOutAfterReset, .guestFinished): return .refused(.switchOutNotBegun)
        case (_, .guestFinished): return .refused(.noSwitchOutUnderWay)
        }
    }

    @Test func everyPathReachesItsState() {
        for (state, path) in Self.paths {
            var m = Machine()
            for e in path {
                guard case .moves = Self.apply(e, to: &m) else {
                    Issue.record("\(e) refused on the way to \(state)")
                    break
                }
            }
            #expect(m.state == state)
        }
    }

    @Test(arguments: Event.allCases)
    func everyStateAnswersEveryEventAsSpecified(_ event: Event) {
        for (state, path) in Self.paths {
            var m = Machine()
            for e in path { _ = Self.apply(e, to: &m) }
            let before = m.state
            let outcome = Self.apply(event, to: &m)
            #expect(outcome == Self.expected(state, event), "\(event) in \(state)")
            if case .refused = outcome { #expect(m.state == before, "a refused \(event) in \(state) changed the state") }
        }
    }

    @Test func queriesFollowTheState() {
        for (state, path) in Self.paths {
            var m = Machine()
            for e in path { _ = Self.apply(e, to: &m) }
            let onVF: Bool
            switch state {
            case .passthrough, .switchOutRequested, .switchOutAfterReset, .switchOutQuiesced: onVF = true
            default: onVF = false
            }
            #expect(m.isPassthrough == onVF, "\(state)")
            #expect((m.lease != nil) == (state != .emulated), "\(state)")
            #expect(m.isSwitching == (state != .emulated && state != .passthrough(Self.vf)), "\(state)")
            #expect(m.filtersFollowVF == (state == .passthrough(Self.vf)), "\(state)")
            if case .switchOutAfterReset = state { #expect(m.macAwaitsSwitchOut) } else { #expect(!m.macAwaitsSwitchOut) }
        }
    }

    @Test func timesAndReasonsAreKept() {
        var m = Machine()
        _ = m.vfAcquired(Self.vf, now: 1_000_000)
        _ = m.guestQueried(now: 2_000_000)
        _ = m.guestReadyForVF(now: 3_000_000)
        _ = m.guestActivatedVF(now: 5_000_000)
        #expect(m.lastSwitchMilliseconds == 4.0)
        #expect(m.reason == nil)
        _ = m.resetVF(reason: "plugin fault: dead", now: 10_000_000)
        #expect(m.reason == "plugin fault: dead")
        // Not expired yet: the step started at 10 ms and the limit is 5 ms.
        #expect(m.stepDeadlinePassed(now: 14_000_000, limitMilliseconds: 5).isEmpty && !m.deadlineExpired)
        _ = m.stepDeadlinePassed(now: 16_000_000, limitMilliseconds: 5)
        #expect(m.deadlineExpired)
        #expect(m.reason?.contains("plugin fault: dead") == true && m.reason?.contains("timed out") == true)
        _ = m.guestBeganSwitchOut(now: 20_000_000)
        _ = m.guestFinishedSwitchOut(now: 30_000_000)
        #expect(m.state == .emulated && m.lastSwitchMilliseconds == 20.0)
        // A switch-in that times out says so and keeps no duration.
        _ = m.vfAcquired(Self.vf, now: 40_000_000)
        #expect(m.stepDeadlinePassed(now: 50_000_000, limitMilliseconds: 5) == [.releaseVF(Self.vf)])
        #expect(m.lastSwitchMilliseconds == nil && m.reason?.hasPrefix("switch-in timed out") == true)
    }
}
