import Foundation
import NPAAdmin
import NPAControlProtocol
import NPAHost
import NPANICModel
import NPARingFormats
import NPAShell
import NPASystem
import NPAWorkload

/// `npa soak --chaos`: hosts (one per NIC model) each with two surviving guests streaming
/// sequence-numbered frames both ways, two victim guests in their own processes, one hostile
/// guest, while a seeded schedule switches the survivors in and out, resets their VFs, disables
/// VFs under their plugins, SIGKILLs and restarts the victims, has the hostile guest write
/// random descriptors, and opens and abandons control connections.
///
/// Checked as it runs: the survivors' streams never show a duplicate or a reordered frame, and
/// every host keeps answering. Checked at the end: every frame a survivor sent was verified
/// exactly once or counted as dropped by the receiving vNIC; every victim, hostile vNIC and
/// abandoned connection is gone from the host, and the process's descriptors and threads are
/// back to what they were before the first victim attached; no VF is left held.
final class ChaosSoak {
    let options: Options
    private var rng: SplitMix
    private var report = Report()
    private var abandoned: [SeqPacketSocket] = []
    private let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()

    init(_ options: Options) {
        self.options = options
        rng = SplitMix(seed: options.seed)
        report.seed = options.seed
        report.models = options.models
    }

    func run() throws -> Report {
        let start = Clock.monotonicNanoseconds()
        var cells: [Cell] = []
        defer { for cell in cells { teardown(cell) } }
        for (i, model) in options.models.enumerated() {
            cells.append(try makeCell(index: i, model: model))
        }
        // Foundation starts its child-process machinery (dispatch threads, an event loop's
        // descriptors) with the first child it kills and reaps, and keeps it, setting it up on
        // its own threads: start it now, as the victims will use it, and let it settle before
        // the baseline.
        // Each cell's admin client connects on its first request and keeps that connection (two
        // sockets: its end and the in-process host's): open them before the baseline too.
        for cell in cells { _ = try cell.host.admin.status() }
        let warmUp = try Process.run(URL(fileURLWithPath: "/bin/sleep"), arguments: ["60"])
        ChildProcesses.kill(warmUp.processIdentifier)
        warmUp.waitUntilExit()
        var settled = processResources()
        for _ in 0..<20 {
            EngineThread.sleep(microseconds: 50_000)
            let now = processResources()
            if now == settled { break }
            settled = now
        }
        report.baseline = processResources()
        baselineDescriptors = Set(descriptorTargets())
        for cell in cells {
            for victim in cell.victims { try launch(victim) }
            cell.hostile = try attachHostile(cell)
        }
        let deadline = start + UInt64(options.seconds * 1e9)
        var rounds = 0
        while Clock.monotonicNanoseconds() < deadline {
            for cell in cells { pump(cell) }
            rounds += 1
            if rounds % 40 == 0, let cell = cells.randomElement(using: &rng) { try chaos(cell) }
            if rounds % 400 == 0 { checkContinuously(cells) }
        }
        try finish(cells)
        report.seconds = Double(Clock.monotonicNanoseconds() - start) / 1e9
        return report
    }

    // MARK: Setup

    private func makeCell(index: Int, model: String) throws -> Cell {
        let host = try InProcessHost.withNIC(
            label: "chaos-\(model)", model: model, vfs: 4, plugins: options.plugins.directory, trust: options.plugins.trustFiles)
        let prefix = String(format: "02:00:00:%02x", 0xc0 + index)
        func survivor(_ n: Int) throws -> VirtualNIC {
            try host.attach("survivor\(n)", mac: "\(prefix):00:0\(n)", memoryMiB: 32) { c in
                c.txQueues = 2
                c.rxQueues = 2
            }
        }
        let a = try survivor(1), b = try survivor(2)
        let victims = [
            Victim(name: "victim1", mac: "\(prefix):01:01", peer: "\(prefix):01:02", socket: host.socket),
            Victim(name: "victim2", mac: "\(prefix):01:02", peer: "\(prefix):01:01", socket: host.socket),
        ]
        return Cell(
            model: model, host: host, survivors: [a, b],
            streams: [
                Stream(name: "\(model) survivor1→survivor2", from: a, to: b), Stream(name: "\(model) survivor2→survivor1", from: b, to: a),
            ],
            victims: victims)
    }

