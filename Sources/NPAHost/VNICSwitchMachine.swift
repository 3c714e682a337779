/// The host side of one vNIC's mode switches, as a state machine that does no I/O: each event
/// (an admin request, a guest's handshake message, a deadline) either changes the state and
/// returns the actions the PF driver must perform, in order, or is refused and changes nothing.
///
/// The state says which path carries the vNIC and what the switch under way owns: the VF lease
/// from the moment a switch-in reserves it until a switch-out or an abandoned switch-in releases
/// it. Where the MAC lives follows from the state: on the vswitch while emulated and switching in
/// (it moves to the VF at `activateVF`), on the VF in passthrough and while a switch-out is only
/// requested, on neither after a VF reset until the guest re-arms emulation
/// (`guestBeganSwitchOut`), and on the vswitch again from then on.
///
/// Only the host thread touches it (it lives in its `EmulatedDevice`); times are given, never read.
struct VNICSwitchMachine {
    /// A VF reserved for this vNIC, and the plugin image the host injects for its NIC model.
    struct VFLease: Equatable {
        var nic: String
        var index: Int
        var plugin: String
    }

    enum State: Equatable {
        /// The vNIC runs on the emulated device; no VF is held.
        case emulated
        /// A switch-in was requested: the VF is reserved and DIC raised; the guest has not asked yet.
        case switchInRequested(VFLease)
        /// The guest was handed the plugin image, the VF's register page and its kick eventfd.
        case switchInOffered(VFLease)
        /// The VF's queues are programmed from the guest's rings and the VF may reach its memory.
        case switchInPrepared(VFLease)
        /// The VF carries the vNIC; its MAC, filters and VLANs are programmed on the VF.
        case passthrough(VFLease)
        /// An admin asked for a switch-out and DIC is raised; the VF still carries the vNIC, so
        /// the switch can still be called off.
        case switchOutRequested(VFLease)
        /// The VF was reset (FLR) without the guest: the MAC is on neither path and frames for it
        /// wait in their senders' rings until the guest re-arms emulation. Cannot be called off.
        case switchOutAfterReset(VFLease, expired: Bool)
        /// The VF is quiesced and the MAC back on the vswitch; the guest drains what the VF path
        /// holds into emulation and then says it is done.
        case switchOutQuiesced(VFLease, expired: Bool)
    }

    /// What the PF driver does for an event, in the order given.
    enum Action: Equatable {
        /// Set DIC in DriverShared.ecr and fire the event interrupt: the guest asks what changed.
        case raiseDeviceImplementationChange
        /// Function-level reset of the VF now (it stops, its MAC is forgotten); frames for the
        /// vNIC are held back until the guest re-arms emulation.
        case resetVF(VFLease)
        case offerSwitchIn(VFLease)
        case offerSwitchOut(VFLease)
        case offerNothing
        /// Initialise the VF's queues from the guest's rings, grant it the guest's memory, apply
        /// the vNIC's filters and enable it.
        case programVF(VFLease)
        /// ACTIVATE_VF: drain the PF queue, move the MAC from the vswitch to the VF.
        case moveMACToVF(VFLease)
        /// Quiesce the VF, forget its MAC, give the MAC back to the vswitch, drain the PF queue.
        case quiesceVFAndReturnMAC(VFLease)
        /// Reset the VF and return it to the free pool (its counters are kept for the vNIC).
        case releaseVF(VFLease)
    }

    /// Why an event is refused in the current state. Nothing changed.
    enum Refusal: Error, Equatable, CustomStringConvertible {
        case alreadyPassthrough, alreadyEmulated, switchUnderWay, notInPassthrough
        case noSwitchInUnderWay, switchInNotOffered, vfNotInitialised
        case noSwitchOutUnderWay, switchOutAlreadyBegun, switchOutNotBegun

        var description: String {
            switch self {
            case .alreadyPassthrough: "already in passthrough"
            case .alreadyEmulated: "already emulated"
            case .switchUnderWay: "a switch is already under way"
            case .notInPassthrough: "the vNIC is not in passthrough"
            case .noSwitchInUnderWay: "no switch-in under way"
            case .switchInNotOffered: "the switch-in was not offered yet (switchQuery first)"
            case .vfNotInitialised: "the VF is not initialised yet (switchInReady first)"
            case .noSwitchOutUnderWay: "no switch-out under way"
            case .switchOutAlreadyBegun: "the switch-out has begun already"
            case .switchOutNotBegun: "the switch-out has not begun (switchOutBegin first)"
            }
        }
    }

    private(set) var state: State = .emulated
    /// When the switch under way was requested, and when the guest last answered a step of it
    /// (each step has the switch timeout from here).
    private(set) var startedAt: UInt64 = 0
    private(set) var stepStartedAt: UInt64 = 0
    /// How long the last completed switch took, request to last step (nil after a failed one).
    private(set) var lastSwitchMilliseconds: Double?
    /// Why the last switch failed or why the one under way was forced (a VF reset), for status.
    private(set) var reason: String?

    // MARK: Queries

