import Foundation

/// Draws a `BenchReport` as an SVG bar chart: four panels (Mbps per GHz, the passthrough/emulated
/// ratio against the RFC's, verified throughput, guest + host cores at equal load), each a group
/// per direction or frame size with one bar per mode, labelled with its value. Figures that span
/// decades (64 B vs 9014 B frames) get a logarithmic axis so every bar stays readable.
struct BenchPlot {
    let report: BenchReport

    private struct Group {
        var label: String
        var emulated: Double
        var passthrough: Double
        var note: String
    }

    private struct Panel {
        var title: String
        var unit: String
        var groups: [Group]
        var logarithmic = false
        /// Horizontal reference lines (value, label), e.g. the RFC's ratios.
        var references: [(Double, String)] = []
        /// One bar per group (the ratio panel) instead of one per mode.
        var single = false
    }

    private static let colors = (emulated: "#8c8c8c", passthrough: "#2a6fdb")
    private static let panelWidth = 330.0, panelHeight = 300.0, top = 70.0, left = 50.0

    func svg() -> String {
        let panels = makePanels()
        let width = Self.left + Double(panels.count) * (Self.panelWidth + 30)
        let height = Self.top + Self.panelHeight + 90
        let m = report.machine
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Self.left)" y="24" font-size="16" font-weight="bold">npa bench: emulated vs passthrough (\(Self.escape(m.model)), \(Self.escape(m.date)))</text>
            <text x="\(Self.left)" y="44">\(m.cpus) CPUs, clock \(String(format: "%.2f", m.ghz)) GHz (calibrated), \(Self.escape(m.polling)), \(m.queues) queue(s), \(m.secondsPerRun) s per run</text>
            <rect x="\(Self.left)" y="52" width="12" height="12" fill="\(Self.colors.emulated)"/><text x="\(Self.left + 16)" y="62">emulated</text>
            <rect x="\(Self.left + 90)" y="52" width="12" height="12" fill="\(Self.colors.passthrough)"/><text x="\(Self.left + 106)" y="62">passthrough</text>

