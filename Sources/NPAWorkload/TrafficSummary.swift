import Foundation

/// What a traffic workload did, as `npa guest ... --json` prints it, and whether everything it
/// was asked to do was verified (`failures`, which `npa guest` turns into its exit status).
public struct TrafficSummary: Codable, Equatable, Sendable {
    public var role: String
    /// Frames the workload was asked to send (send) or expected to receive (recv, duplex, echo;
    /// 0 for an echo without a count).
    public var expected: Int = 0
    public var sent: Int = 0
    /// Distinct frames verified (each flow's sequence numbers once; any number of flows).
    public var received: Int = 0
    /// Frames expected but never verified: `expected - received` for a receiver.
    public var lost: Int = 0
    public var duplicates: Int = 0
    public var outOfOrder: Int = 0
    public var invalid: Int = 0
    /// Drops by reason as the guest's vNIC (the host's device emulation) reports them.
    public var dropped: [String: UInt64] = [:]
    public var seconds: Double = 0
    public var mpps: Double = 0
    public var gbps: Double = 0
    /// Bytes the rates count (frames sent, or verified as received, at their actual lengths).
    public var bytes: Int = 0
    /// The mean length of those frames.
    public var frameBytes: Int = 0
    public var cpuSeconds: Double = 0
    public var doorbellKicks: UInt64 = 0
    public var interruptWaits: UInt64 = 0
    /// Windowed sends: times the window stayed full without an acknowledgement (frames lost).
    public var windowStalls = 0
    /// Why the run stopped early because the host went away (nil: it did not).
    public var hostGone: String?

    public init(role: String) { self.role = role }

    enum CodingKeys: String, CodingKey {
        case role, expected, sent, received, lost, duplicates, invalid, dropped, seconds, mpps, gbps, bytes
        case outOfOrder = "out_of_order"
        case frameBytes = "frame_bytes"
        case cpuSeconds = "cpu_seconds"
        case doorbellKicks = "doorbell_kicks"
        case interruptWaits = "interrupt_waits"
        case windowStalls = "window_stalls"
        case hostGone = "host_gone"
    }

    /// Takes a receiver's verification against the frames it expected.
    public mutating func record(_ verifier: FlowVerifier, expected: Int) {
        self.expected = expected
        received = verifier.unique
        duplicates = verifier.duplicates
        outOfOrder = verifier.outOfOrder
        invalid = verifier.invalid
        lost = max(0, expected - verifier.unique)
    }

    /// What went wrong, one phrase each; empty when everything asked for was done and verified.
    /// A sender fails when it could not send everything or its vNIC dropped frames; a receiver
    /// when frames were lost, duplicated, reordered or invalid.
    public var failures: [String] {
        var found: [String] = []
        if role == "send" || role == "duplex", sent < expected { found.append("sent \(sent) of \(expected)") }
        if role != "send", lost > 0 { found.append("\(lost) lost") }
        if role == "echo", sent < received { found.append("echoed \(sent) of \(received)") }
        if duplicates > 0 { found.append("\(duplicates) duplicates") }
        if outOfOrder > 0 { found.append("\(outOfOrder) out of order") }
        if invalid > 0 { found.append("\(invalid) invalid") }
        let drops = dropped.values.reduce(0, +)
        if drops > 0 { found.append("\(drops) dropped by the vNIC") }
        return found
    }

    public func json() -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func decode(_ text: String) throws -> TrafficSummary {
        try JSONDecoder().decode(TrafficSummary.self, from: Data(text.utf8))
    }

    /// Human-readable lines.
    public func text() -> String {
        var lines = [
            "\(role): sent \(sent), received \(received), lost \(lost), duplicates \(duplicates), out of order \(outOfOrder), invalid \(invalid)",
            String(
                format: "  %.3f s, %.3f Mpps, %.3f Gbit/s (%d bytes, %d-byte frames on average), CPU %.3f s", seconds, mpps, gbps, bytes,
                frameBytes, cpuSeconds),
        ]
        if !dropped.isEmpty {
            lines.append("  dropped: " + dropped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}