    /// The path the guest's data goes through: passthrough from ACTIVATE_VF until the
    /// switch-out is done.
    var isPassthrough: Bool {
        switch state {
        case .passthrough, .switchOutRequested, .switchOutAfterReset, .switchOutQuiesced: true
        case .emulated, .switchInRequested, .switchInOffered, .switchInPrepared: false
        }
    }

    var isSwitching: Bool {
        switch state {
        case .emulated, .passthrough: false
        default: true
        }
    }

    var isSwitchingIn: Bool {
        switch state {
        case .switchInRequested, .switchInOffered, .switchInPrepared: true
        default: false
        }
    }

    /// The VF this vNIC holds, if any.
    var lease: VFLease? {
        switch state {
        case .emulated: nil
        case .switchInRequested(let l), .switchInOffered(let l), .switchInPrepared(let l), .passthrough(let l), .switchOutRequested(let l),
            .switchOutAfterReset(let l, _), .switchOutQuiesced(let l, _):
            l
        }
    }

    /// After a VF reset, until the guest re-arms emulation: the MAC is on neither path.
    var macAwaitsSwitchOut: Bool {
        if case .switchOutAfterReset = state { return true }
        return false
    }

    /// The guest's filter changes go to the VF too only while the VF carries it and no switch
    /// decides where the MAC lives.
    var filtersFollowVF: Bool {
        if case .passthrough = state { return true }
        return false
    }

    // MARK: Admin and host events

    /// An admin (or auto-passthrough) asks for passthrough. Legal only while emulated; the
    /// caller then acquires a VF and reports it with `vfAcquired`. Changes nothing.
    func mayRequestSwitchIn() -> Refusal? {
        switch state {
        case .emulated: nil
        case .passthrough: .alreadyPassthrough
        default: .switchUnderWay
        }
    }

    /// The VF the caller reserved for a switch-in that `mayRequestSwitchIn` allowed.
    mutating func vfAcquired(_ lease: VFLease, now: UInt64) -> Result<[Action], Refusal> {
        if let refusal = mayRequestSwitchIn() { return .failure(refusal) }
        state = .switchInRequested(lease)
        begin(now)
        return .success([.raiseDeviceImplementationChange])
    }

    mutating func requestSwitchOut(now: UInt64) -> Result<[Action], Refusal> {
        switch state {
        case .passthrough(let lease):
            state = .switchOutRequested(lease)
            begin(now)
            return .success([.raiseDeviceImplementationChange])
        case .emulated: return .failure(.alreadyEmulated)
        default: return .failure(.switchUnderWay)
        }
    }

    /// A VF reset without the guest's cooperation (VF reclaim, a plugin that reported its
    /// device dead): FLR now, then DIC so the guest moves to emulation.
    mutating func resetVF(reason: String, now: UInt64) -> Result<[Action], Refusal> {
        switch state {
        case .passthrough(let lease):
            state = .switchOutAfterReset(lease, expired: false)
            begin(now)
            self.reason = reason
            return .success([.resetVF(lease), .raiseDeviceImplementationChange])
        case .switchOutRequested, .switchOutAfterReset, .switchOutQuiesced: return .failure(.switchUnderWay)
        case .emulated, .switchInRequested, .switchInOffered, .switchInPrepared: return .failure(.notInPassthrough)
        }
    }

    /// A step of the switch under way was not answered within `limitMilliseconds`. A switch-in
    /// is abandoned (VF released); a switch-out that is only requested is called off (the guest
    /// keeps the VF it runs on); a committed switch-out cannot be undone: it stays pending for
    /// the guest (or its detach) to finish, and says once that it timed out.
    mutating func stepDeadlinePassed(now: UInt64, limitMilliseconds: Int) -> [Action] {
        guard isSwitching, now &- stepStartedAt > UInt64(limitMilliseconds) * 1_000_000 else { return [] }
        let waited = "the guest did not answer within \(limitMilliseconds) ms"
        switch state {
        case .switchInRequested(let lease), .switchInOffered(let lease), .switchInPrepared(let lease):
            return abandon(lease, "switch-in timed out: \(waited); VF released")
        case .switchOutRequested(let lease):
            state = .passthrough(lease)
            lastSwitchMilliseconds = nil
            reason = "switch-out timed out: \(waited); it stays in passthrough"
            return []
        case .switchOutAfterReset(let lease, false):
            state = .switchOutAfterReset(lease, expired: true)
            reason = expiredReason(waited)
            return []
        case .switchOutQuiesced(let lease, false):
            state = .switchOutQuiesced(lease, expired: true)
            reason = expiredReason(waited)
            return []
        case .emulated, .passthrough, .switchOutAfterReset(_, true), .switchOutQuiesced(_, true):
            return []
        }
    }

    /// Whether a committed switch-out already said it timed out (the deadline is not checked again).
    var deadlineExpired: Bool {
        switch state {
        case .switchOutAfterReset(_, let expired), .switchOutQuiesced(_, let expired): expired
        default: false
        }
    }

    /// The guest's connection closed: whatever it held is released.
    mutating func detached() -> [Action] {
        defer { state = .emulated }
        return lease.map { [.releaseVF($0)] } ?? []
    }