    private func launch(_ victim: Victim) throws {
        let p = Process()
        p.executableURL = executable
        p.arguments =
            [
                "guest", "duplex", "--host", victim.socket, "--name", victim.name, "--mac", victim.mac, "--to", victim.peer,
                "--count", "1000000000", "--rate", "5000", "--timeout", "100000", "--memory", "16", "--mtu", "1500",
            ] + options.plugins.guestArguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        victim.process = p
    }

    private func attachHostile(_ cell: Cell) throws -> VirtualNIC {
        var c = VirtualNIC.Configuration(name: "hostile", mac: nil)
        c.memoryBytes = 4 << 20
        c.ringSize = 256
        c.txQueues = 1
        c.rxQueues = 1
        c.pluginTrust = cell.host.pluginTrust
        cell.hostileGeneration += 1
        return try VirtualNIC.attach(hostSocket: cell.host.socket, configuration: c)
    }

    // MARK: Traffic

    private func pump(_ cell: Cell) {
        for s in cell.streams.indices {
            var stream = cell.streams[s]
            let flow = stream.nextFlow
            let first = stream.sequences[flow]
            let destination = stream.to.mac, source = stream.from.mac, size = options.frameBytes
            let n = stream.from.transmit(queue: flow % stream.from.txQueueCount, count: 16) { i, buffer in
                TrafficFrame.write(
                    into: buffer, destination: destination, source: source, flow: UInt32(flow), sequence: first + UInt64(i), length: size)
            }
            stream.sequences[flow] += UInt64(n)
            stream.sent += n
            stream.nextFlow = (flow + 1) % stream.sequences.count
            cell.streams[s] = stream
        }
        for s in cell.streams.indices {
            var verifier = cell.streams[s].verifier
            cell.streams[s].to.receive(maxFrames: 128, timeoutMilliseconds: 0) { verifier.record($0.bytes) }
            cell.streams[s].verifier = verifier
        }
        // The hostile guest and the victims' peers are not read here; the hostile guest's ring
        // fills and the host drops what it cannot deliver, which is part of the test.
        if let hostile = cell.hostile { _ = hostile.receive(maxFrames: 256, timeoutMilliseconds: 0) { _ in } }
    }

    // MARK: Chaos

    enum Action: String, CaseIterable {
        case switchSurvivor = "switch_survivor"
        case resetVF = "reset_vf"
        case disableVFUnderPlugin = "disable_vf_under_plugin"
        case killVictim = "kill_and_restart_victim"
        case hostileDescriptors = "hostile_descriptors"
        case abandonConnection = "abandon_control_connection"
    }

    private func chaos(_ cell: Cell) throws {
        let action = Action.allCases.randomElement(using: &rng)!
        report.actions[action.rawValue, default: 0] += 1
        let survivor = cell.survivors.randomElement(using: &rng)!
        switch action {
        case .switchSurvivor:
            // A refusal (no free VF, a switch already under way) is an answer, not a failure.
            _ = try? cell.host.admin.switchVNIC(name: survivor.name, toPassthrough: survivor.mode == "emulated")
        case .resetVF:
            if survivor.mode == "passthrough" { _ = try? cell.host.admin.resetVF(name: survivor.name) }
        case .disableVFUnderPlugin:
            if survivor.mode == "passthrough", let vf = vfIndex(of: survivor, in: cell), let nic = cell.host.daemon.nics.first {
                nic.quiesce(vf: vf)  // the plugin finds its VF dead on its next poll
            }
        case .killVictim:
            let victim = cell.victims.randomElement(using: &rng)!
            if let p = victim.process {
                ChildProcesses.kill(p.processIdentifier)
                p.waitUntilExit()
            }
            // The host tears the dead guest's vNIC down when its connection closes; then its
            // name is free for the restarted guest.
            if !waitUntil({ (try? cell.host.admin.status().vnics.contains { $0.name == victim.name }) == false }) {
                violation("\(cell.model): killed guest \(victim.name) still attached after 20 s")
            }
            try launch(victim)
        case .hostileDescriptors:
            try hostileDescriptors(cell)
        case .abandonConnection:
            abandonConnection(cell)
        }
    }

    private func vfIndex(of nic: VirtualNIC, in cell: Cell) -> Int? {
        guard let vf = try? cell.host.admin.status().vnics.first(where: { $0.name == nic.name })?.vf else { return nil }
        return vf.split(separator: "f").last.flatMap { Int($0) }
    }

