import NPAControlProtocol

/// The shell's side of a mode switch, as a state machine (SwiftNIO style): a state enum whose
/// cases carry what that state owns, and events that return the action the caller performs.
/// The caller (`ShellSwitcher`) does the I/O — control round trips, loading the plugin, draining
/// and adopting data paths — and reports each outcome as the next event.
///
/// It touches nothing and does no I/O. An event the current state does not expect is refused
/// with `ShellSwitchRefusal`, and the state is left as it was: never ignored. A refused step of
/// a switch under way is then reported as `stepFailed`, which ends the switch in a consistent
/// state (the rollback rule: release after acquire, quiesce after activate).
///
/// Generic over what the states own, so it is tested with plain values: `Offer` is a switch-in
/// offer as the host sent it (the plugin image, the VF's register page, its kick eventfd),
/// `Lease` a loaded VF plugin with its data path and what keeps them alive, `Drained` what a
/// quiesced data path hands the next one (unsent frames, received frames, buffers).
///
/// A move to another host (`moveOffered`) is the one change that is no switch: the guest stays
/// emulated and re-attaches its vNIC to the destination host, whose control connection then
/// replaces the source's.
package struct ShellSwitchStateMachine<Offer, Lease, Drained> {
    /// The guest on a VF: the lease, and whether the plugin's fault was already reported (the
    /// host is told once; it answers with DIC).
    package struct Passthrough {
        package var lease: Lease
        package var faultReported: Bool

        package init(lease: Lease, faultReported: Bool = false) {
            self.lease = lease
            self.faultReported = faultReported
        }
    }

    package enum State {
        /// The emulation plugin carries the data path; no switch under way.
        case emulated
        /// DIC acknowledged; the host was asked what changed (`switchQuery`). `current` is the
        /// VF the guest runs on, if it is in passthrough.
        case awaitingOffer(current: Passthrough?)
        /// Switch-in offered: the caller loads the injected plugin (it holds the offer meanwhile).
        case loadingPlugin
        /// The plugin is loaded; the host was handed the VF's queue regions (`switchInReady`).
        case preparingVF(Lease)
        /// The VF's RX rings are posted, emulated TX finished; ACTIVATE_VF is under way.
        case activatingVF(Lease)
        /// The MAC is on the VF: the emulated device is quiesced and its rings harvested.
        case drainingEmulation(Lease)
        /// The VF's plugin carries the data path.
        case passthrough(Passthrough)
        /// Switch-out: the emulated device is being re-armed (RESET, fresh rings, ACTIVATE).
        case rearmingEmulation(Passthrough)
        /// Emulation re-armed; the host is asked to quiesce the VF and move the MAC back.
        case beginningSwitchOut(Passthrough)
        /// The VF is quiesced and the MAC is back on the vswitch (no way back to the VF): the VF
        /// path is being drained.
        case drainingVF(Lease)
        /// Emulation adopted what the VF path left, the lease is released; `switchOutDone` is
        /// under way.
        case finishingSwitchOut
        /// Move offered: the guest (emulated) re-attaches to the destination host (`resume`).
        case moving(ControlMessage.MoveDestination)
        /// The host is gone: no switch can be carried out any more. Keeps the VF the guest ran
        /// on, if any (its data path stays the one the guest's calls reach).
        case hostGone(Passthrough?)
    }

    /// What a failed switch-in must undo before the host is told.
    package enum SwitchInCleanup {
        case nothing
        /// The host did not take the VF's queues: take back the RX buffers the plugin holds.
        case reclaimPostedRxBuffers(Lease)
        /// ACTIVATE_VF failed: quiesce and drain the VF path (it may hold posted buffers).
        case drainVF(Lease)
    }

    package enum Action {
        /// Acknowledge DIC (write it back to ECR) and ask the host what changed; report the
        /// offer (`noChangeOffered`, `switchInOffered`, `switchOutOffered`) or `stepFailed`.
        case acknowledgeAndQuery
        /// The host changes nothing: the request is handled, the guest stays as it is.
        case stay
        /// Load the injected plugin from the offer and build the VF data path over it; report
        /// `pluginLoaded` or `stepFailed`.
        case loadPlugin(Offer)
        /// Hand the host the VF's queue regions (`switchInReady`); report `vfPrepared` or
        /// `stepFailed`.
        case prepareVF(Lease)
        /// Post RX buffers on the VF, finish emulated TX, ACTIVATE_VF; report `vfActivated` or
        /// `stepFailed`.
        case activateVF(Lease)
        /// Quiesce the emulated device and drain its path; report `emulationDrained`.
        case drainEmulation
        /// The VF path adopts what emulation left and carries the data path from now on.
        case completeSwitchIn(Lease, adopting: Drained)
        /// Undo `cleanup`, tell the host (`switchInFailed`) and record `reason`; the guest stays
        /// on emulation.
        case abandonSwitchIn(reason: String, cleanup: SwitchInCleanup)
        /// RESET the emulated device, re-initialise its rings, post RX buffers, ACTIVATE; report
        /// `emulationRearmed` or `stepFailed`.
        case rearmEmulation
        /// `switchOutBegin`; report `switchOutBegun` or `stepFailed`.
        case beginSwitchOut
        /// Drain the VF path; report `vfDrained`.
        case drainVF(Lease)
        /// Emulation adopts what the VF path left and carries the data path; release the lease;
        /// `switchOutDone`; report `switchOutDone` or `stepFailed`.
        case finishSwitchOut(adopting: Drained, releasing: Lease)
        /// The switch-out is complete.
        case completeSwitchOut
        /// The switch failed; the guest stays on the path the state says. Record `reason`.
        case recordFailure(reason: String)
        /// Tell the host the plugin reported its device dead (`pluginFault`).
        case reportPluginFault(reason: String)
        /// Connect to the destination's control socket and `resume` there with the guest's
        /// memory, eventfds and register page; tell the source `moved` and carry on over the new
        /// connection. Report `moveCompleted` or `stepFailed`.
        case moveToHost(ControlMessage.MoveDestination)
        /// The move is complete: the guest is attached to the destination.
        case completeMove
        /// Tell the source `moveFailed` and record `reason`; the guest stays on the source.
        case abandonMove(reason: String)
        /// Nothing to do.
        case none
    }

    package private(set) var state: State

    package init() { state = .emulated }

    /// A machine in any state, for tests.
    package init(state: State) { self.state = state }

    /// The lease whose data path the guest's calls reach now; nil while that is emulation.
    /// The data path flips only when a switch completes (or, switching out, once the VF path
    /// is drained).
    package var dataPathLease: Lease? {
        switch state {
        case .emulated, .loadingPlugin, .preparingVF, .activatingVF, .drainingEmulation, .finishingSwitchOut, .moving: nil
        case .awaitingOffer(let current): current?.lease
        case .passthrough(let p), .rearmingEmulation(let p), .beginningSwitchOut(let p): p.lease
        case .drainingVF(let lease): lease
        case .hostGone(let p): p?.lease
        }
    }

    /// The fault report the host has not had yet is due: the guest is on a VF and has not
    /// reported one.
    package var mayReportPluginFault: Bool {
        if case .passthrough(let p) = state { return !p.faultReported }
        return false
    }

    package var stateName: ShellSwitchStateName {
        switch state {
        case .emulated: .emulated
        case .awaitingOffer: .awaitingOffer
        case .loadingPlugin: .loadingPlugin
        case .preparingVF: .preparingVF
        case .activatingVF: .activatingVF
        case .drainingEmulation: .drainingEmulation
        case .passthrough: .passthrough
        case .rearmingEmulation: .rearmingEmulation
        case .beginningSwitchOut: .beginningSwitchOut
        case .drainingVF: .drainingVF
        case .finishingSwitchOut: .finishingSwitchOut
        case .hostGone: .hostGone
        case .moving: .moving
        }
    }

    private func refuse(_ event: ShellSwitchEvent) -> ShellSwitchRefusal {
        ShellSwitchRefusal(event: event, state: stateName)
    }

    // MARK: Events

    /// The host raised DIC (seen in ECR, or on the event interrupt).
    package mutating func deviceImplementationChange() throws(ShellSwitchRefusal) -> Action {
        switch state {
        case .emulated: state = .awaitingOffer(current: nil)
        case .passthrough(let p): state = .awaitingOffer(current: p)
        default: throw refuse(.deviceImplementationChange)
        }
        return .acknowledgeAndQuery
    }

    /// The host offers no change (or answered the query with something that is no offer).
    package mutating func noChangeOffered() throws(ShellSwitchRefusal) -> Action {
        guard case .awaitingOffer(let current) = state else { throw refuse(.noChangeOffered) }
        state = current.map { .passthrough($0) } ?? .emulated
        return .stay
    }

    /// The host offers a switch-in: only an emulated guest can take one.
    package mutating func switchInOffered(_ offer: Offer) throws(ShellSwitchRefusal) -> Action {
        guard case .awaitingOffer(current: nil) = state else { throw refuse(.switchInOffered) }
        state = .loadingPlugin
        return .loadPlugin(offer)
    }

    /// The host asks for a switch-out: only a guest on a VF can make one.
    package mutating func switchOutOffered() throws(ShellSwitchRefusal) -> Action {
        guard case .awaitingOffer(current: let current?) = state else { throw refuse(.switchOutOffered) }
        state = .rearmingEmulation(current)
        return .rearmEmulation
    }

    /// The host offers a move to another host: only an emulated guest can take one (the host
    /// switches a guest on a VF out first).
    package mutating func moveOffered(_ destination: ControlMessage.MoveDestination) throws(ShellSwitchRefusal) -> Action {
        guard case .awaitingOffer(current: nil) = state else { throw refuse(.moveOffered) }
        state = .moving(destination)
        return .moveToHost(destination)
    }

    /// The destination took the vNIC (the move's commit point) and the source was told.
    package mutating func moveCompleted() throws(ShellSwitchRefusal) -> Action {
        guard case .moving = state else { throw refuse(.moveCompleted) }
        state = .emulated
        return .completeMove
    }

    package mutating func pluginLoaded(_ lease: Lease) throws(ShellSwitchRefusal) -> Action {
        guard case .loadingPlugin = state else { throw refuse(.pluginLoaded) }
        state = .preparingVF(lease)
        return .prepareVF(lease)
    }

    /// The host initialised the VF's queues from the shell's regions.
    package mutating func vfPrepared() throws(ShellSwitchRefusal) -> Action {
        guard case .preparingVF(let lease) = state else { throw refuse(.vfPrepared) }
        state = .activatingVF(lease)
        return .activateVF(lease)
    }

    /// ACTIVATE_VF succeeded: the MAC is on the VF (the switch-in's commit point).
    package mutating func vfActivated() throws(ShellSwitchRefusal) -> Action {
        guard case .activatingVF(let lease) = state else { throw refuse(.vfActivated) }
        state = .drainingEmulation(lease)
        return .drainEmulation
    }

    package mutating func emulationDrained(_ drained: Drained) throws(ShellSwitchRefusal) -> Action {
        guard case .drainingEmulation(let lease) = state else { throw refuse(.emulationDrained) }
        state = .passthrough(Passthrough(lease: lease))
        return .completeSwitchIn(lease, adopting: drained)
    }

    package mutating func emulationRearmed() throws(ShellSwitchRefusal) -> Action {
        guard case .rearmingEmulation(let p) = state else { throw refuse(.emulationRearmed) }
        state = .beginningSwitchOut(p)
        return .beginSwitchOut
    }

    /// The host quiesced the VF and moved the MAC back (the switch-out's commit point).
    package mutating func switchOutBegun() throws(ShellSwitchRefusal) -> Action {
        guard case .beginningSwitchOut(let p) = state else { throw refuse(.switchOutBegun) }
        state = .drainingVF(p.lease)
        return .drainVF(p.lease)
    }

    package mutating func vfDrained(_ drained: Drained) throws(ShellSwitchRefusal) -> Action {
        guard case .drainingVF(let lease) = state else { throw refuse(.vfDrained) }
        state = .finishingSwitchOut
        return .finishSwitchOut(adopting: drained, releasing: lease)
    }

    /// The host released the VF.
    package mutating func switchOutDone() throws(ShellSwitchRefusal) -> Action {
        guard case .finishingSwitchOut = state else { throw refuse(.switchOutDone) }
        state = .emulated
        return .completeSwitchOut
    }

    /// The step under way failed (a round trip failed or was refused, the plugin did not load,
    /// the host's answer did not fit). Before a commit point the guest goes back to where it
    /// was; after one it goes on to where the switch was going. A step that cannot fail (a
    /// drain) refuses this.
    package mutating func stepFailed(reason: String) throws(ShellSwitchRefusal) -> Action {
        switch state {
        case .awaitingOffer(let current):
            state = current.map { .passthrough($0) } ?? .emulated
            return .recordFailure(reason: reason)
        case .loadingPlugin:
            state = .emulated
            return .abandonSwitchIn(reason: reason, cleanup: .nothing)
        case .preparingVF(let lease):
            state = .emulated
            return .abandonSwitchIn(reason: reason, cleanup: .reclaimPostedRxBuffers(lease))
        case .activatingVF(let lease):
            state = .emulated
            return .abandonSwitchIn(reason: reason, cleanup: .drainVF(lease))
        case .rearmingEmulation(let p), .beginningSwitchOut(let p):
            state = .passthrough(p)
            return .recordFailure(reason: reason)
        case .finishingSwitchOut:
            state = .emulated
            return .recordFailure(reason: reason)
        case .moving:
            state = .emulated
            return .abandonMove(reason: reason)
        case .emulated, .drainingEmulation, .passthrough, .drainingVF, .hostGone:
            throw refuse(.stepFailed)
        }
    }

    /// The VF's plugin reported its device dead (`report_fault`), before any DIC.
    package mutating func pluginFaulted(reason: String) throws(ShellSwitchRefusal) -> Action {
        guard case .passthrough(var p) = state, !p.faultReported else { throw refuse(.pluginFaulted) }
        p.faultReported = true
        state = .passthrough(p)
        return .reportPluginFault(reason: reason)
    }

    /// The host's control connection closed. Only between switches: a step under way that
    /// finds the host gone fails first (`stepFailed`).
    package mutating func hostGone() throws(ShellSwitchRefusal) -> Action {
        switch state {
        case .emulated: state = .hostGone(nil)
        case .passthrough(let p): state = .hostGone(p)
        default: throw refuse(.hostGone)
        }
        return .none
    }
}

