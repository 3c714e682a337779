import ArgumentParser
import Foundation
import Logging
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPASystem
import NPAWorkload

/// `npa demo`: the main job on the built-in path. Starts a host in this process, attaches four
/// guests as separate `npa guest` processes, runs paced traffic both ways between two pairs
/// (1514-byte and 64-byte frames), then prints what each guest verified and the host's counters.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Start a host, attach guests in separate processes, run traffic both ways, print counters and throughput; then live-migrate a guest between two hosts."
    )

    @Option(help: "Frames each guest sends (and expects back) per pair.")
    var frames: Int = 200_000

    @Option(help: "Offered rate per guest in frames per second.")
    var rate: Double = 150_000

    @Flag(help: "Print the results as one JSON object.")
    var json = false

    @Flag(help: "Do not switch guests to passthrough during the run.")
    var noSwitch = false

    @OptionGroup(title: "Plugin store")
    var pluginStore: PluginStoreOptions

    func validate() throws {
        guard frames >= 1 else { throw ValidationError("--frames must be at least 1") }
        guard rate > 0 else { throw ValidationError("--rate must be positive") }
        try pluginStore.validatePairing()
    }

    struct GuestSpec {
        let name: String
        let mac: String
        let peer: String
        let size: Int
    }

    func run() throws {
        let socket = NSTemporaryDirectory() + "npa-demo-\(ProcessInfo.processInfo.processIdentifier).sock"
        var logger = Logger(label: "npa.demo.host")
        logger.logLevel = .warning
        var config = HostConfiguration()
        // The demo's guests all receive: its host lets a receiver the scheduler set aside (a busy
        // 2-core machine) hold its senders back for up to 5 s before dropping, not 500 ms.
        config.receiverStallMilliseconds = 5_000
        // A software SR-IOV NIC whose PF is the vswitch's uplink, if there are plugin bundles: the
        // store given, or the in-tree ones (the demo builds and signs them when it can: `InTreePlugins`).
        let plugins = try pluginStore.source()
        if let plugins {
            config.nics = [.init(name: "nic0", model: NICModel.dring.name, vfs: 8)]
            config.uplink = .nic("nic0")
            plugins.configure(&config)
        } else {
            config.uplink = .counting
        }
        let switching = plugins != nil && !noSwitch
        // The switches inject npa-dring's bundle; the migration scene npa-dring's and npa-cq's.
        let injections = try switching ? plugins?.injections(for: [NICModel.dring.name, NICModel.cq.name]) ?? [] : []
        let daemon = try HostDaemon(socketPath: socket, configuration: config, logger: logger)
        let admin = AdminClient(socketPath: daemon.adminSocketPath)
        let hostThread = EngineThread.start(name: "npa-host") {
            do { try daemon.run() } catch { print("host failed: \(error)") }
        }
        defer {
            daemon.stop()
            EngineThread.join(hostThread)
        }
        let specs = [
            GuestSpec(name: "alpha", mac: "02:00:00:00:00:0a", peer: "02:00:00:00:00:0b", size: 1514),
            GuestSpec(name: "beta", mac: "02:00:00:00:00:0b", peer: "02:00:00:00:00:0a", size: 1514),
            GuestSpec(name: "gamma", mac: "02:00:00:00:00:0c", peer: "02:00:00:00:00:0d", size: 64),
            GuestSpec(name: "delta", mac: "02:00:00:00:00:0d", peer: "02:00:00:00:00:0c", size: 64),
        ]
        if !json {
            print("NPA-Swift demo: host in this process at \(socket), \(specs.count) guests in separate processes")
            print(
                "traffic: duplex pairs alpha<->beta (1514 B) and gamma<->delta (64 B), \(frames) frames each way, \(Int(rate)) frames/s offered per guest"
            )
            if switching {
                for injection in injections { print(injection.line) }
                print(
                    "switching under that load: alpha and gamma switch in to VFs of nic0 (npa-dring plugin, injected), alpha switches out and back in;\nlast, a guest in passthrough live-migrates between two more hosts (npa-dring NIC → npa-cq NIC → back)\n"
                )
            } else {
                print(plugins == nil ? "(no plugin images: run scripts/build-plugins.sh to see passthrough and switching)\n" : "\n")
            }
        }
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let hostCPUStart = EngineThread.cpuNanoseconds(of: hostThread)
        let wallStart = Clock.monotonicNanoseconds()
        var running: [(GuestSpec, Process, Pipe, Pipe, Pipe)] = []
        for spec in specs {
            let p = Process()
            p.executableURL = executable
            p.arguments =
                [
                    "guest", "duplex", "--host", socket, "--name", spec.name, "--mac", spec.mac, "--to", spec.peer,
                    "--count", "\(frames)", "--size", "\(spec.size)", "--rate", "\(rate)", "--flows", "4", "--timeout", "60",
                    "--json", "--hold",
                ] + (plugins?.guestArguments ?? [])
            let out = Pipe()
            let input = Pipe()
            let errors = Pipe()  // a guest's progress lines; shown only if it fails
            p.standardOutput = out
            p.standardInput = input
            p.standardError = errors
            try p.run()
            running.append((spec, p, out, input, errors))
        }
        var switchLog: [String] = []
        if switching {
            // The schedule is relative to the traffic, which starts once the guests are attached
            // and active (a short run would otherwise ask to switch guests that are not there yet).
            let attachDeadline = Clock.monotonicNanoseconds() + 30_000_000_000
            while Clock.monotonicNanoseconds() < attachDeadline {
                let active = ((try? admin.status())?.vnics.filter { $0.state == "active" }.count) ?? 0
                if active == specs.count { break }
                EngineThread.sleep(microseconds: 5_000)
            }
            let scheduleStart = Clock.monotonicNanoseconds()
            // Switch while the guests stream (the guests are separate processes; each switch is
            // DIC from the host, carried out by the guest's shell in its data-path calls).
            let period = Double(frames) / rate
            for (at, name, toPassthrough) in [(0.2, "alpha", true), (0.3, "gamma", true), (0.5, "alpha", false), (0.7, "alpha", true)] {
                EngineThread.sleep(
                    microseconds: UInt32(max(0, at * period - (Double(Clock.monotonicNanoseconds() - scheduleStart) / 1e9)) * 1e6))
                switchLog.append(
                    "\(name) \(toPassthrough ? "switch-in" : "switch-out"): "
                        + Demo.adminSwitch(admin, vnic: name, toPassthrough: toPassthrough))
            }
        }
        var summaries: [(GuestSpec, TrafficSummary)] = []
        for (spec, process, out, _, errors) in running {
            guard let line = readSummaryLine(out.fileHandleForReading), let summary = try? TrafficSummary.decode(line) else {
                let said =
                    String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                    .split(separator: "\n").last { !$0.hasPrefix("attached as") }.map(String.init) ?? ""
                process.waitUntilExit()
                throw CommandFailure(
                    "guest \(spec.name) exited (status \(process.terminationStatus)) without a summary\(said.isEmpty ? "" : ": " + said)")
            }
            summaries.append((spec, summary))
        }
        let wallSeconds = Double(Clock.monotonicNanoseconds() - wallStart) / 1e9
        let hostCPU = Double(EngineThread.cpuNanoseconds(of: hostThread) - hostCPUStart) / 1e9
        // Every guest has finished and is holding its vNIC: read the host's counters now.
        let status = try admin.status()
        for (_, process, _, input, _) in running {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        var failures = summaries.flatMap { spec, summary in summary.failures.map { "\(spec.name): \($0)" } }
        if json {
            // The migration scene (below) runs quietly and is reported as one more key.
            let migration = try migrationScene(plugins: switching ? plugins : nil, quiet: true, failures: &failures)
            let scene = try migration.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
            print(
                demoJSON(summaries, status: status, hostCPU: hostCPU, wallSeconds: wallSeconds, migration: scene, plugins: injections))
            if !failures.isEmpty {
                standardError("npa demo: not verified: " + failures.joined(separator: "; "))
                throw ExitCode(ExitStatus.notVerified)
            }
            return
        }
        var rows = [["guest", "frame B", "sent", "received", "lost", "dup", "out of order", "Mpps", "Gbit/s", "guest CPU s", "drops"]]
        for (spec, s) in summaries {
            rows.append([
                spec.name, "\(spec.size)", "\(s.sent)", "\(s.received)", "\(s.lost)", "\(s.duplicates)", "\(s.outOfOrder)",
                String(format: "%.3f", s.mpps), String(format: "%.3f", s.gbps), String(format: "%.2f", s.cpuSeconds),
                s.dropped.isEmpty ? "-" : s.dropped.map { "\($0.key)=\($0.value)" }.joined(separator: " "),
            ])
        }
        print("What each guest verified (Mpps and Gbit/s count frames sent plus frames received):")
        print(StatusTable.table(rows))
        if !switchLog.isEmpty {
            print("\nSwitches requested during the run:")
            for line in switchLog { print("  " + line) }
        }
        print("\nThe host's vNICs (counters of the active path; last switch as the host timed it):")
        print(StatusTable.render(status))
        print(String(format: "\nhost engine thread CPU: %.2f s over %.2f s wall", hostCPU, wallSeconds))
        let lost = summaries.reduce(0) { $0 + $1.1.lost }
        let dropped = summaries.reduce(UInt64(0)) { $0 + $1.1.dropped.values.reduce(0, +) } + (status.uplink?.framesInDropped ?? 0)
        print(
            lost == 0
                ? "every frame sent was received exactly once, in order per flow"
                : "\(lost) frames not received; \(dropped) drops were counted with a reason (vNICs and the PF queue, see above)")
        _ = try migrationScene(plugins: switching ? plugins : nil, quiet: false, failures: &failures)
        if !failures.isEmpty {
            standardError("npa demo: not verified: " + failures.joined(separator: "; "))
            throw ExitCode(ExitStatus.notVerified)
        }
    }

    /// What `npa vnic switch-in/out` does.
    static func adminSwitch(_ admin: AdminClient, vnic: String, toPassthrough: Bool) -> String {
        do {
            return try admin.switchVNIC(name: vnic, toPassthrough: toPassthrough)
        } catch .refused(_, let message) {
            return "refused: \(message)"
        } catch .unreachable, .noAnswer {
            return "no answer from the host"
        } catch {
            return "unexpected reply"
        }
    }

    /// Reads lines from a guest's stdout until its JSON summary (the line with "role").
    private func readSummaryLine(_ handle: FileHandle) -> String? {
        var buffer = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { return nil }
            buffer.append(chunk)
            let text = String(decoding: buffer, as: UTF8.self)
            for line in text.split(separator: "\n") where line.contains("\"role\"") { return String(line) }
        }
    }

    /// The migration scene (`DemoMigrationScene`), when the NICs' plugins are there and switching
    /// is on: what it did not verify joins `failures`.
    private func migrationScene(plugins: PluginSource?, quiet: Bool, failures: inout [String]) throws -> MigrationSoak.Report? {
        guard let plugins else { return nil }
        let report = try DemoMigrationScene.run(plugins: plugins, quiet: quiet)
        if !report.held {
            failures.append(
                "migration scene: \(report.failed) failed, \(report.lost) frames lost, \(report.duplicates + report.outOfOrder) duplicated or reordered, leaks \(report.leaks)"
            )
        }
        return report
    }

    private func demoJSON(
        _ summaries: [(GuestSpec, TrafficSummary)], status: StatusReport, hostCPU: Double, wallSeconds: Double, migration: String?,
        plugins: [StatusReport.PluginInjection]
    ) -> String {
        let guests = summaries.map { "\"\($0.0.name)\":\($0.1.json())" }.joined(separator: ",")
        let scene = migration.map { ",\"migration\":\($0)" } ?? ""
        let injected = String(decoding: (try? JSONEncoder().encode(plugins)) ?? Data("[]".utf8), as: UTF8.self)
        return
            "{\"guests\":{\(guests)},\"host\":\(status.json()),\"host_cpu_seconds\":\(hostCPU),\"wall_seconds\":\(wallSeconds),\"plugins\":\(injected)\(scene)}"
    }
}