    /// Random TX descriptors (addresses in and out of guest memory, any length, any generation,
    /// EOP or not) written straight into the hostile guest's ring, then a doorbell. A vNIC the
    /// host put into its error state is detached and a fresh one attached.
    private func hostileDescriptors(_ cell: Cell) throws {
        guard let evil = cell.hostile else { return }
        let gm = evil.guestMemoryForTesting
        guard let ring = gm.loadU64(gpa: evil.queueTableGPAForTesting + VMXNET3.TxQueueDesc.txRingBasePA) else { return }
        for _ in 0..<Int.random(in: 1...64, using: &rng) {
            let slot = UInt64.random(in: 0..<256, using: &rng)
            let address: UInt64 =
                Bool.random(using: &rng)
                ? UInt64.random(in: 0..<gm.size + 8192, using: &rng) : UInt64.random(in: 0...UInt64.max, using: &rng)
            let desc = VMXNET3Descriptor.Tx(
                address: address, length: UInt32.random(in: 0...0x3FFF, using: &rng),
                generation: UInt32.random(in: 0...1, using: &rng), endOfPacket: Bool.random(using: &rng))
            gm.storeU64(gpa: ring + slot * 16, address)
            gm.storeU32(gpa: ring + slot * 16 + 12, desc.dword3)
            gm.storeU32(gpa: ring + slot * 16 + 8, desc.dword2)
        }
        if Bool.random(using: &rng) {
            evil.registerPageForTesting.storeBytes(
                of: UInt32.random(in: 0...UInt32.max, using: &rng), toByteOffset: VMXNET3.RegisterPage.txProducer(0), as: UInt32.self)
        }
        evil.kickForTesting()
        let state = try? cell.host.admin.status().vnics.first { $0.name == "hostile" }?.state
        if let state, state != "active" {
            evil.detach()
            cell.hostile = nil
            if !waitUntil({ (try? cell.host.admin.status().vnics.contains { $0.name == "hostile" }) == false }) {
                violation("\(cell.model): a detached hostile vNIC stayed attached for 20 s")
            }
            report.actions["hostile_reattached", default: 0] += 1
            cell.hostile = try attachHostile(cell)
        }
    }

