import NPASystem

/// Why a migration connection could not be made, or ended, or refused an operation. A refusal
/// of the peer's bytes is `refused` (and was counted); the rest are the environment or the peer
/// going away, which are not the peer's fault and are not counted.
public enum MigrationChannelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// This end refused what the peer sent and closed the connection.
    case refused(MigrationRefusal)
    /// The peer closed the connection (between records).
    case peerClosed
    /// The connection broke or could not be made (reset, refused, unreachable): the system's words.
    case failed(String)
    /// A blocking call's time ran out (the connection stays usable unless it was the handshake).
    case timedOut(String)
    /// This end closed the connection (`close()`).
    case closedLocally
    /// A message sent before the peer's hello arrived (its nonce is part of every tag).
    case notEstablished
    /// The message breaks the format's bounds: nothing was sent.
    case unencodable(MigrationMessageError)

    public var description: String {
        switch self {
        case .refused(let refusal): refusal.description
        case .peerClosed: "the peer closed the migration connection"
        case .failed(let what): "migration connection failed: \(what)"
        case .timedOut(let what): "migration connection timed out: \(what)"
        case .closedLocally: "the migration connection was closed"
        case .notEstablished: "the migration connection's handshake has not completed"
        case .unencodable(let error): "cannot send: \(error)"
        }
    }
}
