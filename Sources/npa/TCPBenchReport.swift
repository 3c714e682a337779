import Foundation
import NPAControlProtocol

/// The outcome of `npa bench --tcp`: every iperf3 run (full rate and at one equal offered load),
/// each mode's medians, the passthrough/emulated ratios of Mbit/s per GHz next to the RFC's, and
/// the CPU each mode needs at equal load. Encodes to the JSON `--json` prints and renders the
/// text table; does no measuring.
struct TCPBenchReport: Codable {
    /// How CPU is charged, word for word in `--help`, the text report and the README.
    static let attribution = """
        guest = its TAP bridge thread (the vNIC driver: /proc/self/task/TID/stat, user + system) plus \
        its iperf3 process (user + system from wait4, i.e. the utime/stime of /proc/PID/stat: its \
        syscalls are the guest kernel's TCP/IP work); host = the host daemon's thread (event loop, \
        device emulation, vswitch); the NIC engine thread is "hardware", shown apart and not charged; \
        softirq and hardirq time, machine-wide from /proc/stat, is shown apart and not attributed \
        (kernel network work that runs in softirq context, e.g. TCP receive processing after a TAP \
        write, lands there or in whichever thread's system time the kernel charges it to). \
        TX = sender's guest + host, RX = receiver's guest + host.
        """
    /// The RFC's passthrough/emulated Mbit/s per GHz (2010, netperf 16 KiB over 64 KiB sockets).
    static let rfcTX = 1.43
    static let rfcRX = 1.70

    struct Cores: Codable, Equatable {
        var senderGuest: Double
        var senderBridge: Double
        var senderBridgeSystem: Double
        var senderIperf3User: Double
        var senderIperf3System: Double
        var receiverGuest: Double
        var receiverBridge: Double
        var receiverBridgeSystem: Double
        var receiverIperf3User: Double
        var receiverIperf3System: Double
        var host: Double
        var hardware: Double
        var softirq: Double
        var irq: Double
        enum CodingKeys: String, CodingKey {
            case host, hardware, softirq, irq
            case senderGuest = "sender_guest", senderBridge = "sender_bridge"
            case senderIperf3User = "sender_iperf3_user", senderIperf3System = "sender_iperf3_system"
            case receiverGuest = "receiver_guest", receiverBridge = "receiver_bridge"
            case senderBridgeSystem = "sender_bridge_system", receiverBridgeSystem = "receiver_bridge_system"
            case receiverIperf3User = "receiver_iperf3_user", receiverIperf3System = "receiver_iperf3_system"
        }
    }

    struct Run: Codable, Equatable {
        var phase: String
        var round: Int
        var mode: String
        var offeredMbps: Double?
        var mbps: Double
        var retransmits: Int
        var seconds: Double
        var cpuCores: Cores
        /// Mbit/s ÷ ((sender's guest + host cores) × GHz), and the same with the receiver's guest.
        var txMbpsPerGHz: Double
        var rxMbpsPerGHz: Double
        var guestAndHostCores: Double
        enum CodingKeys: String, CodingKey {
            case phase, round, mode, mbps, retransmits, seconds
            case offeredMbps = "offered_mbps", cpuCores = "cpu_cores"
            case txMbpsPerGHz = "tx_mbps_per_ghz", rxMbpsPerGHz = "rx_mbps_per_ghz"
            case guestAndHostCores = "guest_and_host_cores"
        }
    }

    /// One mode's medians over its full-rate rounds (each figure's own median). For veth, the
    /// kernel's reference, "guest" is the iperf3 process alone and there is no host.
    struct ModeSummary: Codable, Equatable {
        var mode: String
        var mbps: Double
        var txMbpsPerGHz: Double
        var rxMbpsPerGHz: Double
        enum CodingKeys: String, CodingKey {
            case mode, mbps
            case txMbpsPerGHz = "tx_mbps_per_ghz", rxMbpsPerGHz = "rx_mbps_per_ghz"
        }
    }

    struct Ratios: Codable, Equatable {
        var tx: Double
        var rx: Double
        var rfcTX = TCPBenchReport.rfcTX
        var rfcRX = TCPBenchReport.rfcRX
        enum CodingKeys: String, CodingKey {
            case tx, rx
            case rfcTX = "rfc_tx", rfcRX = "rfc_rx"
        }
    }

