extension StatusReport {
    /// The host's migration channel: what it refused, by reason (a host without the key, a
    /// record altered, replayed or reordered...), and connections shed at its cap.
    public struct MigrationChannel: Codable, Equatable, Sendable {
        /// Where it takes migrations; nil if it only sends.
        public var listening: String?
        public var recordsRefused: [String: UInt64]
        public var connectionsRefused: UInt64

        public init(listening: String?, recordsRefused: [String: UInt64], connectionsRefused: UInt64) {
            self.listening = listening
            self.recordsRefused = recordsRefused
            self.connectionsRefused = connectionsRefused
        }

        enum CodingKeys: String, CodingKey {
            case listening
            case recordsRefused = "records_refused"
            case connectionsRefused = "connections_refused"
        }
    }

    /// One live migration as one of its two hosts saw it (`npa status`, `npa migrate --json`).
    public struct Migration: Codable, Equatable, Sendable {
        public struct Phase: Codable, Equatable, Sendable {
            public var name: String
            public var milliseconds: Double
            public init(name: String, milliseconds: Double) {
                self.name = name
                self.milliseconds = milliseconds
            }
        }

        /// Unique on its host; `npa migrate` follows the migration by it.
        public var id: UInt64
        public var vnic: String
        /// "outgoing" (this host is the source) or "incoming" (the destination).
        public var direction: String
        /// The other host: the address migrated to, or the source's connection.
        public var peer: String
        /// The phase under way, or "completed" / "failed".
        public var phase: String
        /// Each phase that ended, in order, with how long it took.
        public var phases: [Phase]
        public var totalMilliseconds: Double
        /// Whether the guest's device resumed at the destination (the point of no return).
        public var committed: Bool
        /// From the device stopping at the source to it resuming at the destination, as the
        /// hosts saw it (the guest's own downtime is measured where it receives).
        public var deviceDowntimeMilliseconds: Double?
        /// Frames that reached the source for the guest after it stopped there and were
        /// forwarded to the destination (outgoing), or delivered from the source (incoming).
        public var framesForwarded: UInt64
        /// Frames held for the guest that could not be forwarded (the channel broke after the
        /// commit, or the hold overflowed).
        public var framesLost: UInt64
        /// Why it failed, for a failed one.
        public var error: String?

        public init(
            id: UInt64, vnic: String, direction: String, peer: String, phase: String, phases: [Phase], totalMilliseconds: Double,
            committed: Bool, deviceDowntimeMilliseconds: Double? = nil, framesForwarded: UInt64 = 0, framesLost: UInt64 = 0,
            error: String? = nil
        ) {
            self.id = id
            self.vnic = vnic
            self.direction = direction
            self.peer = peer
            self.phase = phase
            self.phases = phases
            self.totalMilliseconds = totalMilliseconds
            self.committed = committed
            self.deviceDowntimeMilliseconds = deviceDowntimeMilliseconds
            self.framesForwarded = framesForwarded
            self.framesLost = framesLost
            self.error = error
        }

        public var isFinished: Bool { phase == "completed" || phase == "failed" }

        enum CodingKeys: String, CodingKey {
            case id, vnic, direction, peer, phase, phases, committed, error
            case totalMilliseconds = "total_ms"
            case deviceDowntimeMilliseconds = "device_downtime_ms"
            case framesForwarded = "frames_forwarded"
            case framesLost = "frames_lost"
        }
    }
}
