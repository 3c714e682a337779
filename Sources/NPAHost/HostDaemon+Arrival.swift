import NPAControlProtocol
import NPASystem

/// The destination half of moving a vNIC here from another host (the orchestration calls it;
/// the guest's `resume` comes through `ControlServer+Attach.swift`):
///
///     expectArrival(stateBytes:token:)  the state decoded and validated as strictly as guest
///                                       input, admitted under this host's policy; the guest's
///                                       name and MAC held for it until the deadline
///     guest: resume(token)              the device restored on the guest's memory, eventfds and
///                                       register page → MoveEvent.arrived (or .arrivalFailed)
///     cancelArrival(token:)             the move was called off: name and MAC are free again
///
/// An arrival whose deadline passes is noticed at the next `expectArrival`, `resume` or attach
/// (its `arrivalFailed` is reported then); the orchestration's own deadline should cancel it.
///
/// Every call runs on the host's thread, between data-path passes.
extension HostDaemon {
    /// How long an arrival waits for its guest by default.
    package static let defaultArrivalTimeoutNanoseconds: UInt64 = 30_000_000_000

    /// Expects the vNIC `stateBytes` describes, whose guest will present `token` within
    /// `timeoutNanoseconds`. Refuses (changing nothing) a state that does not decode or validate,
    /// that this host's policy or capacity does not admit (its MAC, VLANs, rx mode, queues), or
    /// whose guest name or MAC is taken here. Returns the guest's name and MAC.
    @discardableResult
    package func expectArrival(
        stateBytes: [UInt8], token: MoveToken, timeoutNanoseconds: UInt64 = HostDaemon.defaultArrivalTimeoutNanoseconds
    ) throws(ArrivalRefusal) -> (name: String, mac: MACAddress) {
        server.releaseExpiredArrivals()
        guard token.isWellFormed else { throw .malformedToken }
        guard !server.arrivals.holds(token: token) else { throw .tokenInUse }
        let state: DeviceState
        do {
            state = try DeviceState(decoding: stateBytes)
        } catch {
            throw .state(error.description)
        }
        let name = state.name
        guard dataPath.device(named: name) == nil, !server.arrivals.holds(name: name) else { throw .nameInUse(name) }
        let queues = max(state.queues.transmit.count, state.queues.receive.count)
        guard queues <= configuration.maxQueuesPerVNIC else {
            throw .refused("guest '\(name)' has \(queues) queues, this host allows \(configuration.maxQueuesPerVNIC) (max_queues)")
        }
        guard server.guestConnectionCount + server.arrivals.count < configuration.maxConnections else {
            throw .refused("the host has no room for another guest (max_connections \(configuration.maxConnections))")
        }
        if let refusal = admission.admitRestored(state, policy: server.policies.policy(forGuest: name), port: nil) {
            throw .admission(refusal.description)
        }
        admission.reserve(state.identity.mac, for: name)
        server.arrivals.expect(state, token: token, deadline: Clock.monotonicNanoseconds() &+ timeoutNanoseconds)
        logger.info("expecting guest '\(name)' (MAC \(state.identity.mac)) from another host")
        return (name, state.identity.mac)
    }

    /// Calls off the arrival `token` names; false if there was none (used, expired, never made).
    @discardableResult
    package func cancelArrival(token: MoveToken) -> Bool {
        guard let state = server.arrivals.cancel(token) else { return false }
        admission.releaseReservation(of: state.identity.mac)
        logger.info("the arrival of guest '\(state.name)' was called off")
        return true
    }

    /// Arrivals waiting for their guest now.
    package var pendingArrivalCount: Int { server.arrivals.count }

    /// `resume` tokens refused: not expected (wrong, used, cancelled) and expired.
    package var refusedMoveTokens: (unknown: UInt64, expired: UInt64) {
        (server.arrivals.unknownTokens, server.arrivals.expiredTokens)
    }

    /// Told what became of each move, on the host's thread (set it before `run()`, or from the
    /// host's thread).
    package var moveEventHandler: ((MoveEvent) -> Void)? {
        get { server.moveEventHandler }
        set { server.moveEventHandler = newValue }
    }
}

/// Why the destination refused to expect a vNIC. A refusal changes nothing.
package enum ArrivalRefusal: Error, Equatable, CustomStringConvertible {
    case malformedToken
    case tokenInUse
    /// The bytes are no valid device state (`DeviceStateError`'s words, naming the field).
    case state(String)
    case nameInUse(String)
    /// This host's policy does not admit the guest's MAC, VLANs or rx mode (or the MAC is taken).
    case admission(String)
    /// Capacity or configuration (queues, connections).
    case refused(String)

    package var description: String {
        switch self {
        case .malformedToken: "a move token has \(MoveToken.size) bytes"
        case .tokenInUse: "that move token is already issued on this host"
        case .state(let reason): reason
        case .nameInUse(let name): "a guest named '\(name)' is already here or on its way"
        case .admission(let reason): reason
        case .refused(let reason): reason
        }
    }
}
