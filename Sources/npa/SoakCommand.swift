import ArgumentParser
import Foundation
import Logging
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPAShell
import NPASystem
import NPAWorkload

/// `npa soak`: its own host (with nic0 as the vswitch uplink) and two guests streaming
/// sequence-numbered traffic both ways while both switch in and out N times. Prints what was
/// verified, the switch times (p50/p99/max, as the guests measured them) and leaked buffers.
struct Soak: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Switch two guests in and out N times under bidirectional load; verify nothing is lost.",
        discussion: """
            --chaos runs the chaos soak instead: one host per NIC model (each one the NIC implements), each with \
            two surviving guests streaming both ways, two victim guests in their own processes and a \
            hostile guest, while a schedule drawn from --seed switches the survivors, resets and \
            disables their VFs, SIGKILLs and restarts the victims, writes random descriptors and \
            abandons control connections. Exit status 1 if any invariant broke (each is listed).

            --migrate N runs the migration soak instead: two hosts in this process (A with an npa-dring NIC, \
            B with an npa-cq NIC) and a guest in passthrough that migrates A→B→A… N times while the peer on \
            its host streams numbered frames to it at --rate; reports the downtime at the guest (p50/p99/max), \
            loss, the phases' medians and leaks on both hosts. Exit status 1 if a frame was lost, duplicated or \
            reordered, a migration failed, the guest was not switched in at a destination, or anything leaked.
            """)

    @Option(help: "Switches per guest (each is one switch-in or one switch-out).")
    var switches: Int = 200

    @Option(help: "Frames each guest sends between two switches.")
    var framesPerSwitch: Int = 200

    @Option(help: NICModelOption.help)
    var model: String = NICModel.dring.name

    @Flag(help: "Print the summary as one JSON object.")
    var json = false

    @Flag(help: "Run the chaos soak (see below) instead of the switching soak.")
    var chaos = false

    @Option(help: "--chaos: minutes to run.")
    var minutes: Double = 1

    @Option(help: "--chaos: seconds to run (instead of --minutes).")
    var seconds: Double?

    @Option(help: "--chaos: the schedule's seed (default: from the clock; printed, so a run replays).")
    var seed: UInt64?

    @Option(help: "Run the migration soak (see below): this many live migrations between two hosts.")
    var migrate: Int?

    @Option(help: "--migrate: frames per second streamed to the migrating guest.")
    var rate: Double = 5_000

    @Option(
        help:
            "--migrate: both hosts' migration_timeout_ms (each phase's bound; the source forwards for the smaller of it and 200 ms after the destination announced the guest)."
    )
    var migrationTimeoutMs: Int?

    @Option(
        help:
            "--migrate: both hosts' migration_forwarding_quiet_ms (1...200): how long, once its wires drained, the source waits for no more frames after the announcement before it stops forwarding (default 10; the guest's downtime, traded against frames slower than that between the hosts)."
    )
    var forwardingQuietMs: Int?

    @Flag(help: "--migrate: the guest stays emulated (no VF at either host), to tell the switch-in's part apart.")
    var emulated = false

    @OptionGroup(title: "Plugin store")
    var pluginStore: PluginStoreOptions

    func validate() throws {
        if let migrationTimeoutMs, !(10...600_000).contains(migrationTimeoutMs) {
            throw ValidationError("--migration-timeout-ms must be 10...600000")
        }
        if let forwardingQuietMs, !(1...200).contains(forwardingQuietMs) {
            throw ValidationError("--forwarding-quiet-ms must be 1...200")
        }
        if let migrate {
            guard !chaos else { throw ValidationError("--migrate and --chaos are two soaks: choose one") }
            guard migrate >= 1, migrate <= 100_000 else { throw ValidationError("--migrate must be 1...100000") }
            guard rate >= 100, rate <= 100_000 else { throw ValidationError("--rate must be 100...100000 frames per second") }
        }
        if chaos {
            guard minutes > 0, minutes <= 24 * 60 else { throw ValidationError("--minutes must be in (0, 1440]") }
            if let seconds, !(seconds > 0 && seconds <= 86_400) { throw ValidationError("--seconds must be in (0, 86400]") }
        } else if seconds != nil || seed != nil {
            throw ValidationError("--seconds, --minutes and --seed are for --chaos")
        }
        guard switches >= 1, switches <= 1_000_000 else { throw ValidationError("--switches must be 1...1000000") }
        guard framesPerSwitch >= 40, framesPerSwitch % 40 == 0 else {
            throw ValidationError(
                "--frames-per-switch must be a positive multiple of 40 (two sends per guest per switch, two flows, bursts of 10)")
        }
        try NICModelOption.validate(model)
        try pluginStore.validatePairing()
    }

    struct Percentiles: Codable {
        var p50: Double, p99: Double, max: Double
        init(_ values: [Double]) {
            let s = values.sorted()
            func at(_ q: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count - 1) * q + 0.5))] }
            p50 = at(0.5)
            p99 = at(0.99)
            max = s.last ?? 0
        }
    }

    struct Summary: Codable {
        var sent = 0, received = 0, lost = 0, duplicates = 0, outOfOrder = 0, switches = 0, leakedBuffers = 0
        var switchOutMs = Percentiles([]), switchInMs = Percentiles([])
        var seconds = 0.0
        var model = ""
        /// The bundle injected for the model.
        var plugins: [StatusReport.PluginInjection] = []
        enum CodingKeys: String, CodingKey {
            case sent, received, lost, duplicates, switches, seconds, model, plugins
            case outOfOrder = "out_of_order"
            case leakedBuffers = "leaked_buffers"
            case switchOutMs = "switch_out_ms"
            case switchInMs = "switch_in_ms"
        }
    }

    func run() throws {
        let plugins = try pluginStore.requiredSource()
        if chaos { return try runChaos(plugins: plugins) }
        if let migrate { return try runMigrations(migrate, plugins: plugins) }
        let injections = try plugins.injections(for: [model])
        if !json { for injection in injections { print(injection.line) } }
        let host = try InProcessHost.withNIC(label: "soak", model: model, plugins: plugins.directory, trust: plugins.trustFiles)
        defer { host.stop() }
        let a = try host.attach("soak-a", mac: "02:00:00:00:c0:01"), b = try host.attach("soak-b", mac: "02:00:00:00:c0:02")
        let flows = 2
        let total = switches * framesPerSwitch
        var atA = FlowVerifier(), atB = FlowVerifier()
        var seqA = [UInt64](repeating: 0, count: flows), seqB = [UInt64](repeating: 0, count: flows)
        func pump() {
            a.receive(maxFrames: 128, timeoutMilliseconds: 0) { atA.record($0.bytes) }
            b.receive(maxFrames: 128, timeoutMilliseconds: 0) { atB.record($0.bytes) }
        }
        func send(_ from: VirtualNIC, _ to: VirtualNIC, _ seq: inout [UInt64], count: Int) {
            var sent = 0
            while sent < count {
                let flow = sent / 10 % flows
                let first = seq[flow]
                let n = from.transmit(queue: flow, count: 10 - sent % 10) { i, buffer in
                    TrafficFrame.write(
                        into: buffer, destination: to.mac, source: from.mac, flow: UInt32(flow), sequence: first + UInt64(i), length: 1514)
                }
                seq[flow] += UInt64(n)
                sent += n
                pump()
                if n == 0 { _ = from.waitForTransmitSpace(queue: flow, timeoutMilliseconds: 10) }
            }
        }
        let start = Clock.monotonicNanoseconds()
        for round in 0..<switches {
            // Both guests switch in (even rounds) or out (odd rounds) with traffic in flight both ways.
            try host.admin.switchVNIC(name: a.name, toPassthrough: round % 2 == 0)
            send(a, b, &seqA, count: framesPerSwitch / 2)
            try host.admin.switchVNIC(name: b.name, toPassthrough: round % 2 == 0)
            send(b, a, &seqB, count: framesPerSwitch / 2)
            send(a, b, &seqA, count: framesPerSwitch / 2)
            send(b, a, &seqB, count: framesPerSwitch / 2)
        }
        let deadline = Clock.monotonicNanoseconds() + 30_000_000_000
        while (atA.unique < total || atB.unique < total) && Clock.monotonicNanoseconds() < deadline {
            a.receive(maxFrames: 256, timeoutMilliseconds: 10) { atA.record($0.bytes) }
            b.receive(maxFrames: 256, timeoutMilliseconds: 10) { atB.record($0.bytes) }
        }
        _ = a.flush(timeoutMilliseconds: 10_000)
        _ = b.flush(timeoutMilliseconds: 10_000)
        var s = Summary()
        s.model = model
        s.plugins = injections
        s.seconds = Double(Clock.monotonicNanoseconds() - start) / 1e9
        s.sent = 2 * total
        s.received = atA.unique + atB.unique
        s.lost = s.sent - s.received
        s.duplicates = atA.duplicates + atB.duplicates
        s.outOfOrder = atA.outOfOrder + atB.outOfOrder
        s.switches = a.switchDurations.count + b.switchDurations.count
        s.switchInMs = Percentiles(a.switchInDurations + b.switchInDurations)
        s.switchOutMs = Percentiles(a.switchOutDurations + b.switchOutDurations)
        s.leakedBuffers = (a.buffersOutstanding - a.postedReceiveBuffers) + (b.buffersOutstanding - b.postedReceiveBuffers)
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(s), as: UTF8.self))
        } else {
            print("soak (\(model)): \(s.switches) switches in \(String(format: "%.1f", s.seconds)) s, 1514-byte frames both ways")
            print(
                "  sent \(s.sent), received \(s.received), lost \(s.lost), duplicates \(s.duplicates), out of order \(s.outOfOrder), leaked buffers \(s.leakedBuffers)"
            )
            print(String(format: "  switch-in  ms: p50 %.3f  p99 %.3f  max %.3f", s.switchInMs.p50, s.switchInMs.p99, s.switchInMs.max))
            print(String(format: "  switch-out ms: p50 %.3f  p99 %.3f  max %.3f", s.switchOutMs.p50, s.switchOutMs.p99, s.switchOutMs.max))
        }
        if s.lost != 0 || s.duplicates != 0 || s.outOfOrder != 0 || s.leakedBuffers != 0 { throw ExitCode(1) }
    }

    private func runMigrations(_ count: Int, plugins: PluginSource) throws {
        let options = MigrationSoak.Options(
            migrations: count, rate: rate, plugins: plugins, migrationTimeoutMilliseconds: migrationTimeoutMs,
            forwardingQuietMilliseconds: forwardingQuietMs,
            passthrough: !emulated)
        // Emulated throughout, the guest is offered no plugin.
        let injections = try emulated ? [] : plugins.injections(for: [options.models.0, options.models.1])
        if !json { for injection in injections { print(injection.line) } }
        var report = try MigrationSoak(options).run()
        report.plugins = injections
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
        if !report.held {
            standardError(
                "npa soak --migrate: frames lost, reordered or duplicated, a migration failed or left the guest emulated, or a leak (see above)"
            )
            throw ExitCode(ExitStatus.notVerified)
        }
    }

    private func runChaos(plugins: PluginSource) throws {
        let seed = seed ?? Clock.monotonicNanoseconds()
        let duration = seconds ?? minutes * 60
        let options = ChaosSoak.Options(seconds: duration, seed: seed, plugins: plugins)
        let injections = try plugins.injections(for: options.models)
        if !json {
            for injection in injections { print(injection.line) }
            print(
                "chaos soak: \(String(format: "%.0f", duration)) s, seed \(seed) (npa soak --chaos --seconds \(String(format: "%.0f", duration)) --seed \(seed) replays the schedule)"
            )
        }
        var report = try ChaosSoak(options).run()
        report.plugins = injections
        if json {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(report), as: UTF8.self))
        } else {
            print(
                String(format: "ran %.1f s; actions: ", report.seconds)
                    + report.actions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            for s in report.streams {
                let drops =
                    s.dropped.isEmpty ? "none" : s.dropped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                print(
                    "  \(s.name): sent \(s.sent), verified \(s.received), duplicates \(s.duplicates), out of order \(s.outOfOrder), dropped (counted) \(drops)"
                )
            }
            print(
                "  process before/after: "
                    + report.baseline.keys.sorted().map { "\($0) \(report.baseline[$0]!)/\(report.final[$0] ?? -1)" }.joined(
                        separator: ", "))
            print(
                report.violations.isEmpty
                    ? "every invariant held" : "violations:\n" + report.violations.map { "  " + $0 }.joined(separator: "\n"))
        }
        if !report.violations.isEmpty {
            standardError("npa soak --chaos: \(report.violations.count) invariant(s) broken (seed \(seed))")
            throw ExitCode(ExitStatus.notVerified)
        }
    }
}