    /// The PF driver could not carry out a switch-in step (no image, the VF refused its
    /// queues): the vNIC stays emulated and the VF is released.
    mutating func switchInFailed(_ why: String) -> Result<[Action], Refusal> {
        switch state {
        case .switchInRequested(let lease), .switchInOffered(let lease), .switchInPrepared(let lease): return .success(abandon(lease, why))
        default: return .failure(.noSwitchInUnderWay)
        }
    }

    // MARK: The guest's handshake

    /// Any message of the guest's while a switch is under way (re-arming emulation is a series
    /// of register writes): it is answering, so the step gets a new deadline.
    mutating func guestAnswered(now: UInt64) {
        if isSwitching { stepStartedAt = now }
    }

    /// `switchQuery` after DIC: what changed.
    mutating func guestQueried(now: UInt64) -> [Action] {
        if isSwitching { stepStartedAt = now }
        switch state {
        case .switchInRequested(let lease), .switchInOffered(let lease), .switchInPrepared(let lease):
            // A query again re-offers: the guest reloads the plugin and programs the VF anew.
            state = .switchInOffered(lease)
            return [.offerSwitchIn(lease)]
        case .switchOutRequested(let lease), .switchOutAfterReset(let lease, _), .switchOutQuiesced(let lease, _):
            return [.offerSwitchOut(lease)]
        case .emulated, .passthrough:
            return [.offerNothing]
        }
    }

    /// `switchInReady`: the plugin is loaded and its rings carved; program the VF from them.
    mutating func guestReadyForVF(now: UInt64) -> Result<[Action], Refusal> {
        switch state {
        case .switchInOffered(let lease), .switchInPrepared(let lease):
            state = .switchInPrepared(lease)
            stepStartedAt = now
            return .success([.programVF(lease)])
        case .switchInRequested: return .failure(.switchInNotOffered)
        default: return .failure(.noSwitchInUnderWay)
        }
    }

    /// ACTIVATE_VF: the one point where the MAC moves to the VF.
    mutating func guestActivatedVF(now: UInt64) -> Result<[Action], Refusal> {
        switch state {
        case .switchInPrepared(let lease):
            state = .passthrough(lease)
            finishSwitchIn(now)
            return .success([.moveMACToVF(lease)])
        case .switchInRequested, .switchInOffered: return .failure(.vfNotInitialised)
        default: return .failure(.noSwitchInUnderWay)
        }
    }

    /// `switchInFailed`: the guest could not go on; it stays on emulation.
    mutating func guestFailedSwitchIn(_ why: String) -> Result<[Action], Refusal> {
        switchInFailed("guest: \(why)")
    }

    /// `switchOutBegin`: the guest has re-armed emulation; quiesce the VF and move the MAC back.
    mutating func guestBeganSwitchOut(now: UInt64) -> Result<[Action], Refusal> {
        switch state {
        case .switchOutRequested(let lease):
            state = .switchOutQuiesced(lease, expired: false)
            stepStartedAt = now
            return .success([.quiesceVFAndReturnMAC(lease)])
        case .switchOutAfterReset(let lease, let expired):
            state = .switchOutQuiesced(lease, expired: expired)
            stepStartedAt = now
            return .success([.quiesceVFAndReturnMAC(lease)])
        case .switchOutQuiesced: return .failure(.switchOutAlreadyBegun)
        default: return .failure(.noSwitchOutUnderWay)
        }
    }

    /// `switchOutDone`: the guest drained the VF path; release the VF. During a switch-in it
    /// means the guest gave the switch-in up (it stays on emulation).
    mutating func guestFinishedSwitchOut(now: UInt64) -> Result<[Action], Refusal> {
        switch state {
        case .switchOutQuiesced(let lease, _):
            state = .emulated
            // The reason a forced switch-out had (a VF reset) stays for status to show.
            lastSwitchMilliseconds = Double(now &- startedAt) / 1e6
            return .success([.releaseVF(lease)])
        case .switchInRequested(let lease), .switchInOffered(let lease), .switchInPrepared(let lease):
            return .success(abandon(lease, "the guest abandoned the switch-in"))
        case .switchOutRequested, .switchOutAfterReset: return .failure(.switchOutNotBegun)
        case .emulated, .passthrough: return .failure(.noSwitchOutUnderWay)
        }
    }

    // MARK: Helpers

    private mutating func begin(_ now: UInt64) {
        startedAt = now
        stepStartedAt = now
    }

    private mutating func finishSwitchIn(_ now: UInt64) {
        lastSwitchMilliseconds = Double(now &- startedAt) / 1e6
        reason = nil
    }

    private mutating func abandon(_ lease: VFLease, _ why: String) -> [Action] {
        state = .emulated
        lastSwitchMilliseconds = nil
        reason = why
        return [.releaseVF(lease)]
    }

    private func expiredReason(_ waited: String) -> String {
        "switch-out timed out: \(waited) (\(reason ?? "requested")); its VF stays reset until it answers or detaches"
    }
}
