import Foundation
import NPAControlProtocol
import NPAShell

/// What a migration soak is given and what it reports, and one side of it (a host, its NIC
/// model and the peer that streams to the migrating guest while the guest is there).
extension MigrationSoak {
    struct Options {
        var migrations: Int
        /// Frames per second of the stream to the migrating guest.
        var rate: Double = 5_000
        var frameBytes = 512
        /// Steady streaming between two migrations, outside any downtime window.
        var settleMilliseconds = 20
        var plugins: PluginSource
        /// Both hosts' `migration_timeout_ms` (nil: the default); the source's forwarding grace
        /// after the destination announced the guest is the smaller of it and 200 ms.
        var migrationTimeoutMilliseconds: Int? = nil
        var forwardingQuietMilliseconds: Int? = nil
        /// Whether the guest runs in passthrough (switched in at A, and at each destination); off,
        /// it stays emulated throughout.
        var passthrough = true
        /// Host A's and host B's NIC models.
        var models = ("npa-dring", "npa-cq")
    }

    /// One migration as the soak saw it: the source's record and the receiving guest's gap.
    struct Outcome {
        var index: Int
        var from: String
        var to: String
        var record: StatusReport.Migration?
        /// The longest time without a frame delivered to the guest, from the request until the
        /// guest received again after being switched in at the destination.
        var downtimeMilliseconds: Double
        /// Where the guest is afterwards ("A" or "B") and its data path there.
        var guestAt: String
        var guestMode: String
        var completed: Bool { record?.phase == "completed" }
    }

    /// What the run did and found; `failures` and `leaks` empty and `lost` 0 mean it held.
    struct Report: Codable {
        var migrations = 0, completed = 0, failed = 0, switchedIn = 0
        var models: [String] = []
        var rate = 0.0, frameBytes = 0, seconds = 0.0
        var sent = 0, received = 0, lost = 0, duplicates = 0, outOfOrder = 0, invalid = 0
        /// Self-announcements of the guest's own MAC that reached the guest (not the stream's).
        var announcementsReceived = 0
        /// The guest vNIC's drop and migration counters at the end, per host ("B drop_…").
        var guestCounters: [String: UInt64] = [:]
        /// The first invalid frames, in hex (at most 4, 64 bytes each).
        var invalidSamples: [String] = []
        var downtimeMilliseconds = Soak.Percentiles([])
        var steadyMaxGapMilliseconds = 0.0
        var deviceDowntimeMilliseconds = Soak.Percentiles([])
        var phaseMedianMilliseconds: [String: Double] = [:]
        var framesForwarded: UInt64 = 0, framesLostByHosts: UInt64 = 0
        var before: [String: Int] = [:], after: [String: Int] = [:]
        var leaks: [String] = []
        var failures: [String] = []
        /// What is worth knowing but breaks no invariant (the guest hearing its own announcement).
        var notes: [String] = []
        /// The bundle each host injected, per NIC model (none when the guest stays emulated).
        var plugins: [StatusReport.PluginInjection] = []

        /// Nothing lost, duplicated, reordered or leaked, and every migration completed with the
        /// guest switched in at its destination.
        var held: Bool { lost == 0 && duplicates == 0 && outOfOrder == 0 && invalid == 0 && failures.isEmpty && leaks.isEmpty }
        var goalMet: Bool { held && downtimeMilliseconds.p99 < 20 }

        enum CodingKeys: String, CodingKey {
            case migrations, completed, failed, models, rate, seconds, sent, received, lost, duplicates, invalid, before, after, leaks,
                failures, notes, plugins
            case switchedIn = "switched_in"
            case frameBytes = "frame_bytes"
            case outOfOrder = "out_of_order"
            case downtimeMilliseconds = "downtime_ms"
            case steadyMaxGapMilliseconds = "steady_max_gap_ms"
            case deviceDowntimeMilliseconds = "device_downtime_ms"
            case phaseMedianMilliseconds = "phase_median_ms"
            case framesForwarded = "frames_forwarded"
            case framesLostByHosts = "frames_lost_by_hosts"
            case announcementsReceived = "announcements_received"
            case invalidSamples = "invalid_samples"
            case guestCounters = "guest_counters"
        }
    }

    /// A host of the soak: its label ("A", "B"), NIC model, where it takes migrations, and the
    /// peer on it that streams to the migrating guest while the guest is on this host.
    final class Side {
        let label: String
        let model: String
        let host: InProcessHost
        let address: String
        let peer: VirtualNIC
        init(label: String, model: String, host: InProcessHost, address: String, peer: VirtualNIC) {
            self.label = label
            self.model = model
            self.host = host
            self.address = address
            self.peer = peer
        }
    }
}

extension MigrationSoak.Report {
    /// The summary as lines a person reads.
    var text: String {
        func ms(_ p: Soak.Percentiles) -> String { String(format: "p50 %.2f  p99 %.2f  max %.2f", p.p50, p.p99, p.max) }
        var lines = [
            String(
                format: "migration soak: %d migrations between A (%@) and B (%@) in %.1f s; %.0f frames/s of %d B to the migrating guest",
                migrations, models.first ?? "", models.last ?? "", seconds, rate, frameBytes),
            "  migrations: \(completed) completed, \(failed) failed; switched in to a VF at the destination: \(switchedIn)/\(completed)",
            "  downtime at the receiving guest ms: " + ms(downtimeMilliseconds)
                + String(format: "  (longest gap between migrations: %.2f)", steadyMaxGapMilliseconds),
            "  device downtime (as the hosts saw it) ms: " + ms(deviceDowntimeMilliseconds),
            "  phases (median ms): "
                + phaseMedianMilliseconds.sorted { $0.key < $1.key }.map { String(format: "%@ %.2f", $0.key, $0.value) }.joined(
                    separator: ", "),
            "  stream: sent \(sent), received \(received), lost \(lost), duplicates \(duplicates), out of order \(outOfOrder), invalid \(invalid), its own announcements received \(announcementsReceived); forwarded by the source host \(framesForwarded), lost by the hosts \(framesLostByHosts)",
            "  before/after: " + before.keys.sorted().map { "\($0) \(before[$0]!)/\(after[$0] ?? -1)" }.joined(separator: ", "),
        ]
        if !guestCounters.isEmpty {
            lines.append(
                "  the guest's vNIC counters (drops, migration): "
                    + guestCounters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        for failure in failures.prefix(10) { lines.append("  failed: " + failure) }
        for note in notes.prefix(10) { lines.append("  note: " + note) }
        for sample in invalidSamples { lines.append("  invalid frame: " + sample) }
        lines.append(leaks.isEmpty ? "  nothing leaked" : "  leaked: " + leaks.joined(separator: "; "))
        lines.append(
            "  goal (downtime p99 below 20 ms, nothing lost): "
                + (goalMet ? "met" : held ? "not met (p99 \(String(format: "%.2f", downtimeMilliseconds.p99)) ms)" : "not met"))
        return lines.joined(separator: "\n")
    }
}