/// The events of `ShellSwitchStateMachine`, by name (what a refusal names).
package enum ShellSwitchEvent: String, CaseIterable, Sendable {
    case deviceImplementationChange = "DIC"
    case noChangeOffered = "an offer of no change"
    case switchInOffered = "a switch-in offer"
    case switchOutOffered = "a switch-out offer"
    case pluginLoaded = "a loaded plugin"
    case vfPrepared = "the VF's preparation"
    case vfActivated = "ACTIVATE_VF's success"
    case emulationDrained = "the emulation path's drain"
    case emulationRearmed = "emulation re-armed"
    case switchOutBegun = "switchOutBegin's success"
    case vfDrained = "the VF path's drain"
    case switchOutDone = "switchOutDone's success"
    case stepFailed = "a failed step"
    case pluginFaulted = "a plugin fault"
    case hostGone = "the host's hang-up"
    case moveOffered = "a move offer"
    case moveCompleted = "the destination's resume"
}

/// The states of `ShellSwitchStateMachine`, by name.
package enum ShellSwitchStateName: String, CaseIterable, Sendable {
    case emulated, awaitingOffer, loadingPlugin, preparingVF, activatingVF, drainingEmulation
    case passthrough, rearmingEmulation, beginningSwitchOut, drainingVF, finishingSwitchOut, hostGone, moving
}

/// An event the shell's switch state machine does not expect in its state (the state is left
/// as it was).
package struct ShellSwitchRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    package let event: ShellSwitchEvent
    package let state: ShellSwitchStateName

    package init(event: ShellSwitchEvent, state: ShellSwitchStateName) {
        self.event = event
        self.state = state
    }

    package var description: String { "\(event.rawValue) is not expected in the shell's \(state) state" }
}

extension ShellSwitchStateMachine.Passthrough: Equatable where Lease: Equatable {}
extension ShellSwitchStateMachine.State: Equatable where Lease: Equatable {}
extension ShellSwitchStateMachine.SwitchInCleanup: Equatable where Lease: Equatable {}
extension ShellSwitchStateMachine.Action: Equatable where Offer: Equatable, Lease: Equatable, Drained: Equatable {}
extension ShellSwitchStateMachine.Passthrough: Sendable where Lease: Sendable {}
extension ShellSwitchStateMachine.State: Sendable where Lease: Sendable {}
