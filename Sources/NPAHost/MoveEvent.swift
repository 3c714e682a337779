/// What became of a vNIC moving between hosts, as each host sees it: what the orchestration
/// (the migration state machines) waits for. Reported on the host's thread, through
/// `HostDaemon.moveEventHandler`, in the order it happened.
package enum MoveEvent: Equatable, Sendable {
    /// Destination: the guest presented its token and its vNIC runs here now.
    case arrived(name: String)
    /// Destination: the guest presented its token but the vNIC could not be restored (its
    /// handles did not fit the state, ...), or the arrival expired unclaimed. Its name and MAC
    /// are free again.
    case arrivalFailed(name: String, reason: String)
    /// Source: the guest runs on the destination; its vNIC here is torn down.
    case departed(name: String)
    /// Source: the guest could not move (it said why, or its connection closed); if it is
    /// still attached its device runs here again.
    case moveFailed(name: String, reason: String)

    package var name: String {
        switch self {
        case .arrived(let name), .arrivalFailed(let name, _), .departed(let name), .moveFailed(let name, _): name
        }
    }
}
