import ArgumentParser
import Foundation
import NPAAdmin
import NPAControlProtocol
import NPASystem

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a host's vNICs: name, MAC, mode, link, counters.",
        discussion: "Asks the host's admin socket (mode 0600: run as the host's user); a guest's control connection may not.")

    @OptionGroup var socket: AdminSocketOptions

    @Flag(help: "Print {\"vnics\": [...]} as JSON.")
    var json = false

    func run() throws {
        let admin = socket.client
        let report: StatusReport
        do {
            report = try admin.status()
        } catch {
            throw CommandFailure("\(error)")
        }
        print(json ? report.json(pretty: true) : StatusTable.render(report))
    }
}

/// Renders a status report as a fixed-width table a person can read.
enum StatusTable {
    static func render(_ report: StatusReport) -> String {
        var rows = [
            ["vNIC", "MAC", "mode", "VF", "plugin", "last switch", "link", "state", "tx frames", "rx frames", "tx MB", "rx MB", "drops"]
        ]
        for v in report.vnics {
            let c = v.counters
            let drops = c.filter {
                ($0.key.hasPrefix("drop_") || $0.key == "vf_spoofed_drops" || $0.key == "vf_no_buffer_drops") && $0.value > 0
            }
            .sorted { $0.key < $1.key }.map { "\($0.key.hasPrefix("drop_") ? String($0.key.dropFirst(5)) : $0.key)=\($0.value)" }.joined(
                separator: " ")
            let passthrough = v.mode == "passthrough"
            rows.append([
                v.name, v.mac, v.mode, v.vf ?? "-", pluginCell(v),
                v.switchPending ?? v.lastSwitchMilliseconds.map { String(format: "%.2f ms", $0) } ?? v.lastSwitchError.map {
                    "failed: \($0)"
                } ?? "-",
                v.link, v.state,
                "\((passthrough ? c["vf_tx_frames"] : nil) ?? c["tx_frames"] ?? 0)",
                "\((passthrough ? c["vf_rx_frames"] : nil) ?? c["rx_frames"] ?? 0)",
                String(format: "%.1f", Double((passthrough ? c["vf_tx_bytes"] : nil) ?? c["tx_bytes"] ?? 0) / 1e6),
                String(format: "%.1f", Double((passthrough ? c["vf_rx_bytes"] : nil) ?? c["rx_bytes"] ?? 0) / 1e6),
                drops.isEmpty ? "-" : drops,
            ])
        }
        var text = table(rows)
        if let u = report.uplink {
            text +=
                "\nuplink (\(u.kind)): \(u.framesOut) frames out"
                + (u.framesInDropped.map { ", \($0) frames in dropped (PF queue full)" } ?? ", \(u.bytesOut) bytes")
        }
        for w in report.wires ?? [] {
            let c = w.counters
            let drops = c.filter { $0.key.hasPrefix("drop_") && $0.value > 0 }.sorted { $0.key < $1.key }
                .map { "\($0.key.dropFirst(5))=\($0.value)" }.joined(separator: " ")
            text +=
                "\nwire of \(w.port): tap \(w.interface) \(w.link)\(w.error.map { " (\($0))" } ?? ""), "
                + "\(c["frames_in"] ?? 0) frames in, \(c["frames_out"] ?? 0) out, drops: \(drops.isEmpty ? "-" : drops)"
        }
        if report.vnics.isEmpty { text += "\n(no vNICs attached)" }
        if let c = report.migrationChannel {
            let refused = c.recordsRefused.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            text +=
                "\nmigration channel: " + (c.listening.map { "listening on \($0)" } ?? "not listening")
                + ", records refused: \(refused.isEmpty ? "-" : refused.joined(separator: " ")), connections refused: \(c.connectionsRefused)"
        }
        for m in report.migrations ?? [] { text += "\n" + migrationLine(m) }
        if let store = report.plugins, !store.bundles.isEmpty || store.trustWarning != nil {
            text += "\n" + store.lines.joined(separator: "\n")
        }
        if let h = report.host {
            text +=
                "\nconnections: \(h.connections) of \(h.maxConnections); refused at the cap \(h.connectionsRefused), "
                + "closed without attaching \(h.attachTimeouts), accept out of descriptors \(h.acceptFDExhausted) (limit \(h.fdLimit))"
                + "\nadmin requests refused on guests' connections (admin_refused): \(h.adminRefused)"
        }
        return text
    }

    /// The plugin a vNIC in passthrough runs and the bundle the host injected it from:
    /// "npa-dring 1.0 (npa-dring.npabundle)".
    static func pluginCell(_ v: StatusReport.VNIC) -> String {
        switch (v.plugin, v.pluginBundle) {
        case (let plugin?, let bundle?): "\(plugin) (\(bundle))"
        case (let plugin?, nil): plugin
        case (nil, let bundle?): "(\(bundle))"
        case (nil, nil): "-"
        }
    }

    /// One migration (the last 32 are kept): where, its phases with their times, the downtime
    /// the hosts saw, frames forwarded and lost, and why it failed.
    static func migrationLine(_ m: StatusReport.Migration) -> String {
        let way = m.direction == "outgoing" ? "'\(m.vnic)' to \(m.peer)" : "'\(m.vnic)' from \(m.peer)"
        let phases = m.phases.map { String(format: "%@ %.2f", $0.name, $0.milliseconds) }.joined(separator: ", ")
        let downtime = m.deviceDowntimeMilliseconds.map { String(format: "; device downtime %.2f ms", $0) } ?? ""
        return "migration \(m.id) of \(way): \(m.phase)\(m.error.map { " (\($0))" } ?? "")"
            + String(format: " in %.2f ms", m.totalMilliseconds)
            + " [\(phases)]\(downtime); frames forwarded \(m.framesForwarded), lost \(m.framesLost)"
    }

    static func table(_ rows: [[String]]) -> String {
        let widths = (0..<rows[0].count).map { col in rows.map { $0[col].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
