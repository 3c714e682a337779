import NPAControlProtocol

/// The vNICs this host expects from other hosts: each a validated device state under the
/// one-time token its guest will present (`resume`), with a deadline. A token is taken once —
/// used, cancelled or expired, it is gone — and every refused presentation is counted by why.
///
/// It holds the states and nothing else: reserving the guest's MAC (`Admission`) and name, and
/// restoring the device, are the control server's. Only the host's thread touches it.
final class PendingArrivals {
    struct Arrival {
        var state: DeviceState
        let deadline: UInt64
    }

    /// Why a presented token was refused.
    enum TokenRefusal: Error, Equatable, CustomStringConvertible {
        /// Not 16 bytes, or no arrival was ever expected under it (or it was used or cancelled).
        case unknown
        /// It was expected, but its deadline passed first.
        case expired(name: String)

        var description: String {
            switch self {
            case .unknown: "the move token is not one this host expects (wrong, already used or cancelled)"
            case .expired(let name): "the move token for guest '\(name)' expired before the guest resumed"
            }
        }
    }

    private var arrivals: [MoveToken: Arrival] = [:]
    /// Presentations refused, by reason: what `npa status` and the tests read.
    private(set) var unknownTokens: UInt64 = 0
    private(set) var expiredTokens: UInt64 = 0

    var count: Int { arrivals.count }

    /// Whether an arrival holds the guest name `name`.
    func holds(name: String) -> Bool { arrivals.values.contains { $0.state.name == name } }

    func holds(token: MoveToken) -> Bool { arrivals[token] != nil }

    func expect(_ state: DeviceState, token: MoveToken, deadline: UInt64) {
        precondition(arrivals[token] == nil, "a move token is issued once")
        arrivals[token] = Arrival(state: state, deadline: deadline)
    }

    /// What presenting a token found.
    enum Taken {
        case arrival(DeviceState)
        /// Its deadline passed: refused, and its reservations are the caller's to release.
        case expired(DeviceState)
        case unknown
    }

    /// Takes the arrival `token` names: it is gone from the table whatever the answer.
    func take(_ token: MoveToken, now: UInt64) -> Taken {
        guard let arrival = arrivals.removeValue(forKey: token) else {
            unknownTokens &+= 1
            return .unknown
        }
        guard now < arrival.deadline else {
            expiredTokens &+= 1
            return .expired(arrival.state)
        }
        return .arrival(arrival.state)
    }

    /// Forgets the arrival `token` names; returns its state, nil if there was none.
    func cancel(_ token: MoveToken) -> DeviceState? { arrivals.removeValue(forKey: token)?.state }

    /// Removes and returns the arrivals whose deadline passed (their reservations are the
    /// caller's to release).
    func removeExpired(now: UInt64) -> [DeviceState] {
        let expired = arrivals.filter { $0.value.deadline <= now }
        for token in expired.keys { arrivals[token] = nil }
        return expired.values.map(\.state)
    }
}
