import ArgumentParser
import Foundation

/// `npa bench`: the seed's experiment on this system. For each frame size both modes run, one
/// after the other in one process, first at full rate (throughput, CPU by role, Mbps per GHz of
/// guest + host CPU) and then at one offered load both can carry (the CPU each needs there).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Emulated vs passthrough: throughput, CPU by role, Mbps/GHz, ratios, CPU at equal load.")

    @Option(help: "Seconds of traffic per run (four runs per frame size).")
    var duration: Double = 3

    @Option(help: "Frame sizes in bytes, comma separated (64...9018).")
    var sizes: String = "64,1514,9014"

    @Option(help: "NIC model for passthrough: npa-dring or npa-cq.")
    var model: String = "npa-dring"

    @Option(help: "TX/RX queues per guest (1...8); the sender spreads 2 flows per queue.")
    var queues: Int = 1

    @Option(help: "Frames in flight before the sender waits for the receiver's acknowledgement, like TCP (0: none, like UDP).")
    var window: Int = 768

    @Option(help: "Notification policy of guests and engines: interrupt (spin briefly, then sleep) or busy (never sleep).")
    var poll: PollMode = .interrupt

    @Option(help: "Pin the sending guest, receiving guest, host and NIC engine threads to these CPUs, e.g. 0,1,0,1.")
    var cpus: String?

    @Option(help: "Run one mode only (emulated or passthrough), e.g. under a profiler; no ratios then.")
    var only: Mode?

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Option(help: "Also draw the comparison as a bar chart into this SVG file.")
    var plot: String?

    enum PollMode: String, ExpressibleByArgument, CaseIterable { case interrupt, busy }
    enum Mode: String, ExpressibleByArgument, CaseIterable { case emulated, passthrough }

    var parsedSizes: [Int] {
        sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    }

    var parsedCPUs: [Int]? {
        cpus.map { $0.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    }

    func validate() throws {
        guard duration > 0, duration <= 600 else { throw ValidationError("--duration must be in (0, 600] seconds") }
        let sizes = parsedSizes
        guard !sizes.isEmpty, sizes.count == self.sizes.split(separator: ",").count, sizes.allSatisfy({ (64...9018).contains($0) }) else {
            throw ValidationError("--sizes must list frame sizes from 64 to 9018 bytes, e.g. 64,1514,9014")
        }
        guard ["npa-dring", "npa-cq"].contains(model) else { throw ValidationError("--model must be npa-dring or npa-cq") }
        guard (1...8).contains(queues) else { throw ValidationError("--queues must be 1...8") }
        guard window == 0 || (4...1000).contains(window) else {
            throw ValidationError("--window must be 0 (none) or 4...1000 frames (the receiver posts 1023 buffers per queue)")
        }
        if let cpus {
            let online = ProcessInfo.processInfo.activeProcessorCount
            guard let list = parsedCPUs, list.count == 4, list.count == cpus.split(separator: ",").count, list.allSatisfy({ (0..<online).contains($0) }) else {
                throw ValidationError("--cpus needs four CPU numbers (sending guest, receiving guest, host, NIC engine) in 0...\(online - 1)")
            }
        }
        if let plot, !plot.hasSuffix(".svg") { throw ValidationError("--plot writes SVG: give a file name ending in .svg") }
    }

    /// Half the slower mode's full rate, to two significant digits: a load both modes carry.
    static func equalLoadRate(_ a: BenchRun, _ b: BenchRun) -> Double {
        let fps = min(a.mpps, b.mpps) * 1e6 / 2
        guard fps >= 100 else { return 100 }
        let magnitude = pow(10, floor(log10(fps)) - 1)
        return floor(fps / magnitude) * magnitude
    }

    func run() throws {
        guard let plugins = Demo.pluginDirectory() else {
            throw ValidationError("no plugin images in .build/plugins (run scripts/build-plugins.sh from the repository)")
        }
        let setup = BenchSetup(model: model, queues: queues, busyPoll: poll == .busy, window: window == 0 ? nil : window,
                               cpus: parsedCPUs, plugins: plugins)
        let formatter = ISO8601DateFormatter()
        var report = BenchReport(machine: .init(
            date: formatter.string(from: Date()), cpus: ProcessInfo.processInfo.activeProcessorCount,
            ghz: ClockCalibration.gigahertz(), ghzMethod: ClockCalibration.method, model: model, queues: queues,
            polling: poll == .busy ? "busy-poll" : "interrupts after a short spin", pinning: cpus ?? "none", secondsPerRun: duration))
        for size in parsedSizes {
            if let only {
                report.add(fullRate: try setup.measure(frameBytes: size, passthrough: only == .passthrough, rate: nil, seconds: duration))
                continue
            }
            let emulated = try setup.measure(frameBytes: size, passthrough: false, rate: nil, seconds: duration)
            let passthrough = try setup.measure(frameBytes: size, passthrough: true, rate: nil, seconds: duration)
            report.add(fullRate: emulated)
            report.add(fullRate: passthrough)
            report.addRatios(frameBytes: size)
            let rate = Self.equalLoadRate(emulated, passthrough)
            report.add(equalLoadOf: try setup.measure(frameBytes: size, passthrough: false, rate: rate, seconds: duration),
                       try setup.measure(frameBytes: size, passthrough: true, rate: rate, seconds: duration))
            if !json { FileHandle.standardError.write(Data("bench: \(size) B done\n".utf8)) }
        }
        if let plot {
            try BenchPlot(report: report).svg().write(toFile: plot, atomically: true, encoding: .utf8)
        }
        print(json ? try report.json() : report.text())
    }
}
