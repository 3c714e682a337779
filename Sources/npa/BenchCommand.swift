import ArgumentParser
import Foundation
import NPANICModel

/// `npa bench`: the seed's experiment on this system. For each frame size both modes run, one
/// after the other in one process, first at full rate (throughput, CPU by role, Mbps per GHz of
/// guest + host CPU) and then at one offered load both can carry (the CPU each needs there).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Emulated vs passthrough: throughput, CPU by role, Mbps/GHz, ratios, CPU at equal load.")

    @Option(help: "Seconds of traffic per run.")
    var duration: Double = 1.5

    @Option(
        name: .customLong("repeat"), help: "Rounds (one run per mode, back to back) per frame size and phase; the median round is reported."
    )
    var repeats: Int = 3

    @Option(help: "Frame sizes in bytes, comma separated (64...9018).")
    var sizes: String = "64,1514,9014"

    @Option(help: NICModelOption.help)
    var model: String = NICModel.dring.name

    @Option(help: "TX/RX queues per guest (1...8); the sender spreads 2 flows per queue.")
    var queues: Int = 1

    @Option(help: "Descriptors per TX and RX ring, a power of two in 32...4096 (both modes).")
    var ring: Int = 4096

    @Option(
        help:
            "Frames in flight before the sender waits for the receiver's acknowledgement, like TCP (0: none, like UDP); default: 4 MiB worth, at most 3/4 of a ring."
    )
    var window: Int?

    @Option(help: "Notification policy of guests and engines: interrupt (spin briefly, then sleep) or busy (never sleep).")
    var poll: PollMode = .interrupt

    @Option(help: "Interrupt mode: polls before a guest or an engine sleeps (both modes alike).")
    var spin: Int = 256

    @Option(
        help: ArgumentHelp(
            "Where the threads run: auto, none, or four CPUs for the sending guest, receiving guest, host and NIC engine (e.g. 0,1,0,1).",
            discussion:
                "auto (the default) puts the host and NIC engines on CPU 0 and both guests on CPU 1, as a host keeps its data-path core apart from guest vCPUs; none leaves placement to the scheduler."
        ))
    var cpus: String = "auto"

    @Option(
        help:
            "Offered load of the equal-load phase in frames/s (default: half the slower mode's full rate); with --only, that mode runs paced at it."
    )
    var load: Double?

    @Option(help: "Run one mode only (emulated or passthrough), e.g. under a profiler; no ratios or equal load then.")
    var only: Mode?

    @Option(
        help: ArgumentHelp(
            "Also measure what operating the host costs: metrics (a Prometheus scrape of the host every second), capture (npa capture of the receiver, to /dev/null). Comma separated.",
            discussion:
                "Each mode at full rate, a plain run and then one per observer, back to back, --repeat rounds; the table gives each observed run relative to the plain one."
        ))
    var observe: String?

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Flag(
        help: ArgumentHelp(
            "The RFC's experiment with a real TCP stack: an iperf3 TCP stream between two kernel-stack guests (needs root, /dev/net/tun, iperf3).",
            discussion: TCPBenchOptions.discussion))
    var tcp = false

    @OptionGroup(title: "With --tcp")
    var tcpOptions: TCPBenchOptions

    @Option(help: "Also draw the comparison as a bar chart into this SVG file.")
    var plot: String?

    @OptionGroup(title: "Plugin store")
    var pluginStore: PluginStoreOptions

    enum PollMode: String, ExpressibleByArgument, CaseIterable { case interrupt, busy }
    enum Mode: String, ExpressibleByArgument, CaseIterable, Hashable { case emulated, passthrough }

    var parsedSizes: [Int] {
        sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// CPUs for (sending guest, receiving guest, host, NIC engine), or nil for no pinning.
    var parsedCPUs: [Int]? {
        switch cpus {
        case "none": return nil
        case "auto": return ProcessInfo.processInfo.activeProcessorCount >= 2 ? [1, 1, 0, 0] : nil
        default: return cpus.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        }
    }

    func validate() throws {
        try pluginStore.validatePairing()
        if tcp {
            try tcpOptions.validate()
            if plot != nil || only != nil { throw ValidationError("--plot and --only are for the frame bench, not --tcp") }
            try NICModelOption.validate(model)
            guard (1...15).contains(repeats) else { throw ValidationError("--repeat must be 1...15") }
            return
        }
        guard duration > 0, duration <= 600 else { throw ValidationError("--duration must be in (0, 600] seconds") }
        guard (1...15).contains(repeats) else { throw ValidationError("--repeat must be 1...15") }
        if let load, !(1...100_000_000).contains(load) { throw ValidationError("--load must be 1...100000000 frames/s") }
        let sizes = parsedSizes
        guard !sizes.isEmpty, sizes.count == self.sizes.split(separator: ",").count, sizes.allSatisfy({ (64...9018).contains($0) }) else {
            throw ValidationError("--sizes must list frame sizes from 64 to 9018 bytes, e.g. 64,1514,9014")
        }
        try NICModelOption.validate(model)
        guard (1...8).contains(queues) else { throw ValidationError("--queues must be 1...8") }
        guard (1...1_000_000).contains(spin) else { throw ValidationError("--spin must be 1...1000000 polls") }
        guard (32...4096).contains(ring), ring & (ring - 1) == 0 else {
            throw ValidationError("--ring must be a power of two in 32...4096")
        }
        if let window, window != 0 && !(4...ring * 3 / 4).contains(window) {
            throw ValidationError("--window must be 0 (none) or 4...\(ring * 3 / 4) frames (3/4 of the receiver's \(ring)-descriptor ring)")
        }
        if cpus != "auto" && cpus != "none" {
            let online = ProcessInfo.processInfo.activeProcessorCount
            guard let list = parsedCPUs, list.count == 4, list.count == cpus.split(separator: ",").count,
                list.allSatisfy({ (0..<online).contains($0) })
            else {
                throw ValidationError(
                    "--cpus needs four CPU numbers (sending guest, receiving guest, host, NIC engine) in 0...\(online - 1)")
            }
        }
        if let plot, !plot.hasSuffix(".svg") { throw ValidationError("--plot writes SVG: give a file name ending in .svg") }
        if parsedObservers == nil {
            throw ValidationError(
                "--observe takes a comma-separated list of: \(BenchObserver.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    /// Half the slower mode's full rate, to two significant digits: a load both modes carry.
    static func equalLoadRate(_ a: BenchRun, _ b: BenchRun) -> Double {
        let fps = min(a.mpps, b.mpps) * 1e6 / 2
        guard fps >= 100 else { return 100 }
        let magnitude = pow(10, floor(log10(fps)) - 1)
        return floor(fps / magnitude) * magnitude
    }

    func run() throws {
        if tcp { return try runTCP() }
        // The plot is written after a minute of measuring: find out now whether it can be.
        if let plot {
            guard FileManager.default.createFile(atPath: plot, contents: nil) else {
                throw CommandFailure("--plot \(plot): cannot create the file (does its folder exist and is it writable?)")
            }
        }
        let plugins = try pluginStore.requiredSource()
        // Only passthrough runs inject the model's bundle.
        let injections = try only == .emulated ? [] : plugins.injections(for: [model])
        if !json { for injection in injections { print(injection.line) } }
        let setup = BenchSetup(
            model: model, queues: queues, busyPoll: poll == .busy, spin: spin, ringSize: ring, windowFrames: window,
            cpus: parsedCPUs, plugins: plugins)
        var report = BenchReport(machine: machine(setup))
        report.plugins = injections
        for size in parsedSizes {
            let full = try medianRuns(setup, frameBytes: size, modes: only.map { [$0] } ?? Mode.allCases, rate: only != nil ? load : nil) {
                $0.mpps
            }
            for mode in Mode.allCases { if let run = full[mode] { report.add(fullRate: run) } }
            if let emulated = full[.emulated], let passthrough = full[.passthrough] {
                report.addRatios(frameBytes: size)
                let rate = load ?? Self.equalLoadRate(emulated, passthrough)
                let paced = try medianRuns(setup, frameBytes: size, modes: Mode.allCases, rate: rate) { $0.guestAndHostCores }
                report.add(equalLoadOf: paced[.emulated]!, paced[.passthrough]!)
            }
            if let observers = parsedObservers, !observers.isEmpty {
                try measureObserved(setup, frameBytes: size, modes: only.map { [$0] } ?? Mode.allCases, observers: observers, into: &report)
            }
            if !json { FileHandle.standardError.write(Data("bench: \(size) B done\n".utf8)) }
        }
        if let plot {
            do { try BenchPlot(report: report).svg().write(toFile: plot, atomically: true, encoding: .utf8) } catch {
                throw CommandFailure("--plot \(plot): \(error.localizedDescription)")
            }
        }
        print(json ? try report.json() : report.text())
    }

    /// `repeats` rounds of one run per mode, back to back, so the two runs of a round see the
    /// same machine. With both modes the reported round is the median by `key` (verified
    /// throughput at full rate, CPU at a paced load) of the passthrough run, among the rounds
    /// whose two runs met the same vCPU placement (`CoreToCoreLatency.samePlacement`), or among all rounds if
    /// none did: comparing runs from different placements would skew the ratio several-fold.
    private func medianRuns(
        _ setup: BenchSetup, frameBytes: Int, modes: [Mode], rate: Double?, by key: (BenchRun) -> Double
    ) throws -> [Mode: BenchRun] {
        var rounds: [[Mode: BenchRun]] = []
        for _ in 0..<repeats {
            var round: [Mode: BenchRun] = [:]
            for mode in modes {
                round[mode] = try setup.measure(frameBytes: frameBytes, passthrough: mode == .passthrough, rate: rate, seconds: duration)
            }
            rounds.append(round)
        }
        let judged = modes.last!
        let comparable = rounds.filter { CoreToCoreLatency.samePlacement($0.values.map(\.coreRoundTripNS)) }
        let pool = (comparable.isEmpty ? rounds : comparable).sorted { key($0[judged]!) < key($1[judged]!) }
        return pool[pool.count / 2]
    }

    /// What the report says about the machine and the policy both modes shared.
    private func machine(_ setup: BenchSetup) -> BenchReport.Machine {
        let cpus = setup.cpus
        return BenchReport.Machine(
            date: ISO8601DateFormatter().string(from: Date()), cpus: ProcessInfo.processInfo.activeProcessorCount,
            ghz: ClockCalibration.gigahertz(), ghzMethod: ClockCalibration.method, model: model, queues: queues,
            polling: poll == .busy ? "busy-poll" : "interrupts after a short spin",
            pinning: cpus.map { "tx guest \($0[0]), rx guest \($0[1]), host \($0[2]), NIC \($0[3])" } ?? "none",
            secondsPerRun: duration, roundsPerPhase: repeats, ringSize: ring, window: setup.windowDescription,
            coreToCoreRoundTripNS: setup.guestToEngineRoundTrip())
    }
}