    /// Median guest + host cores per mode at one offered rate, both sides and in all.
    struct EqualLoad: Codable, Equatable {
        var offeredMbps: Double
        var emulatedCores: Double
        var passthroughCores: Double
        var emulatedTXCores: Double
        var passthroughTXCores: Double
        var emulatedRXCores: Double
        var passthroughRXCores: Double
        /// emulated ÷ passthrough guest + host cores.
        var emulatedOverPassthrough: Double
        var savingPercent: Double
        /// What each mode delivered (median): a mode that fell short of the offered rate spent
        /// its CPU on less, so the comparison flatters it.
        var emulatedMbps: Double
        var passthroughMbps: Double
        enum CodingKeys: String, CodingKey {
            case emulatedMbps = "emulated_mbps", passthroughMbps = "passthrough_mbps"
            case offeredMbps = "offered_mbps"
            case emulatedCores = "emulated_cores", passthroughCores = "passthrough_cores"
            case emulatedTXCores = "emulated_tx_cores", passthroughTXCores = "passthrough_tx_cores"
            case emulatedRXCores = "emulated_rx_cores", passthroughRXCores = "passthrough_rx_cores"
            case emulatedOverPassthrough = "emulated_over_passthrough", savingPercent = "saving_percent"
        }
    }

    struct Machine: Codable, Equatable {
        var date: String
        var cpus: Int
        var ghz: Double
        var ghzMethod: String
        var model: String
        var writeBytes: Int
        var socketBufferBytes: Int
        var secondsPerRun: Int
        var rounds: Int
        var offloads: String
        var attribution = TCPBenchReport.attribution
        enum CodingKeys: String, CodingKey {
            case date, cpus, ghz, model, rounds, offloads, attribution
            case ghzMethod = "ghz_method", writeBytes = "write_bytes", socketBufferBytes = "socket_buffer_bytes"
            case secondsPerRun = "seconds_per_run"
        }
    }

    /// What one guest's TAP bridge moved and dropped over the whole bench (all runs, both modes).
    struct BridgeTotals: Codable, Equatable {
        var guest: String
        var framesToVNIC: UInt64
        var framesToTAP: UInt64
        var transmitRingFull: UInt64
        var tapQueueFull: UInt64
        var malformedFromTAP: UInt64
        /// Coalesced super-frames the bridge wrote to the kernel and the segments in them (of
        /// `framesToTAP`): receive-side coalescing, offloads on only.
        var superFramesToTAP: UInt64 = 0
        var segmentsCoalesced: UInt64 = 0
        /// The host's nonzero drop counters for this vNIC, by name (all runs, both modes).
        var hostDrops: [String: UInt64] = [:]
        /// The kernel's drops on the guest's TAP interface: frames for the bridge it could not
        /// queue (TX) and frames from the bridge it dropped (RX).
        var kernelDropsToBridge: UInt64 = 0
        var kernelDropsFromBridge: UInt64 = 0
        enum CodingKeys: String, CodingKey {
            case guest
            case hostDrops = "host_drops"
            case kernelDropsToBridge = "kernel_drops_to_bridge", kernelDropsFromBridge = "kernel_drops_from_bridge"
            case framesToVNIC = "frames_to_vnic", framesToTAP = "frames_to_tap", transmitRingFull = "transmit_ring_full"
            case tapQueueFull = "tap_queue_full", malformedFromTAP = "malformed_from_tap"
            case superFramesToTAP = "super_frames_to_tap", segmentsCoalesced = "segments_coalesced"
        }
    }

    var machine: Machine
    var runs: [Run] = []
    var bridges: [BridgeTotals] = []
    var modes: [ModeSummary] = []
    var ratios: Ratios?
    var equalLoad: EqualLoad?
    /// The bundle the passthrough runs injected.
    var plugins: [StatusReport.PluginInjection] = []

