import Foundation
import NPAControlProtocol

/// `npa demo`'s last scene: a guest in passthrough live-migrates from a host whose NIC is
/// `npa-dring` to one whose NIC is `npa-cq` and back while a peer streams to it. It is the
/// migration soak (`MigrationSoak`) cut to two migrations, printing each: its phases, the
/// downtime the guest saw, and where the guest runs afterwards (host, VF, plugin).
enum DemoMigrationScene {
    static let migrations = 2
    static let rate = 2_000.0

    static func run(plugins: PluginSource, quiet: Bool) throws -> MigrationSoak.Report {
        let soak = MigrationSoak(.init(migrations: migrations, rate: rate, settleMilliseconds: 100, plugins: plugins))
        if !quiet {
            print(
                """

                Live migration: host A (npa-dring NIC) and host B (npa-cq NIC) in this process, sharing a migration key.
                Guest 'roamer' runs in passthrough on a VF of A; the peer on its host streams \(Int(rate)) frames/s to it.
                It migrates A → B → A (npa migrate's request, to each host's admin socket) while the frames flow:
                """)
            soak.onMigration = { outcome, soak in print(describe(outcome, soak)) }
        }
        let report = try soak.run()
        if !quiet {
            print(
                String(
                    format:
                        "stream: %d frames sent, %d received by the guest, %d lost, %d duplicated, %d out of order; downtime at the guest max %.2f ms",
                    report.sent, report.received, report.lost, report.duplicates, report.outOfOrder, report.downtimeMilliseconds.max))
            print(
                report.leaks.isEmpty
                    ? "both hosts have what they had before (vNICs, connections, VFs, descriptors)" : "leaked: \(report.leaks)")
        }
        return report
    }

    private static func describe(_ outcome: MigrationSoak.Outcome, _ soak: MigrationSoak) -> String {
        var lines = ["\nmigration \(outcome.index + 1): host \(outcome.from) → host \(outcome.to)"]
        if let record = outcome.record {
            lines += MigrationText.render(record).split(separator: "\n").dropFirst().map { "  " + $0 }
        }
        lines.append(String(format: "  downtime at the guest (longest time without a frame): %.2f ms", outcome.downtimeMilliseconds))
        let side = soak.sides.first { $0.label == outcome.guestAt }
        let vnic = (try? side?.host.admin.status().vnics.first { $0.name == "roamer" }) ?? nil
        let where_ =
            vnic?.vf.map {
                "in passthrough on \($0) (\(side?.model ?? "") NIC, plugin \(vnic?.plugin ?? "?") from \(vnic?.pluginBundle ?? "?"))"
            } ?? "emulated"
        lines.append("  the guest now runs on host \(outcome.guestAt), \(where_)")
        return lines.joined(separator: "\n")
    }
}
