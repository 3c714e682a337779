import Foundation
import NPASystem

/// What carries a `npa bench --tcp` stream: the two guests emulated, both on VFs, or (the
/// kernel's own reference) a plain veth pair between two other namespaces, no NPA at all.
enum TCPBenchPath: String, CaseIterable {
    case emulated, passthrough, veth
}

/// One iperf3 TCP stream of `npa bench --tcp`, with the CPU of every role over the run's window
/// (from starting the client to both iperf3 processes' exit). On veth only the iperf3 processes
/// (and softirq) are measured: no bridge, host or NIC takes part.
struct TCPBenchRun {
    var path: TCPBenchPath
    var round: Int
    /// iperf3 `-b`, or nil for as fast as TCP goes.
    var offeredMbps: Double?
    /// The window CPU time is divided by.
    var seconds = 0.0
    /// What the receiving iperf3 counted, over its own test time.
    var stream = IPerf3Stream()
    var senderBridge = ProcCPUTimes.ThreadTimes()
    var receiverBridge = ProcCPUTimes.ThreadTimes()
    var client = ProcCPUTimes.ThreadTimes()
    var server = ProcCPUTimes.ThreadTimes()
    var hostCPU = 0.0
    var hardwareCPU = 0.0
    var softirqCPU = 0.0
    var irqCPU = 0.0

    var mode: String { path.rawValue }
    var mbps: Double { stream.bitsPerSecond / 1e6 }
    func cores(_ cpuSeconds: Double) -> Double { seconds > 0 ? cpuSeconds / seconds : 0 }
    /// The sending guest: its bridge thread and the iperf3 client (user + system).
    var senderGuestCores: Double { cores(senderBridge.total + client.total) }
    /// The receiving guest: its bridge thread and the iperf3 server (user + system).
    var receiverGuestCores: Double { cores(receiverBridge.total + server.total) }
    var hostCores: Double { cores(hostCPU) }
    /// Both guests and the host: what carrying the stream cost, hardware and softirq apart.
    var guestAndHostCores: Double { senderGuestCores + receiverGuestCores + hostCores }
}

/// The receiver's side of an iperf3 `-J` report (the client's JSON holds the server's totals).
struct IPerf3Stream: Codable, Equatable {
    var bytes = 0.0
    var seconds = 0.0
    var bitsPerSecond = 0.0
    var retransmits = 0

    /// Parses the JSON of `iperf3 -c … -J`; throws with iperf3's own error if it reports one.
    static func parse(_ json: String) throws -> IPerf3Stream {
        guard let data = json.data(using: .utf8), let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CommandFailure("iperf3 printed no JSON: \(json.prefix(300))")
        }
        if let error = root["error"] as? String { throw CommandFailure("iperf3: \(error)") }
        let end = root["end"] as? [String: Any]
        func number(_ object: Any?, _ key: String) -> Double? { ((object as? [String: Any])?[key] as? NSNumber)?.doubleValue }
        let received = end?["sum_received"]
        guard let bytes = number(received, "bytes"), let seconds = number(received, "seconds"),
            let bps = number(received, "bits_per_second")
        else { throw CommandFailure("iperf3's JSON has no end.sum_received") }
        let retransmits = Int(number(end?["sum_sent"], "retransmits") ?? 0)
        return IPerf3Stream(bytes: bytes, seconds: seconds, bitsPerSecond: bps, retransmits: retransmits)
    }
}

/// How the iperf3 stream is shaped: netperf TCP_STREAM's 16 KiB writes over 64 KiB socket
/// buffers by default.
struct TCPStreamShape {
    var seconds: Int
    var writeBytes: Int
    var socketBufferBytes: Int
    var iperf3: String
    static let port = "5201"
}