            """
        for (i, panel) in panels.enumerated() {
            out += draw(panel, x: Self.left + Double(i) * (Self.panelWidth + 30), y: Self.top + 20)
        }
        return out + "</svg>\n"
    }

    private func makePanels() -> [Panel] {
        var perGHz: [Group] = [], throughput: [Group] = [], ratios: [Group] = []
        let sizes = Array(Set(report.results.map(\.frameBytes))).sorted()
        for size in sizes {
            for direction in ["TX", "RX"] {
                let rows = report.results.filter { $0.frameBytes == size && $0.direction == direction }
                guard let e = rows.first(where: { $0.mode == "emulated" }), let p = rows.first(where: { $0.mode == "passthrough" }) else {
                    continue
                }
                let ratio = report.ratios.first { $0.frameBytes == size && $0.direction == direction }?.passthroughOverEmulated
                perGHz.append(
                    Group(
                        label: "\(direction) \(size)", emulated: e.mbpsPerGHz, passthrough: p.mbpsPerGHz,
                        note: ratio.map { String(format: "×%.2f", $0) } ?? ""))
                if let ratio { ratios.append(Group(label: "\(direction) \(size)", emulated: 0, passthrough: ratio, note: "")) }
                if direction == "TX" {
                    throughput.append(
                        Group(
                            label: "\(size) B", emulated: e.gbps, passthrough: p.gbps,
                            note: String(format: "%.2f / %.2f Mpps", e.mpps, p.mpps)))
                }
            }
        }
        let equal = report.equalLoad.map {
            Group(
                label: "\($0.frameBytes) B", emulated: $0.emulatedCores, passthrough: $0.passthroughCores,
                note: String(format: "−%.0f %%", $0.savingPercent))
        }
        return [
            Panel(title: "Mbps per GHz of guest + host CPU", unit: "Mbps/GHz (log)", groups: perGHz, logarithmic: true),
            Panel(
                title: "Passthrough / emulated, Mbps per GHz", unit: "ratio", groups: ratios,
                references: [(1.43, "RFC TX 1.43"), (1.70, "RFC RX 1.70"), (2.0, "target 2.0")], single: true),
            Panel(title: "Throughput the receiver verified", unit: "Gbit/s (log)", groups: throughput, logarithmic: true),
            Panel(title: "Guest + host CPU at equal load", unit: "cores", groups: equal),
        ]
    }

    private func draw(_ panel: Panel, x: Double, y: Double) -> String {
        let h = Self.panelHeight, w = Self.panelWidth
        let values = panel.groups.flatMap { [$0.emulated, $0.passthrough] }.filter { $0 > 0 } + panel.references.map(\.0)
        let top = max(values.max() ?? 1, 1e-9)
        // Linear axes start at 0; logarithmic ones span whole decades, from one below the
        // smallest value (so the smallest bar is still a bar) to the one above the largest.
        let lowDecade = floor(log10(max(values.min() ?? 1, 1e-9))) - 1, highDecade = ceil(log10(top * 1.05))
        let maximum = top * 1.15
        func height(_ v: Double) -> Double {
            guard v > 0 else { return 0 }
            if panel.logarithmic { return max(0, (log10(v) - lowDecade) / max(highDecade - lowDecade, 1)) * h }
            return v / maximum * h
        }
        var out = "<text x=\"\(x)\" y=\"\(y - 6)\" font-weight=\"bold\">\(Self.escape(panel.title))</text>\n"
        out += "<line x1=\"\(x)\" y1=\"\(y + h)\" x2=\"\(x + w)\" y2=\"\(y + h)\" stroke=\"black\"/>\n"
        out += "<line x1=\"\(x)\" y1=\"\(y)\" x2=\"\(x)\" y2=\"\(y + h)\" stroke=\"black\"/>\n"
        let ticks: [Double] =
            panel.logarithmic
            ? stride(from: lowDecade, through: highDecade, by: 1).map { pow(10, $0) }
            : (0...4).map { top * Double($0) / 4 }
        for value in ticks {
            let ty = y + h - height(value)
            out += "<line x1=\"\(x - 4)\" y1=\"\(ty)\" x2=\"\(x + w)\" y2=\"\(ty)\" stroke=\"#e0e0e0\"/>"
            out += "<text x=\"\(x - 6)\" y=\"\(ty + 4)\" text-anchor=\"end\" font-size=\"10\">\(Self.short(value))</text>\n"
        }
        out += "<text x=\"\(x + 4)\" y=\"\(y + 12)\" font-size=\"10\" fill=\"#555\">\(Self.escape(panel.unit))</text>\n"
        for (value, label) in panel.references {
            let ty = y + h - height(value)
            out += "<line x1=\"\(x)\" y1=\"\(ty)\" x2=\"\(x + w)\" y2=\"\(ty)\" stroke=\"#d9534f\" stroke-dasharray=\"4 3\"/>"
            out +=
                "<text x=\"\(x + w - 2)\" y=\"\(ty - 3)\" text-anchor=\"end\" font-size=\"9\" fill=\"#d9534f\">\(Self.escape(label))</text>\n"
        }
        guard !panel.groups.isEmpty else { return out }
        let slot = w / Double(panel.groups.count)
        let bar = min(24, slot * 0.38)
        for (i, g) in panel.groups.enumerated() {
            let cx = x + slot * (Double(i) + 0.5)
            let bars =
                panel.single
                ? [(g.passthrough, -bar / 2, Self.colors.passthrough)]
                : [(g.emulated, -bar, Self.colors.emulated), (g.passthrough, 0.0, Self.colors.passthrough)]
            for (value, dx, color) in bars {
                let bh = height(value)
                out +=
                    "<rect x=\"\(cx + dx)\" y=\"\(y + h - bh)\" width=\"\(bar)\" height=\"\(bh)\" fill=\"\(color)\"><title>\(Self.short(value))</title></rect>"
                out +=
                    "<text x=\"\(cx + dx + bar / 2)\" y=\"\(y + h - bh - 3)\" text-anchor=\"middle\" font-size=\"9\">\(Self.short(value))</text>\n"
            }
            out += "<text x=\"\(cx)\" y=\"\(y + h + 16)\" text-anchor=\"middle\" font-size=\"10\">\(Self.escape(g.label))</text>"
            out +=
                "<text x=\"\(cx)\" y=\"\(y + h + 32)\" text-anchor=\"middle\" font-size=\"10\" fill=\"\(Self.colors.passthrough)\">\(Self.escape(g.note))</text>\n"
        }
        return out
    }

    private static func short(_ v: Double) -> String {
        v >= 100 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.2f", v)
    }

    private static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
            of: ">", with: "&gt;")
    }
}
