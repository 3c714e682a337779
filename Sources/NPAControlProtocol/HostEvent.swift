import Foundation

/// One thing that happened on a host, as its event log keeps it and `npa events` prints it: a
/// guest attached or detached, a switch moved to its next phase (with the time since it was
/// requested), a request was refused (with the reason), a plugin faulted, a VF was reset, a
/// guest's bad input was counted or put its vNIC in the error state, a migration changed phase.
///
/// A plain value: the host makes it, the admin protocol carries it (`encode(into:)`, `init(from:)`)
/// and its JSON form (`json()`, one object per line for `npa events --json`) is stable: the keys
/// below, nothing else, `vnic` absent when the event concerns no vNIC.
public struct HostEvent: Equatable, Sendable, Codable {
    /// What kind of thing happened. The raw values are the stable names the JSON form uses.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case attach
        case detach
        /// A switch reached its next phase (requested, offered, VF programmed, passthrough,
        /// quiesced, emulated); the detail says which and how long since it was requested.
        case switchPhase = "switch"
        /// A switch ended without reaching its goal (abandoned, timed out); the detail says why.
        case switchFailed = "switch-failed"
        /// A request of a guest's or an administrator's was refused; the detail is the reason.
        case refusal
        /// The guest's plugin reported its device dead under it.
        case pluginFault = "plugin-fault"
        /// A VF was reset (FLR) without the guest's cooperation; the guest is switched out.
        case vfReset = "vf-reset"
        /// A guest's bad descriptor of a new kind was counted (the first of each reason per activation).
        case guestFault = "guest-fault"
        /// A guest's faults put its vNIC in the error state.
        case guestError = "guest-error"
        /// A migration began, changed phase, completed or failed.
        case migration
        /// An administrator changed a guest's policy (`npa policy set`); the detail says what
        /// changed and what followed (e.g. the guest switched out).
        case policy
        /// A capture of the vNIC's frames (`npa capture`) started or ended; the detail says how many.
        case capture
    }

    /// Monotonic, starting at 1, never reused while the host runs.
    public var sequence: UInt64
    /// Monotonic nanoseconds since the host started.
    public var uptimeNanoseconds: UInt64
    /// Wall-clock nanoseconds since the Unix epoch, when it was recorded.
    public var wallClockNanoseconds: UInt64
    public var kind: Kind
    /// The vNIC (guest name) it concerns, if any.
    public var vnic: String?
    /// One line: the phase and its time, the reason, the resource.
    public var detail: String

    /// The longest detail kept (longer ones are cut), so that a reply page holds many events.
    public static let maximumDetailBytes = 480

    public init(sequence: UInt64, uptimeNanoseconds: UInt64, wallClockNanoseconds: UInt64, kind: Kind, vnic: String?, detail: String) {
        self.sequence = sequence
        self.uptimeNanoseconds = uptimeNanoseconds
        self.wallClockNanoseconds = wallClockNanoseconds
        self.kind = kind
        self.vnic = vnic
        self.detail = detail
    }

    enum CodingKeys: String, CodingKey {
        case sequence = "seq"
        case time
        case wallClockNanoseconds = "wall_ns"
        case uptimeNanoseconds = "uptime_ns"
        case kind, vnic, detail
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sequence = try c.decode(UInt64.self, forKey: .sequence)
        uptimeNanoseconds = try c.decode(UInt64.self, forKey: .uptimeNanoseconds)
        wallClockNanoseconds = try c.decode(UInt64.self, forKey: .wallClockNanoseconds)
        kind = try c.decode(Kind.self, forKey: .kind)
        vnic = try c.decodeIfPresent(String.self, forKey: .vnic)
        detail = try c.decode(String.self, forKey: .detail)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sequence, forKey: .sequence)
        try c.encode(time, forKey: .time)
        try c.encode(wallClockNanoseconds, forKey: .wallClockNanoseconds)
        try c.encode(uptimeNanoseconds, forKey: .uptimeNanoseconds)
        try c.encode(kind, forKey: .kind)
        try c.encodeIfPresent(vnic, forKey: .vnic)
        try c.encode(detail, forKey: .detail)
    }

    /// The wall-clock time in UTC, ISO 8601 with microseconds: "2026-12-03T22:51:07.123456Z".
    public var time: String {
        let seconds = wallClockNanoseconds / 1_000_000_000
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(wallClockNanoseconds % 1_000_000_000 / 1000))
    }

    /// One JSON object on one line, keys sorted (the stable form `npa events --json` prints).
    public func json() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    /// One line a person reads: "#12 22:51:07.123456 switch      alpha  passthrough on nic0/vf0 after 1.20 ms".
    public var line: String {
        let kindColumn = kind.rawValue.padding(toLength: 13, withPad: " ", startingAt: 0)
        let clock = time.dropFirst(11).dropLast()  // "22:51:07.123456"
        return "#\(sequence) \(clock) \(kindColumn) \(vnic ?? "-")  \(detail)"
    }

    // MARK: Wire form (the admin protocol)

    /// Encoded size, for filling a reply page.
    public var encodedSize: Int { 8 + 8 + 8 + 2 + kind.rawValue.utf8.count + 2 + (vnic?.utf8.count ?? 0) + 1 + 2 + detail.utf8.count }

    public func encode(into w: inout ByteWriter) {
        w.u64(sequence)
        w.u64(uptimeNanoseconds)
        w.u64(wallClockNanoseconds)
        w.string(kind.rawValue)
        w.u8(vnic == nil ? 0 : 1)
        w.string(vnic ?? "")
        w.string(detail)
    }

    public init(from r: inout ByteReader) throws {
        sequence = try r.u64()
        uptimeNanoseconds = try r.u64()
        wallClockNanoseconds = try r.u64()
        let rawKind = try r.string()
        guard let kind = Kind(rawValue: rawKind) else { throw ProtocolError("unknown event kind '\(rawKind)'") }
        self.kind = kind
        let hasVNIC = try r.u8() != 0
        let name = try r.string()
        vnic = hasVNIC ? name : nil
        detail = try r.string()
    }
}