    enum CodingKeys: String, CodingKey {
        case machine, runs, modes, ratios, bridges, plugins
        case equalLoad = "equal_load"
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    mutating func add(_ r: TCPBenchRun, phase: String) {
        let ghz = machine.ghz
        let tx = r.senderGuestCores + r.hostCores, rx = r.receiverGuestCores + r.hostCores
        runs.append(
            Run(
                phase: phase, round: r.round, mode: r.mode, offeredMbps: r.offeredMbps, mbps: r.mbps, retransmits: r.stream.retransmits,
                seconds: r.seconds,
                cpuCores: Cores(
                    senderGuest: r.senderGuestCores, senderBridge: r.cores(r.senderBridge.total),
                    senderBridgeSystem: r.cores(r.senderBridge.system), senderIperf3User: r.cores(r.client.user),
                    senderIperf3System: r.cores(r.client.system), receiverGuest: r.receiverGuestCores,
                    receiverBridge: r.cores(r.receiverBridge.total), receiverBridgeSystem: r.cores(r.receiverBridge.system),
                    receiverIperf3User: r.cores(r.server.user),
                    receiverIperf3System: r.cores(r.server.system), host: r.hostCores, hardware: r.cores(r.hardwareCPU),
                    softirq: r.cores(r.softirqCPU), irq: r.cores(r.irqCPU)),
                txMbpsPerGHz: tx > 0 ? r.mbps / (tx * ghz) : 0, rxMbpsPerGHz: rx > 0 ? r.mbps / (rx * ghz) : 0,
                guestAndHostCores: r.guestAndHostCores))
    }

    /// Each mode's medians over its full-rate runs, and the passthrough/emulated ratios.
    mutating func summarize() {
        modes = TCPBenchPath.allCases.map(\.rawValue).compactMap { mode in
            let rows = runs.filter { $0.phase == "full" && $0.mode == mode }
            guard !rows.isEmpty else { return nil }
            return ModeSummary(
                mode: mode, mbps: Self.median(rows.map(\.mbps)), txMbpsPerGHz: Self.median(rows.map(\.txMbpsPerGHz)),
                rxMbpsPerGHz: Self.median(rows.map(\.rxMbpsPerGHz)))
        }
        if let e = modes.first(where: { $0.mode == "emulated" }), let p = modes.first(where: { $0.mode == "passthrough" }),
            e.txMbpsPerGHz > 0, e.rxMbpsPerGHz > 0
        {
            ratios = Ratios(tx: p.txMbpsPerGHz / e.txMbpsPerGHz, rx: p.rxMbpsPerGHz / e.rxMbpsPerGHz)
        }
        let paced = runs.filter { $0.phase == "equal_load" }
        if let rate = paced.first?.offeredMbps {
            func cores(_ mode: String, _ side: (Run) -> Double) -> Double { Self.median(paced.filter { $0.mode == mode }.map(side)) }
            let e = cores("emulated") { $0.guestAndHostCores }, p = cores("passthrough") { $0.guestAndHostCores }
            equalLoad = EqualLoad(
                offeredMbps: rate, emulatedCores: e, passthroughCores: p,
                emulatedTXCores: cores("emulated") { $0.cpuCores.senderGuest + $0.cpuCores.host },
                passthroughTXCores: cores("passthrough") { $0.cpuCores.senderGuest + $0.cpuCores.host },
                emulatedRXCores: cores("emulated") { $0.cpuCores.receiverGuest + $0.cpuCores.host },
                passthroughRXCores: cores("passthrough") { $0.cpuCores.receiverGuest + $0.cpuCores.host },
                emulatedOverPassthrough: p > 0 ? e / p : 0, savingPercent: e > 0 ? (1 - p / e) * 100 : 0,
                emulatedMbps: cores("emulated") { $0.mbps }, passthroughMbps: cores("passthrough") { $0.mbps })
        }
    }

    /// The equal offered load: 80 % of the slower mode's median full rate, to two significant digits.
    static func equalLoadMbps(_ a: Double, _ b: Double) -> Double {
        let rate = min(a, b) * 0.8
        guard rate >= 1 else { return 1 }
        let magnitude = pow(10, floor(log10(rate)) - 1)
        return floor(rate / magnitude) * magnitude
    }

    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
