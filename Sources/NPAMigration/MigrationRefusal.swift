/// Why one end of a migration channel refused what its peer sent. A refusal closes the
/// connection at once (nothing after a bad record is trusted) and is counted by reason in
/// `MigrationChannelCounters`.
public struct MigrationRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        /// The hello was not ours: bad magic, another version, the same role as ours (a hello
        /// reflected back), a tag that does not verify (a host without the key), or it was cut short.
        case badHello
        /// A record's HMAC does not verify: altered, replayed from another connection, reflected
        /// back to its sender, or from a host without the key.
        case badTag
        /// An authentic record out of order: replayed within the connection, duplicated, reordered.
        case badSequence
        /// A record too short to be one, a stream that ended inside a record, or an authentic
        /// record whose message does not decode.
        case malformed
        /// A record length over the maximum, refused before its body was read.
        case oversize
        /// The peer did not complete its hello before the deadline.
        case handshakeTimeout
    }

    public let reason: Reason
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "migration channel refused (\(reason.rawValue)): \(detail)" }
}

/// Refusals by reason, for `npa status`. One instance is shared by everything a host does on
/// its migration channel (its listener and every connection it accepts or makes), so the host
/// reads one place. Single-threaded: it lives on the thread that runs those connections.
public final class MigrationChannelCounters {
    public struct Refused: Equatable, Sendable {
        public var badHello: UInt64 = 0
        public var badTag: UInt64 = 0
        public var badSequence: UInt64 = 0
        public var malformed: UInt64 = 0
        public var oversize: UInt64 = 0
        public var handshakeTimeout: UInt64 = 0

        public init() {}

        public var total: UInt64 { badHello + badTag + badSequence + malformed + oversize + handshakeTimeout }

        /// (reason, count) pairs in a fixed order, for a status table.
        public var byReason: [(reason: MigrationRefusal.Reason, count: UInt64)] {
            MigrationRefusal.Reason.allCases.map { ($0, self[$0]) }
        }

        public subscript(reason: MigrationRefusal.Reason) -> UInt64 {
            get {
                switch reason {
                case .badHello: badHello
                case .badTag: badTag
                case .badSequence: badSequence
                case .malformed: malformed
                case .oversize: oversize
                case .handshakeTimeout: handshakeTimeout
                }
            }
            set {
                switch reason {
                case .badHello: badHello = newValue
                case .badTag: badTag = newValue
                case .badSequence: badSequence = newValue
                case .malformed: malformed = newValue
                case .oversize: oversize = newValue
                case .handshakeTimeout: handshakeTimeout = newValue
                }
            }
        }
    }

    public private(set) var recordsRefused = Refused()

    public init() {}

    func count(_ refusal: MigrationRefusal) { recordsRefused[refusal.reason] += 1 }
}
