import ArgumentParser
import Foundation
import NPASystem

/// The options only `npa bench --tcp` takes.
struct TCPBenchOptions: ParsableArguments {
    static let discussion = """
        Two guests on an in-process host with one software NIC, each a vNIC bridged to a TAP \
        interface in a network namespace the bench creates and always removes (also on an error, \
        SIGINT or SIGTERM). Per round, one iperf3 stream (-l WRITE -w BUFFER, netperf TCP_STREAM's \
        shape) with both guests emulated, then both switched in to VFs, then over a plain veth pair \
        between two other namespaces (the kernel's own reference: its guest CPU is the iperf3 \
        processes alone); then emulated and passthrough rounds paced (iperf3 -b) at 80 % of the \
        slower mode's median rate, for the CPU each mode needs at equal offered load. Reported per \
        mode: Mbit/s (what the receiving iperf3 counted) and Mbit/s per GHz of guest + host CPU, \
        and passthrough/emulated next to the RFC's 1.43 TX / 1.70 RX. CPU attribution: \(TCPBenchReport.attribution) Uses --model, --repeat and --json; the other \
        options are the frame bench's.
        """

    @Option(help: "Seconds of each iperf3 stream (-t).")
    var seconds: Int = 10

    @Option(name: .customLong("write-size"), help: "Bytes per write (iperf3 -l): a number with an optional K or M (KiB, MiB).")
    var writeSize: String = "16K"

    @Option(name: .customLong("socket-buffer"), help: "Socket buffer size (iperf3 -w): a number with an optional K or M.")
    var socketBuffer: String = "64K"

    @Option(help: "Checksum and TCP segmentation offloads on both guests' TAPs and vNICs, in both modes: on or off.")
    var offloads: OffloadSetting = .on

    /// "16K" → 16384; nil if it is not a size.
    static func bytes(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "k": 1 << 10, "M": 1 << 20, "m": 1 << 20]
        if let last = text.last, let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
        return Int(text)
    }

    var writeBytes: Int { Self.bytes(writeSize) ?? 0 }
    var socketBufferBytes: Int { Self.bytes(socketBuffer) ?? 0 }

    func validate() throws {
        guard (1...600).contains(seconds) else { throw ValidationError("--seconds must be 1...600") }
        guard let write = Self.bytes(writeSize), (1...(1 << 20)).contains(write) else {
            throw ValidationError("--write-size must be 1 byte to 1M, e.g. 16K")
        }
        guard let buffer = Self.bytes(socketBuffer), ((4 << 10)...(64 << 20)).contains(buffer) else {
            throw ValidationError("--socket-buffer must be 4K to 64M, e.g. 64K")
        }
    }
}

extension Bench {
    /// `npa bench --tcp`: see `TCPBenchOptions.discussion`.
    func runTCP() throws {
        guard TAPDevice.isAvailable else {
            throw CommandFailure("bench --tcp needs root and /dev/net/tun (it creates TAP interfaces and network namespaces)")
        }
        guard let iperf3 = ChildProgram.find("iperf3") else {
            throw CommandFailure("bench --tcp needs iperf3 (scripts/install-deps.sh installs it; or apt-get install iperf3)")
        }
        guard let ip = ChildProgram.find("ip") else { throw CommandFailure("bench --tcp needs ip (iproute2)") }
        let plugins = try pluginStore.requiredSource()
        let injections = try plugins.injections(for: [model])
        if !json { for injection in injections { print(injection.line) } }
        let options = tcpOptions
        let shape = TCPStreamShape(
            seconds: options.seconds, writeBytes: options.writeBytes, socketBufferBytes: options.socketBufferBytes, iperf3: iperf3)
        let cleanup = TCPBenchCleanup(ip: ip)
        try cleanup.removeAllOnTerminationSignals()
        defer { cleanup.removeAll() }
        var report = TCPBenchReport(
            machine: .init(
                date: ISO8601DateFormatter().string(from: Date()), cpus: ProcessInfo.processInfo.activeProcessorCount,
                ghz: ClockCalibration.gigahertz(), ghzMethod: ClockCalibration.method, model: model, writeBytes: shape.writeBytes,
                socketBufferBytes: shape.socketBufferBytes, secondsPerRun: shape.seconds, rounds: repeats,
                offloads: options.offloads.rawValue))
        report.plugins = injections
        let topology = try TCPBenchTopology(model: model, plugins: plugins, offloads: options.offloads == .on, cleanup: cleanup)
        defer { topology.stop() }
        // Rounds interleave the modes so both see the same (shared, noisy) machine.
        for phase in ["full", "equal_load"] {
            var rate: Double?
            if phase == "equal_load" {
                report.summarize()
                let full = Dictionary(uniqueKeysWithValues: report.modes.map { ($0.mode, $0.mbps) })
                guard let emulated = full["emulated"], let passthrough = full["passthrough"] else { break }
                rate = TCPBenchReport.equalLoadMbps(emulated, passthrough)
            }
            for round in 1...repeats {
                for path in TCPBenchPath.allCases where path != .veth || phase == "full" {
                    let run = try topology.measure(path: path, round: round, shape: shape, offeredMbps: rate, cleanup: cleanup)
                    report.add(run, phase: phase)
                    if !json {
                        standardError(String(format: "bench --tcp: %@ round %d %@: %.0f Mbit/s", phase, round, run.mode, run.mbps))
                    }
                }
            }
        }
        report.summarize()
        topology.stopBridges()
        for guest in [topology.sender, topology.receiver] {
            let c = guest.bridge.counters
            // The host's drop counters for the vNIC (device or VF), nonzero ones only.
            let drops = ((try? guest.bridge.nic.deviceCounters()) ?? [:]).filter { $0.key.contains("drop") && $0.value > 0 }
            report.bridges.append(
                .init(
                    guest: guest.name, framesToVNIC: c.framesToVNIC, framesToTAP: c.framesToTAP, transmitRingFull: c.transmitRingFull,
                    tapQueueFull: c.tapQueueFull, malformedFromTAP: c.malformedFromTAP, superFramesToTAP: c.superFramesToTAP,
                    segmentsCoalesced: c.segmentsCoalesced, hostDrops: drops,
                    kernelDropsToBridge: guest.kernelDrops().toBridge, kernelDropsFromBridge: guest.kernelDrops().fromBridge))
        }
        print(json ? try report.json() : report.text())
    }
}