extension TCPBenchTopology {
    /// Switches both guests to the path's mode (or uses the veth pair), then runs one iperf3
    /// stream from the sending namespace to the receiving one and measures it.
    func measure(path: TCPBenchPath, round: Int, shape: TCPStreamShape, offeredMbps: Double?, cleanup: TCPBenchCleanup) throws
        -> TCPBenchRun
    {
        let ends = path == .veth ? reference : (sender: sender.endpoint, receiver: receiver.endpoint)
        if path != .veth { try switchBoth(toPassthrough: path == .passthrough) }
        let server = try start(
            in: ends.receiver.namespace, [shape.iperf3, "-s", "-1", "-B", ends.receiver.address, "-p", TCPStreamShape.port],
            cleanup: cleanup)
        defer { finish(server, cleanup) }
        try waitUntilListening(server)
        var clientCommand = [
            shape.iperf3, "-c", ends.receiver.address, "-p", TCPStreamShape.port, "-t", "\(shape.seconds)", "-l", "\(shape.writeBytes)",
            "-w", "\(shape.socketBufferBytes)", "-J", "--connect-timeout", "10000",
        ]
        if let offeredMbps { clientCommand += ["-b", "\(Int(offeredMbps * 1e6))"] }

        let nic = host.daemon.nics.first?.engineThread
        let before = (
            tx: sender.cpu, rx: receiver.cpu, host: EngineThread.cpuNanoseconds(of: host.thread),
            hw: nic.map { EngineThread.cpuNanoseconds(of: $0) } ?? 0, irq: ProcCPUTimes.interruptSeconds(),
            wall: Clock.monotonicNanoseconds()
        )
        let client = try start(in: ends.sender.namespace, clientCommand, cleanup: cleanup)
        defer { finish(client, cleanup) }
        guard let clientExit = client.wait(timeoutSeconds: Double(shape.seconds) * 3 + 60) else {
            throw CommandFailure("iperf3 client did not finish (\(shape.seconds) s stream)")
        }
        let serverExit = server.wait(timeoutSeconds: 30)
        var run = TCPBenchRun(path: path, round: round, offeredMbps: offeredMbps)
        run.seconds = Double(Clock.monotonicNanoseconds() - before.wall) / 1e9
        if path != .veth {
            run.senderBridge = sender.cpu - before.tx
            run.receiverBridge = receiver.cpu - before.rx
            run.hostCPU = Double(EngineThread.cpuNanoseconds(of: host.thread) - before.host) / 1e9
            run.hardwareCPU = Double((nic.map { EngineThread.cpuNanoseconds(of: $0) } ?? 0) - before.hw) / 1e9
        }
        let irq = ProcCPUTimes.interruptSeconds()
        run.softirqCPU = irq.softirq - before.irq.softirq
        run.irqCPU = irq.irq - before.irq.irq
        for guest in [sender, receiver] {
            if let error = guest.error { throw CommandFailure("bridge of \(guest.name): \(error)") }
        }
        guard clientExit.status == 0 else {
            throw CommandFailure("iperf3 client (\(run.mode)): exit \(clientExit.status): \(clientExit.output.prefix(500))")
        }
        guard let serverExit, serverExit.status == 0 else {
            throw CommandFailure(
                "iperf3 server (\(run.mode)): \(serverExit.map { "exit \($0.status): \($0.output.prefix(500))" } ?? "did not exit")")
        }
        run.stream = try IPerf3Stream.parse(clientExit.output)
        run.client = ProcCPUTimes.ThreadTimes(user: clientExit.userSeconds, system: clientExit.systemSeconds)
        run.server = ProcCPUTimes.ThreadTimes(user: serverExit.userSeconds, system: serverExit.systemSeconds)
        return run
    }

    /// Starts a program inside a namespace (a child of a thread in a namespace runs there),
    /// registered for cleanup.
    private func start(in namespace: String, _ command: [String], cleanup: TCPBenchCleanup) throws -> ChildProgram {
        let child = try NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: namespace)) { try ChildProgram(command) }
        cleanup.register(child)
        return child
    }

    private func finish(_ child: ChildProgram, _ cleanup: TCPBenchCleanup) {
        child.kill()
        cleanup.forget(child)
    }

    /// Waits until the server listens on its port: its namespace's /proc/PID/net/tcp lists the
    /// socket in state 0A (LISTEN).
    private func waitUntilListening(_ server: ChildProgram) throws {
        let port = String(format: ":%04X", Int(TCPStreamShape.port)!)
        let deadline = Date().addingTimeInterval(30)
        while true {
            let table = (try? String(contentsOfFile: "/proc/\(server.pid)/net/tcp", encoding: .utf8)) ?? ""
            if table.split(separator: "\n").contains(where: { line in
                let fields = line.split(separator: " ")
                return fields.count > 3 && fields[1].hasSuffix(port) && fields[3] == "0A"
            }) {
                return
            }
            if let exit = server.wait(timeoutSeconds: 0) {
                throw CommandFailure("iperf3 server ended before listening: exit \(exit.status): \(exit.output.prefix(500))")
            }
            guard Date() < deadline else { throw CommandFailure("iperf3 server not listening after 30 s") }
            usleep(10_000)
        }
    }
}