    /// Connects to the host and leaves: at once, after random bytes, after half an attach, or
    /// later (up to eight connections are held open and closed at random).
    private func abandonConnection(_ cell: Cell) {
        guard let socket = try? SeqPacketSocket.connect(path: cell.host.socket) else {
            violation("\(cell.model): the host refused a control connection")
            return
        }
        switch Int.random(in: 0..<3, using: &rng) {
        case 0: try? socket.send((0..<Int.random(in: 1...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        case 1: try? socket.send(Array(ControlMessage.attach(.init(name: "half", mac: nil, interruptVectors: 1)).encode().prefix(7)))
        default: break
        }
        abandoned.append(socket)
        if abandoned.count > 8 { abandoned.remove(at: Int.random(in: 0..<abandoned.count, using: &rng)) }
    }

    // MARK: Invariants

    private func violation(_ text: String) {
        report.violations.append(String(format: "%.1f s: ", Double(Clock.monotonicNanoseconds()) / 1e9) + text)
    }

    private func checkContinuously(_ cells: [Cell]) {
        for cell in cells {
            for stream in cell.streams where stream.verifier.duplicates > 0 || stream.verifier.outOfOrder > 0 || stream.verifier.invalid > 0
            {
                violation(
                    "\(stream.name): \(stream.verifier.duplicates) duplicates, \(stream.verifier.outOfOrder) out of order, \(stream.verifier.invalid) invalid"
                )
            }
            if (try? cell.host.admin.status()) == nil { violation("\(cell.model): the host did not answer a status request") }
        }
    }

    private func finish(_ cells: [Cell]) throws {
        for cell in cells {
            for victim in cell.victims {
                if let p = victim.process {
                    ChildProcesses.kill(p.processIdentifier)
                    p.waitUntilExit()
                }
                victim.process = nil
            }
            cell.hostile?.detach()
            cell.hostile = nil
        }
        abandoned.removeAll()
        for cell in cells {
            // Back to emulation, so no VF is held and the descriptors a VF needs are closed.
            for survivor in cell.survivors where survivor.mode == "passthrough" {
                _ = try? cell.host.admin.switchVNIC(name: survivor.name, toPassthrough: false)
            }
            for s in cell.streams.indices {
                var stream = cell.streams[s]
                _ = stream.from.flush(timeoutMilliseconds: 10_000)
                let drops = receiveUntilAccounted(stream.to, &stream.verifier, total: stream.sent)
                cell.streams[s] = stream
                let v = stream.verifier
                report.streams.append(
                    .init(
                        name: stream.name, sent: stream.sent, received: v.unique, duplicates: v.duplicates, outOfOrder: v.outOfOrder,
                        dropped: drops))
                let counted = drops.values.reduce(0, +)
                if UInt64(v.unique) + counted != UInt64(stream.sent) {
                    let all = (try? stream.to.dropCounts()) ?? [:], senders = (try? stream.from.dropCounts()) ?? [:]
                    violation(
                        "\(stream.name): sent \(stream.sent), verified \(v.unique), counted as dropped \(counted): \(Int(stream.sent) - v.unique - Int(counted)) unexplained (receiver's drops \(all), sender's drops \(senders), sender's log \(stream.from.switchLog.suffix(6)))"
                    )
                }
                if v.duplicates > 0 || v.outOfOrder > 0 || v.invalid > 0 {
                    violation("\(stream.name): \(v.duplicates) duplicates, \(v.outOfOrder) out of order, \(v.invalid) invalid")
                }
            }
            let onlySurvivors = waitUntil {
                (try? cell.host.admin.status().vnics.map(\.name).sorted()) == ["survivor1", "survivor2"]
            }
            if !onlySurvivors {
                let names = (try? cell.host.admin.status().vnics.map(\.name)) ?? []
                violation("\(cell.model): after the run the host still has \(names)")
            }
            if let held = try? cell.host.admin.status().vnics.filter({ $0.vf != nil }).map(\.name), !held.isEmpty {
                violation("\(cell.model): VFs still held by \(held) after switching out")
            }
        }
        // Descriptors and threads: the same as before the first victim attached.
        _ = waitUntil { processResources()["open_descriptors"] == report.baseline["open_descriptors"] }
        report.final = processResources()
        for key in ["open_descriptors", "threads"] where report.final[key] != report.baseline[key] {
            violation("\(key): \(report.baseline[key] ?? -1) before, \(report.final[key] ?? -1) after")
        }
        if report.final["open_descriptors"] != report.baseline["open_descriptors"] {
            let now = Set(descriptorTargets())
            violation("descriptors now open that were not before: \(now.subtracting(baselineDescriptors).sorted())")
        }
    }

    /// Receives until every frame sent to `nic` is verified or counted as dropped by it (20 s
    /// at most); returns its receive-side drops by reason.
    private func receiveUntilAccounted(_ nic: VirtualNIC, _ verifier: inout FlowVerifier, total: Int) -> [String: UInt64] {
        var drops: [String: UInt64] = [:]
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        repeat {
            nic.receive(maxFrames: 256, timeoutMilliseconds: 10) { verifier.record($0.bytes) }
            drops = ((try? nic.dropCounts()) ?? [:]).filter { ReceiveAccounting.receiveSideReasons.contains($0.key) }
        } while UInt64(verifier.unique) + drops.values.reduce(0, +) < UInt64(total) && Clock.monotonicNanoseconds() < deadline
        return drops
    }

    private func waitUntil(_ condition: () -> Bool) -> Bool {
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while Clock.monotonicNanoseconds() < deadline {
            if condition() { return true }
            EngineThread.sleep(microseconds: 5_000)
        }
        return condition()
    }

    /// This process's open descriptors, engine threads and resident memory (MiB).
    private func processResources() -> [String: Int] {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
        // The engine threads (hosts, NICs) by name: Foundation's own come and go.
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        let threads = tasks.filter {
            ((try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8)) ?? "").hasPrefix("npa-")
        }.count
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ")
        let resident = statm.flatMap { $0.count > 1 ? Int($0[1]) : nil }.map { ($0 * Int(getpagesize())) >> 20 } ?? -1
        return ["open_descriptors": fds, "threads": threads, "resident_mib": resident]
    }

    private var baselineDescriptors: Set<String> = []

    /// "fd → target" for every open descriptor (diagnosing a leak).
    private func descriptorTargets() -> [String] {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.map { fd in "\(fd) → " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "?") }
    }

    private func teardown(_ cell: Cell) {
        for victim in cell.victims {
            if let p = victim.process, p.isRunning {
                ChildProcesses.kill(p.processIdentifier)
                p.waitUntilExit()
            }
        }
        cell.hostile?.detach()
        for survivor in cell.survivors { survivor.detach() }
        cell.host.stop()
    }
}
