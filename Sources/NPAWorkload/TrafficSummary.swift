import Foundation

/// What a traffic workload did, as `npa guest ... --json` prints it.
public struct TrafficSummary: Codable, Equatable, Sendable {
    public var role: String
    public var sent: Int = 0
    public var received: Int = 0
    public var lost: Int = 0
    public var duplicates: Int = 0
    public var outOfOrder: Int = 0
    public var invalid: Int = 0
    /// Drops by reason as the guest's vNIC (the host's device emulation) reports them.
    public var dropped: [String: UInt64] = [:]
    public var seconds: Double = 0
    public var mpps: Double = 0
    public var gbps: Double = 0
    public var frameBytes: Int = 0
    public var cpuSeconds: Double = 0
    public var doorbellKicks: UInt64 = 0
    public var interruptWaits: UInt64 = 0
    /// Windowed sends: times the window stayed full without an acknowledgement (frames lost).
    public var windowStalls = 0

    public init(role: String) { self.role = role }

    enum CodingKeys: String, CodingKey {
        case role, sent, received, lost, duplicates, invalid, dropped, seconds, mpps, gbps
        case outOfOrder = "out_of_order"
        case frameBytes = "frame_bytes"
        case cpuSeconds = "cpu_seconds"
        case doorbellKicks = "doorbell_kicks"
        case interruptWaits = "interrupt_waits"
        case windowStalls = "window_stalls"
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
            "\(role): sent \(sent), received \(received), lost \(lost), duplicates \(duplicates), out of order \(outOfOrder)",
            String(format: "  %.3f s, %.3f Mpps, %.3f Gbit/s (%d-byte frames), CPU %.3f s", seconds, mpps, gbps, frameBytes, cpuSeconds),
        ]
        if !dropped.isEmpty {
            lines.append("  dropped: " + dropped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}
