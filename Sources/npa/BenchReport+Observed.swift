import Foundation

/// `npa bench --observe`: each mode's full-rate figures with an observer running beside the
/// traffic, next to the plain run's (`observer` "none").
extension BenchReport {
    struct Observed: Codable {
        var mode: String
        var frameBytes: Int
        /// "none", or what ran beside the traffic (`BenchObserver`).
        var observer: String
        var mpps: Double
        /// Cores: the host thread, and both guests.
        var hostCores: Double
        var guestCores: Double
        /// Mbps per GHz of the receiving guest's and the host's CPU (the RX row's measure).
        var mbpsPerGHz: Double
        /// This run over the plain run of its mode: throughput, and Mbps per GHz.
        var relativeMpps: Double
        var relativeMbpsPerGHz: Double
        /// Scrapes the observer made during the run, or frames the capture wrote.
        var observations: Int
        /// Capture copies dropped because its writer fell behind (the frames were delivered).
        var observerDropped: UInt64
        var received: Int
        var sent: Int

        enum CodingKeys: String, CodingKey {
            case mode, observer, mpps, observations, received, sent
            case observerDropped = "observer_dropped"
            case frameBytes = "frame_bytes"
            case hostCores = "host_cores"
            case guestCores = "guest_cores"
            case mbpsPerGHz = "mbps_per_ghz"
            case relativeMpps = "relative_mpps"
            case relativeMbpsPerGHz = "relative_mbps_per_ghz"
        }
    }

    static func mbpsPerGHz(_ r: BenchRun, ghz: Double) -> Double {
        let cores = r.cores(r.receiverCPU + r.hostCPU)
        return cores > 0 ? r.gbps * 1000 / (cores * ghz) : 0
    }

    mutating func add(observed r: BenchRun, against plain: BenchRun, ghz: Double) {
        let efficiency = Self.mbpsPerGHz(r, ghz: ghz), plainEfficiency = Self.mbpsPerGHz(plain, ghz: ghz)
        observed.append(
            Observed(
                mode: r.mode, frameBytes: r.frameBytes, observer: r.observer?.rawValue ?? "none", mpps: r.mpps,
                hostCores: r.cores(r.hostCPU), guestCores: r.cores(r.senderCPU + r.receiverCPU), mbpsPerGHz: efficiency,
                relativeMpps: plain.mpps > 0 ? r.mpps / plain.mpps : 0,
                relativeMbpsPerGHz: plainEfficiency > 0 ? efficiency / plainEfficiency : 0, observations: r.observations,
                observerDropped: r.observerDropped,
                received: r.received, sent: r.sent))
    }

    /// The table of `--observe`, or nothing without it.
    func observedText() -> String {
        guard !observed.isEmpty else { return "" }
        var out = "\nthe cost of operating the host (full rate, each observed run back to back with a plain one; median of each):\n"
        var rows = [
            [
                "mode", "frame B", "beside the traffic", "verified/sent", "Mpps", "host", "guests", "Mbps/GHz", "vs none: Mpps", "Mbps/GHz",
                "scrapes / captured (dropped)",
            ]
        ]
        for o in observed {
            rows.append([
                o.mode, "\(o.frameBytes)", BenchObserver(rawValue: o.observer)?.label ?? o.observer, "\(o.received)/\(o.sent)",
                String(format: "%.3f", o.mpps), String(format: "%.2f", o.hostCores), String(format: "%.2f", o.guestCores),
                String(format: "%.0f", o.mbpsPerGHz), String(format: "%.3f", o.relativeMpps), String(format: "%.3f", o.relativeMbpsPerGHz),
                o.observer == "none" ? "-" : o.observer == "capture" ? "\(o.observations) (\(o.observerDropped))" : "\(o.observations)",
            ])
        }
        return out + StatusTable.table(rows)
    }
}
