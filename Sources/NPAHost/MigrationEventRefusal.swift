/// An event a migration state machine does not expect in its state (a late or repeated
/// message, a peer out of step): refused, and nothing changed.
enum MigrationEventRefusal: Error, Equatable, CustomStringConvertible {
    case unexpected(String, in: String)

    var description: String {
        switch self {
        case .unexpected(let event, let state): "\(event) is not expected while \(state)"
        }
    }
}
