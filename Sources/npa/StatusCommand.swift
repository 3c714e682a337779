import ArgumentParser
import Foundation
import NPAControlProtocol
import NPASystem

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List a host's vNICs: name, MAC, mode, link, counters.")

    @Option(help: "The host's control socket.")
    var host: String = "/tmp/npa.sock"

    @Flag(help: "Print {\"vnics\": [...]} as JSON.")
    var json = false

    func run() throws {
        let report: StatusReport
        do {
            report = try fetchStatus(socket: host)
        } catch {
            throw CommandFailure("cannot reach the host at \(host): \(error)")
        }
        print(json ? report.json(pretty: true) : StatusTable.render(report))
    }
}

func fetchStatus(socket path: String) throws -> StatusReport {
    let socket = try SeqPacketSocket.connect(path: path)
    try socket.send(ControlMessage.statusRequest.encode())
    guard socket.waitReadable(timeoutMilliseconds: 5000), let (bytes, _) = try socket.receive() else {
        throw CommandFailure("the host did not answer")
    }
    let reply = try ControlMessage.parse(bytes)
    guard case .statusReply(let json) = reply else { throw CommandFailure("unexpected reply from the host: \(reply)") }
    return try StatusReport.decode(json)
}

/// Renders a status report as a fixed-width table a person can read.
enum StatusTable {
    static func render(_ report: StatusReport) -> String {
        var rows = [["vNIC", "MAC", "mode", "VF", "plugin", "last switch", "link", "state", "tx frames", "rx frames", "tx MB", "rx MB", "drops"]]
        for v in report.vnics {
            let c = v.counters
            let drops = c.filter { ($0.key.hasPrefix("drop_") || $0.key == "vf_spoofed_drops" || $0.key == "vf_no_buffer_drops") && $0.value > 0 }
                .sorted { $0.key < $1.key }.map { "\($0.key.hasPrefix("drop_") ? String($0.key.dropFirst(5)) : $0.key)=\($0.value)" }.joined(separator: " ")
            let passthrough = v.mode == "passthrough"
            rows.append([
                v.name, v.mac, v.mode, v.vf ?? "-", v.plugin ?? "-",
                v.switchPending ?? v.lastSwitchMilliseconds.map { String(format: "%.2f ms", $0) } ?? v.lastSwitchError.map { "failed: \($0)" } ?? "-",
                v.link, v.state,
                "\((passthrough ? c["vf_tx_frames"] : nil) ?? c["tx_frames"] ?? 0)", "\((passthrough ? c["vf_rx_frames"] : nil) ?? c["rx_frames"] ?? 0)",
                String(format: "%.1f", Double(c["tx_bytes"] ?? 0) / 1e6), String(format: "%.1f", Double(c["rx_bytes"] ?? 0) / 1e6),
                drops.isEmpty ? "-" : drops,
            ])
        }
        var text = table(rows)
        if let u = report.uplink {
            text += "\nuplink (\(u.kind)): \(u.framesOut) frames out" + (u.framesInDropped.map { ", \($0) frames in dropped (PF queue full)" } ?? ", \(u.bytesOut) bytes")
        }
        if report.vnics.isEmpty { text += "\n(no vNICs attached)" }
        if let h = report.host {
            text += "\nconnections: \(h.connections) of \(h.maxConnections); refused at the cap \(h.connectionsRefused), "
                + "closed without attaching \(h.attachTimeouts), accept out of descriptors \(h.acceptFDExhausted) (limit \(h.fdLimit))"
        }
        return text
    }

    static func table(_ rows: [[String]]) -> String {
        let widths = (0..<rows[0].count).map { col in rows.map { $0[col].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
