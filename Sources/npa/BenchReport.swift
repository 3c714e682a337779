import Foundation
import NPAControlProtocol

/// The outcome of `npa bench`: per direction, mode and frame size the full-rate figures, the
/// passthrough/emulated ratios, and the CPU each mode needs at one equal offered load. Encodes
/// to the JSON `npa bench --json` prints and renders the text table.
struct BenchReport: Codable {
    struct Cores: Codable {
        var guest: Double
        var host: Double
        var hardware: Double
    }

    /// One row: TX charges the sending guest and the host, RX the receiving guest and the host;
    /// the NIC model's engine is "hardware" and, as in the RFC, not charged.
    struct Result: Codable {
        var direction: String
        var mode: String
        var frameBytes: Int
        var mpps: Double
        var gbps: Double
        var cpuCores: Cores
        var mbpsPerGHz: Double
        /// Eventfd signals per MB verified: doorbell kicks from the guests' drivers plus
        /// interrupts raised by the engines (both counted in the run).
        var wakeupsPerMB: Double
        var doorbellKicks: UInt64
        var interrupts: UInt64
        var sent: Int
        var received: Int
        var dropped: UInt64
        /// Verification failures (should all be 0): repeated, reordered or malformed frames.
        var duplicates: Int
        var outOfOrder: Int
        var invalid: Int
        var coreRoundTripNS: Double?
        enum CodingKeys: String, CodingKey {
            case direction, mode, mpps, gbps, sent, received, dropped, duplicates, invalid
            case outOfOrder = "out_of_order"
            case coreRoundTripNS = "core_round_trip_ns"
            case frameBytes = "frame_bytes"
            case cpuCores = "cpu_cores"
            case mbpsPerGHz = "mbps_per_ghz"
            case wakeupsPerMB = "wakeups_per_mb"
            case doorbellKicks = "doorbell_kicks"
            case interrupts
        }
    }

    struct Ratio: Codable {
        var direction: String
        var frameBytes: Int
        var passthroughOverEmulated: Double
        enum CodingKeys: String, CodingKey {
            case direction
            case frameBytes = "frame_bytes"
            case passthroughOverEmulated = "passthrough_over_emulated"
        }
    }

    /// Guest + host cores each mode needs to carry the same paced load (hardware shown apart).
    struct EqualLoad: Codable {
        var frameBytes: Int
        var offeredFPS: Double
        var emulatedCores: Double
        var passthroughCores: Double
        var emulatedHardwareCores: Double
        var passthroughHardwareCores: Double
        var emulatedVerified: Int
        var passthroughVerified: Int
        var sent: Int
        var savingPercent: Double
        enum CodingKeys: String, CodingKey {
            case sent
            case frameBytes = "frame_bytes"
            case offeredFPS = "offered_fps"
            case emulatedCores = "emulated_cores"
            case passthroughCores = "passthrough_cores"
            case emulatedHardwareCores = "emulated_hardware_cores"
            case passthroughHardwareCores = "passthrough_hardware_cores"
            case emulatedVerified = "emulated_verified"
            case passthroughVerified = "passthrough_verified"
            case savingPercent = "saving_percent"
        }
    }

    struct Machine: Codable {
        var date: String
        var cpus: Int
        var ghz: Double
        var ghzMethod: String
        var model: String
        var queues: Int
        var polling: String
        var pinning: String
        var secondsPerRun: Double
        var roundsPerPhase: Int
        var ringSize: Int
        /// How many frames a windowed stream keeps in flight (or that it has no window).
        var window: String
        /// Cache-line round trip between the guests' and the engines' CPUs (nil: not pinned).
        var coreToCoreRoundTripNS: Double?
        enum CodingKeys: String, CodingKey {
            case date, cpus, ghz, model, queues, polling, pinning, window
            case coreToCoreRoundTripNS = "core_to_core_round_trip_ns"
            case ghzMethod = "ghz_method"
            case secondsPerRun = "seconds_per_run"
            case roundsPerPhase = "rounds_per_phase"
            case ringSize = "ring_size"
        }
    }

    var machine: Machine
    var results: [Result] = []
    var ratios: [Ratio] = []
    var equalLoad: [EqualLoad] = []
    /// `--observe`: each mode with an observer beside the traffic, and without.
    var observed: [Observed] = []
    /// The bundle the passthrough runs injected (none with `--only emulated`).
    var plugins: [StatusReport.PluginInjection] = []

    enum CodingKeys: String, CodingKey {
        case machine, results, ratios, plugins, observed
        case equalLoad = "equal_load"
    }

    /// Adds the two rows (TX, RX) of one full-rate run.
    mutating func add(fullRate r: BenchRun) {
        let mbps = r.gbps * 1000
        for (direction, guest) in [("TX", r.senderCPU), ("RX", r.receiverCPU)] {
            let cores = r.cores(guest + r.hostCPU)
            results.append(
                Result(
                    direction: direction, mode: r.mode, frameBytes: r.frameBytes, mpps: r.mpps, gbps: r.gbps,
                    cpuCores: Cores(guest: r.cores(guest), host: r.cores(r.hostCPU), hardware: r.cores(r.hardwareCPU)),
                    mbpsPerGHz: cores > 0 ? mbps / (cores * machine.ghz) : 0, wakeupsPerMB: r.wakeupsPerMB,
                    doorbellKicks: r.doorbellKicks, interrupts: r.interrupts,
                    sent: r.sent, received: r.received, dropped: r.dropped,
                    duplicates: r.duplicates, outOfOrder: r.outOfOrder, invalid: r.invalid, coreRoundTripNS: r.coreRoundTripNS))
        }
    }

