import ArgumentParser
import CNPAShim
import Foundation
import Logging
import NPAControlProtocol
import NPAHost
import NPAShell
import NPASystem
import NPAWorkload

/// `npa bench` (first version): the seed's experiment on this system. For each frame size it
/// runs the same offered load through both modes, one after the other in one process tree, and
/// reports verified throughput, CPU by role from per-thread clocks, Mbps per GHz of guest + host
/// CPU for TX (the sending guest) and RX (the receiving guest), the passthrough/emulated ratios
/// and the CPU saving at that equal load. Not yet: plots, pinning, busy-poll vs interrupt modes.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Emulated vs passthrough: throughput, CPU by role, Mbps/GHz, ratios (first version).")

    @Option(help: "Seconds of traffic per measurement.")
    var duration: Double = 2

    @Option(help: "Frame sizes, comma separated.")
    var sizes: String = "64,1514,9014"

    @Flag(help: "Print one JSON object.")
    var json = false

    struct Result: Codable {
        var direction: String
        var mode: String
        var frameBytes: Int
        var mpps: Double
        var gbps: Double
        var cpuCores: [String: Double]
        var mbpsPerGHz: Double
        var wakeupsPerMB: Double
        var sent: Int
        var received: Int
        var dropped: UInt64
        enum CodingKeys: String, CodingKey {
            case direction, mode, mpps, gbps, sent, received, dropped
            case frameBytes = "frame_bytes"
            case cpuCores = "cpu_cores"
            case mbpsPerGHz = "mbps_per_ghz"
            case wakeupsPerMB = "wakeups_per_mb"
        }
    }

    struct Run {
        var mpps = 0.0, gbps = 0.0, seconds = 0.0
        var sender = 0.0, receiver = 0.0, host = 0.0, hardware = 0.0
        var wakeups: UInt64 = 0
        var received = 0, sent = 0
        var dropped: UInt64 = 0
    }

    func validate() throws {
        guard duration > 0, duration <= 600 else { throw ValidationError("--duration must be in (0, 600] seconds") }
        guard !parsedSizes.isEmpty else { throw ValidationError("--sizes must list frame sizes from 64 to 9018") }
    }

    var parsedSizes: [Int] {
        sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { (64...9018).contains($0) }
    }

    /// Offered load per size, the same in both modes (so "equal load" is the whole run).
    static func rate(for size: Int) -> Double { size <= 128 ? 400_000 : size <= 2048 ? 250_000 : 60_000 }

    /// Cycles per second of this core, from a dependent square-and-add chain (imul 3 + add 1 = 4
    /// cycles per step on x86-64; squaring stops the compiler from folding steps together, as it
    /// does with a linear x*3+i chain): /proc/cpuinfo reports the TSC rate, not the running clock.
    static func calibrateGHz() -> Double {
        var best = 0.0
        for _ in 0..<5 {
            var x = UInt64(cnpa_monotonic_ns() & 0xFF) | 3
            let steps = 50_000_000
            let t0 = cnpa_monotonic_ns()
            for _ in 0..<steps { x = x &* x &+ 1 }
            let t1 = cnpa_monotonic_ns()
            if x == 42 { print("") }  // keeps the chain alive
            best = max(best, Double(steps) * 4 / Double(t1 - t0))
        }
        return best
    }

    func run() throws {
        guard let plugins = Demo.pluginDirectory() else {
            throw ValidationError("no plugin images in .build/plugins (run scripts/build-plugins.sh from the repository)")
        }
        let ghz = Self.calibrateGHz()
        var results: [Result] = []
        var equal: [[String: Double]] = []
        for size in parsedSizes {
            var runs: [String: Run] = [:]
            for mode in ["emulated", "passthrough"] {
                runs[mode] = try measure(size: size, passthrough: mode == "passthrough", plugins: plugins)
            }
            for mode in ["emulated", "passthrough"] {
                let r = runs[mode]!
                let mbps = r.gbps * 1000
                let mb = Double(r.received * size) / 1e6
                for (direction, guest) in [("TX", r.sender), ("RX", r.receiver)] {
                    let cores = (guest + r.host) / r.seconds
                    results.append(Result(
                        direction: direction, mode: mode, frameBytes: size, mpps: r.mpps, gbps: r.gbps,
                        cpuCores: ["guest": guest / r.seconds, "host": r.host / r.seconds, "hardware": r.hardware / r.seconds],
                        mbpsPerGHz: cores > 0 ? mbps / (cores * ghz) : 0, wakeupsPerMB: mb > 0 ? Double(r.wakeups) / mb : 0,
                        sent: r.sent, received: r.received, dropped: r.dropped))
                }
            }
            let e = runs["emulated"]!, p = runs["passthrough"]!
            let ce = e.sender + e.receiver + e.host, cp = p.sender + p.receiver + p.host
            equal.append(["frame_bytes": Double(size), "offered_fps": Self.rate(for: size), "emulated_cpu_s": ce, "passthrough_cpu_s": cp,
                          "saving_percent": ce > 0 ? (1 - cp / ce) * 100 : 0])
        }
        var ratios: [String: Double] = [:]
        for r in results where r.mode == "passthrough" {
            if let e = results.first(where: { $0.mode == "emulated" && $0.direction == r.direction && $0.frameBytes == r.frameBytes }), e.mbpsPerGHz > 0 {
                ratios["\(r.direction) \(r.frameBytes)"] = r.mbpsPerGHz / e.mbpsPerGHz
            }
        }
        if json {
            struct Output: Codable { var ghz: Double; var results: [Result]; var ratios: [String: Double]; var equalLoad: [[String: Double]]
                enum CodingKeys: String, CodingKey { case ghz, results, ratios; case equalLoad = "equal_load" } }
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(Output(ghz: ghz, results: results, ratios: ratios, equalLoad: equal)), as: UTF8.self))
            return
        }
        print(String(format: "clock: %.2f GHz (calibrated: dependent square-and-add chain, 4 cycles a step; ratios do not depend on it)", ghz))
        var rows = [["dir", "mode", "frame B", "verified", "dropped", "Mpps", "Gbit/s", "guest cores", "host cores", "hw cores", "Mbps/GHz", "wake-ups/MB"]]
        for r in results {
            rows.append([r.direction, r.mode, "\(r.frameBytes)", "\(r.received)/\(r.sent)", "\(r.dropped)", String(format: "%.3f", r.mpps), String(format: "%.2f", r.gbps),
                         String(format: "%.2f", r.cpuCores["guest"]!), String(format: "%.2f", r.cpuCores["host"]!),
                         String(format: "%.2f", r.cpuCores["hardware"]!), String(format: "%.0f", r.mbpsPerGHz), String(format: "%.2f", r.wakeupsPerMB)])
        }
        print(StatusTable.table(rows))
        print("\npassthrough / emulated Mbps per GHz (RFC 2010: TX 1.43, RX 1.70):")
        for (k, v) in ratios.sorted(by: { $0.key < $1.key }) { print(String(format: "  %@: %.2f", k, v)) }
        print("\nequal offered load, guest + host CPU seconds:")
        for e in equal {
            print(String(format: "  %5.0f B at %.0f frames/s: emulated %.2f s, passthrough %.2f s, saving %.0f %%",
                         e["frame_bytes"]!, e["offered_fps"]!, e["emulated_cpu_s"]!, e["passthrough_cpu_s"]!, e["saving_percent"]!))
        }
    }

    private final class Box<T>: @unchecked Sendable {
        var value: T
        init(_ v: T) { value = v }
    }

    private func measure(size: Int, passthrough: Bool, plugins: String) throws -> Run {
        let host = try InProcessHost.withNIC(label: "bench", model: "npa-dring", vfs: 2, autoPassthrough: passthrough, plugins: plugins)
        defer { host.stop() }
        let daemon = host.daemon, hostThread = host.thread
        let tx = try host.attach("bench-tx", mac: "02:00:00:00:e0:01", memoryMiB: 96, frameBytes: size)
        let rx = try host.attach("bench-rx", mac: "02:00:00:00:e0:02", memoryMiB: 96, frameBytes: size)
        _ = tx.reclaimTransmitted()  // carries out the automatic switch-in in passthrough mode
        _ = rx.reclaimTransmitted()
        guard tx.mode == (passthrough ? "passthrough" : "emulated"), rx.mode == tx.mode else {
            throw ValidationError("guests did not reach \(passthrough ? "passthrough" : "emulation"): \(tx.lastSwitchError ?? rx.lastSwitchError ?? "?")")
        }
        let rate = Self.rate(for: size)
        let workload = TrafficWorkload(count: Int(rate * duration), frameBytes: size, rate: rate, flows: 2, timeoutSeconds: duration * 3 + 10)
        let nicThread = daemon.nics.first?.engineThread
        let host0 = EngineThread.cpuNanoseconds(of: hostThread)
        let hw0 = nicThread.map { EngineThread.cpuNanoseconds(of: $0) } ?? 0
        let txBox = Box(tx), rxBox = Box(rx)
        let sendResult = Box(TrafficSummary(role: "send")), recvResult = Box(TrafficSummary(role: "recv"))
        // The receiver stops once the sender has finished (its frames all completed) and the
        // receive rings are drained, so a dropped frame does not stretch the measurement.
        let senderDone = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        senderDone.initialize(to: 0)
        defer { senderDone.deallocate() }
        let done = Box(senderDone)
        let receiver = EngineThread.start(name: "guest-rx") {
            recvResult.value = workload.receive(rxBox.value) { cnpa_load_acquire_u32(done.value) != 0 }
        }
        let sender = EngineThread.start(name: "guest-tx") {
            sendResult.value = workload.send(txBox.value, to: rxBox.value.mac)
            cnpa_store_release_u32(done.value, 1)
        }
        EngineThread.join(sender)
        EngineThread.join(receiver)
        var r = Run()
        r.host = Double(EngineThread.cpuNanoseconds(of: hostThread) - host0) / 1e9
        r.hardware = Double((nicThread.map { EngineThread.cpuNanoseconds(of: $0) } ?? 0) - hw0) / 1e9
        r.sender = sendResult.value.cpuSeconds
        r.receiver = recvResult.value.cpuSeconds
        r.seconds = max(sendResult.value.seconds, 1e-6)  // the offered-load period
        r.received = recvResult.value.received
        r.sent = sendResult.value.sent
        r.dropped = recvResult.value.dropped.values.reduce(0, +)
        r.mpps = Double(r.received) / r.seconds / 1e6
        r.gbps = Double(r.received * size) * 8 / r.seconds / 1e9
        r.wakeups = tx.doorbellKicks + rx.doorbellKicks + tx.interruptWaits + rx.interruptWaits
        return r
    }
}