    /// Adds the ratios for one frame size once both modes' rows are in.
    mutating func addRatios(frameBytes: Int) {
        for direction in ["TX", "RX"] {
            let rows = results.filter { $0.direction == direction && $0.frameBytes == frameBytes }
            guard let e = rows.first(where: { $0.mode == "emulated" }), let p = rows.first(where: { $0.mode == "passthrough" }),
                e.mbpsPerGHz > 0
            else { continue }
            ratios.append(Ratio(direction: direction, frameBytes: frameBytes, passthroughOverEmulated: p.mbpsPerGHz / e.mbpsPerGHz))
        }
    }

    mutating func add(equalLoadOf emulated: BenchRun, _ passthrough: BenchRun) {
        let e = emulated.guestAndHostCores, p = passthrough.guestAndHostCores
        equalLoad.append(
            EqualLoad(
                frameBytes: emulated.frameBytes, offeredFPS: emulated.offeredRate ?? 0, emulatedCores: e, passthroughCores: p,
                emulatedHardwareCores: emulated.cores(emulated.hardwareCPU),
                passthroughHardwareCores: passthrough.cores(passthrough.hardwareCPU),
                emulatedVerified: emulated.received, passthroughVerified: passthrough.received, sent: emulated.sent,
                savingPercent: e > 0 ? (1 - p / e) * 100 : 0))
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    func text() -> String {
        let m = machine
        var out =
            "\(m.date), \(m.cpus) CPUs, NIC model \(m.model), \(m.queues) queue(s) per guest, \(m.ringSize)-descriptor rings, "
            + "\(m.window), \(m.polling), pinning: \(m.pinning)\n"
        out +=
            "\(m.secondsPerRun) s per run; \(m.roundsPerPhase) round(s) of one run per mode, back to back; reported: the median round (by passthrough's "
            + "verified throughput at full rate, by its CPU at equal load) among rounds whose two runs met one vCPU placement\n"
        out += String(format: "clock: %.2f GHz (calibrated: %@; ratios do not depend on it)\n", m.ghz, m.ghzMethod)
        if let rt = m.coreToCoreRoundTripNS {
            out += String(
                format:
                    "cache line round trip between the guests' and the engines' CPUs: %.0f ns at the start (rt: before each run; the VM's vCPU placement moves every figure)\n",
                rt)
        }
        out += "\n"
        out += "full rate (frames the receiver verified; cores = CPU seconds per second):\n"
        var rows = [
            [
                "dir", "mode", "frame B", "verified/sent", "dropped", "Mpps", "Gbit/s", "guest", "host", "hw", "Mbps/GHz", "wake-ups/MB",
                "rt ns",
            ]
        ]
        for r in results {
            rows.append([
                r.direction, r.mode, "\(r.frameBytes)", "\(r.received)/\(r.sent)", "\(r.dropped)",
                String(format: "%.3f", r.mpps), String(format: "%.2f", r.gbps),
                String(format: "%.2f", r.cpuCores.guest), String(format: "%.2f", r.cpuCores.host),
                String(format: "%.2f", r.cpuCores.hardware),
                String(format: "%.0f", r.mbpsPerGHz), String(format: "%.2f", r.wakeupsPerMB),
                r.coreRoundTripNS.map { String(format: "%.0f", $0) } ?? "-",
            ])
        }
        out += StatusTable.table(rows)
        for size in Set(results.map(\.frameBytes)).sorted() {
            let trips = results.filter { $0.frameBytes == size }.map(\.coreRoundTripNS)
            if !CoreToCoreLatency.samePlacement(trips) {
                out += "\nnote: at \(size) B no round had both modes in one vCPU placement (rt differs); its ratios compare unlike machines"
            }
        }
        for r in results where r.direction == "RX" && r.duplicates + r.outOfOrder + r.invalid > 0 {
            out +=
                "\nverification FAILED for \(r.mode) \(r.frameBytes) B: \(r.duplicates) duplicates, \(r.outOfOrder) out of order, \(r.invalid) invalid"
        }
        out += "\n\npassthrough / emulated Mbps per GHz of guest + host CPU (RFC 2010, 16 KiB netperf: TX 1.43, RX 1.70):\n"
        for r in ratios { out += String(format: "  %@ %5d B: %.2f\n", r.direction, r.frameBytes, r.passthroughOverEmulated) }
        out += "\nequal offered load (guest + host cores; the RFC: \"up to 40 % CPU saved\"):\n"
        for e in equalLoad {
            out += String(
                format:
                    "  %5d B at %.0f frames/s: emulated %.3f cores (%d/%d verified), passthrough %.3f cores (%d/%d) + %.3f hw, saving %.0f %%\n",
                e.frameBytes, e.offeredFPS, e.emulatedCores, e.emulatedVerified, e.sent, e.passthroughCores,
                e.passthroughVerified, e.sent, e.passthroughHardwareCores, e.savingPercent)
        }
        return out + observedText()
    }
}
