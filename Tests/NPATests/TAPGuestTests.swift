import Foundation
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// The kernel's TCP/IP stack as the guest's OS: two guests on one host, each vNIC bridged to a
/// TAP interface in a network namespace this test creates (and always removes), and a real TCP
/// transfer between the namespaces, checked byte for byte.
@Suite(.serialized) struct TAPGuestTests {
    static let skipReason = "needs root and /dev/net/tun (TAP devices, network namespaces)"

    /// With offloads (the TAPs' virtio-net header, super-frames up to one vNIC buffer, cut by
    /// device emulation) and without.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: skipReason)), arguments: [true, false])
    func aTCPTransferBetweenTwoKernelStackGuestsArrivesIntact(offloads: Bool) throws {
        let host = try TestHost()
        defer { host.stop() }
        let tag = "\(getpid())-\(UInt32.random(in: 0...0xFFFF))"
        let namespaces = ["npa-t-\(tag)-a", "npa-t-\(tag)-b"]
        defer { for ns in namespaces { _ = try? ip(["netns", "delete", ns]) } }
        let stop = StopFlag()
        var bridges: [BridgeThread] = []
        defer {
            stop.set()
            for bridge in bridges { bridge.join() }
        }
        for (i, ns) in namespaces.enumerated() {
            try ip(["netns", "add", ns])
            var configuration = VirtualNIC.Configuration(name: "tap-guest-\(i)")
            if offloads {
                // Buffers that take a super-frame (what `npa guest tap` sizes them to).
                configuration.memoryBytes = 80 << 20
                configuration.bufferSize = 16320
            }
            let nic = try VirtualNIC.attach(hostSocket: host.socketPath, configuration: configuration)
            let tapName = "npat\(tag.suffix(6).filter(\.isHexDigit))\(i)"
            let tap: TAPDevice
            let bridge: TAPBridge
            if i == 0 {
                // Made here, then moved: what a user does with `ip link set IF netns NS`.
                tap = try TAPDevice(name: tapName, virtioNetHeader: offloads)
                bridge = try TAPBridge(nic: nic, tap: tap, offloads: offloads)
                try ip(["link", "set", tap.interfaceName, "netns", ns])
            } else {
                // Made inside the namespace, as `npa guest tap --netns` does.
                (tap, bridge) = try NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: ns)) {
                    let tap = try TAPDevice(name: tapName, virtioNetHeader: offloads)
                    return (tap, try TAPBridge(nic: nic, tap: tap, offloads: offloads))
                }
            }
            #expect(bridge.offloadsEnabled == offloads)
            try ip(["-n", ns, "addr", "add", "10.77.0.\(i + 1)/24", "dev", tap.interfaceName])
            try ip(["-n", ns, "link", "set", tap.interfaceName, "up"])
            bridges.append(BridgeThread(bridge: bridge, stop: stop))
        }

        // The server takes everything until end of stream and answers its SHA-256; the client
        // sends 1 MiB of seeded bytes and checks the answer against its own digest.
        let server = try python(
            in: namespaces[1],
            """
            import socket, hashlib
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("10.77.0.2", 5001)); s.listen(1); s.settimeout(120)
            c, _ = s.accept(); c.settimeout(120); h = hashlib.sha256(); n = 0
            while True:
                b = c.recv(65536)
                if not b: break
                h.update(b); n += len(b)
            c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
            """)
        let client = try python(
            in: namespaces[0],
            """
            import socket, hashlib, random, time
            data = random.Random(10).randbytes(1 << 20)
            deadline = time.monotonic() + 120
            while True:
                try:
                    s = socket.create_connection(("10.77.0.2", 5001), timeout=5); break
                except OSError:
                    if time.monotonic() > deadline: raise
                    time.sleep(0.05)  # the server is not listening yet: poll for it
            s.settimeout(120); s.sendall(data); s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                b = s.recv(4096)
                if not b: break
                reply += b
            expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
            print(reply.decode()); print(expected)
            assert reply.decode() == expected
            """)
        client.waitUntilExit()
        server.waitUntilExit()
        let output = String(decoding: (client.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(client.terminationStatus == 0, "client: \(output)")
        #expect(server.terminationStatus == 0)
        stop.set()
        for bridge in bridges { bridge.join() }
        for bridge in bridges {
            #expect(bridge.error == nil)
            #expect(bridge.bridge.counters.framesToVNIC > 100)
            #expect(bridge.bridge.counters.framesToTAP > 100)
            #expect(bridge.bridge.counters.malformedFromTAP == 0)
            #expect(bridge.bridge.counters.badVirtioHeader == 0)
        }
        // The sender's kernel handed over super-frames; the receiver's got checksum-valid frames.
        let (sender, receiver) = (bridges[0].bridge.counters, bridges[1].bridge.counters)
        #expect((sender.superFramesToVNIC > 0) == offloads, "\(sender)")
        #expect((receiver.checksumValidToTAP > 0) == offloads, "\(receiver)")
        bridges.removeAll()
    }

    /// `npa guest ... tap` creates its interface (in the namespace `--netns` names, or its own)
    /// with the vNIC's MAC and MTU, and SIGTERM ends it with exit 0 and a count of what it
    /// moved; the interface goes with it.
    @Test(.enabled(if: TAPDevice.isAvailable, Comment(rawValue: skipReason)), arguments: [false, true])
    func theTapCommandBridgesUntilSIGTERMAndExitsZero(inNamespace: Bool) throws {
        let host = try TestHost()
        defer { host.stop() }
        let ns = "npa-t-\(getpid())-\(UInt32.random(in: 0...0xFFFF))-cli"
        if inNamespace { try ip(["netns", "add", ns]) }
        defer { if inNamespace { _ = try? ip(["netns", "delete", ns]) } }
        let ifname = "npac\(UInt32.random(in: 0...0xFF_FFFF))"
        let guest = try NPAProcess(
            ["guest", "tap", "--host", host.socketPath, "--name", "tap-cli", "--mac", "02:00:00:00:0a:01", "--ifname", ifname]
                + (inNamespace ? ["--netns", ns] : []))
        defer { guest.kill() }
        #expect(guest.waitUntilAttached())
        let namespaceOption = inNamespace ? ["-n", ns] : []
        let link = try ipOutput(namespaceOption + ["-o", "link", "show", ifname])
        #expect(link.contains("02:00:00:00:0a:01") && link.contains("mtu 1500"), "\(link)")
        if inNamespace { #expect(try ipOutput(["-o", "link", "show"]).contains(ifname) == false) }
        kill(guest.process.processIdentifier, SIGTERM)
        let out = guest.finish()
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("tap \(ifname): "), "\(out.stdout)")
        #expect(throws: IPCommandFailed.self) { try ip(namespaceOption + ["link", "show", ifname]) }
    }

    static let toolsSkipReason = "needs root, /dev/net/tun, ping and iperf3 (scripts/install-deps.sh installs them)"

    /// Real tools between two kernel-stack guests, emulated and switched in to VFs: kernel ICMP
    /// (`ping -c 3`) and an iperf3 TCP run (server in one namespace, client in the other) both
    /// complete, and in passthrough the host's status still says passthrough afterwards.
    @Test(
        .enabled(if: TAPDevice.isAvailable && toolIsInstalled("ping") && toolIsInstalled("iperf3"), Comment(rawValue: toolsSkipReason)),
        arguments: ["emulated", "passthrough"])
    func pingAndIperf3CrossBothModes(mode: String) throws {
        let passthrough = mode == "passthrough"
        let fixture = try PassthroughFixture(
            model: "npa-dring", a: GuestSpec("tap-a", memoryMiB: 32, bufferSize: 16320),
            b: GuestSpec("tap-b", memoryMiB: 32, bufferSize: 16320), switchIn: (passthrough, passthrough))
        defer { fixture.stop() }
        for nic in [fixture.a, fixture.b] { #expect(nic.mode == mode, "\(nic.lastSwitchError ?? "")") }
        let tag = "\(getpid())-\(UInt32.random(in: 0...0xFFFF))"
        let namespaces = ["npa-t-\(tag)-a", "npa-t-\(tag)-b"]
        defer { for ns in namespaces { _ = try? ip(["netns", "delete", ns]) } }
        let stop = StopFlag()
        var bridges: [BridgeThread] = []
        defer {
            stop.set()
            for bridge in bridges { bridge.join() }
        }
        for (i, (ns, nic)) in zip(namespaces, [fixture.a, fixture.b]).enumerated() {
            try ip(["netns", "add", ns])
            let tapName = "npap\(tag.suffix(6).filter(\.isHexDigit))\(i)"
            // With offloads: super-frames up to a buffer, cut by device emulation, or by the shell
            // on a VF whose plugin does not declare TSO.
            let (tap, bridge) = try NetworkNamespace.run(in: NetworkNamespace.path(ofNamed: ns)) {
                let tap = try TAPDevice(name: tapName, virtioNetHeader: true)
                return (tap, try TAPBridge(nic: nic, tap: tap))
            }
            #expect(bridge.offloadsEnabled)
            try ip(["-n", ns, "addr", "add", "10.78.0.\(i + 1)/24", "dev", tap.interfaceName])
            try ip(["-n", ns, "link", "set", tap.interfaceName, "up"])
            bridges.append(BridgeThread(bridge: bridge, stop: stop))
        }

        // -w 60 with -c 3: exit 0 only once three replies came back, however long ARP takes.
        let ping = try run(in: namespaces[0], ["ping", "-c", "3", "-w", "60", "10.78.0.2"])
        #expect(ping.status == 0, "\(ping.output)")

        let server = try start(in: namespaces[1], ["iperf3", "-s", "-1", "-B", "10.78.0.2"])
        defer { if server.isRunning { server.terminate() } }
        let listening = try eventually(timeoutMilliseconds: 60_000) {
            try ipOutput(["netns", "exec", namespaces[1], "ss", "-Hltn", "sport = :5201"]).contains("5201")
        }
        #expect(listening, "iperf3 server never listened")
        let client = try run(in: namespaces[0], ["iperf3", "-c", "10.78.0.2", "-t", "2", "-J"])
        #expect(client.status == 0, "\(client.output)")
        let report = try JSONSerialization.jsonObject(with: Data(client.output.utf8)) as? [String: Any]
        let received = ((report?["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bytes"] as? Int
        #expect((received ?? 0) > 0, "\(client.output)")
        server.waitUntilExit()
        #expect(server.terminationStatus == 0)

        stop.set()
        for bridge in bridges { bridge.join() }
        for bridge in bridges {
            #expect(bridge.error == nil)
            #expect(bridge.bridge.counters.badVirtioHeader == 0)
        }
        #expect(bridges[0].bridge.counters.superFramesToVNIC > 0, "\(bridges[0].bridge.counters)")
        bridges.removeAll()
        for name in ["tap-a", "tap-b"] { #expect(try fixture.host.status(of: name)?.mode == mode) }
    }
}

/// A stop request shared between the test and its bridge threads.
private final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    func set() { lock.withLock { stopped = true } }
    var isSet: Bool { lock.withLock { stopped } }
}

/// One bridge running on its own thread until the stop flag is set.
private final class BridgeThread: @unchecked Sendable {
    let bridge: TAPBridge
    private(set) var error: (any Error)?
    private var thread: pthread_t?

    init(bridge: TAPBridge, stop: StopFlag) {
        self.bridge = bridge
        thread = EngineThread.start(name: "npa-tap-bridge") { [self] in
            do { _ = try bridge.run(shouldStop: { stop.isSet }) } catch { self.error = error }
        }
    }

    func join() {
        if let thread { EngineThread.join(thread) }
        thread = nil
    }
}

/// Runs `ip ARGS`, throwing with its standard error if it fails.
@discardableResult
private func ip(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip").standardized
    if !FileManager.default.fileExists(atPath: "/usr/sbin/ip") { process.executableURL = URL(fileURLWithPath: "/sbin/ip") }
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    process.waitUntilExit()
    let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    if process.terminationStatus != 0 { throw IPCommandFailed(description: "ip \(arguments.joined(separator: " ")): \(message)") }
    return message
}

private struct IPCommandFailed: Error, CustomStringConvertible { let description: String }

/// Runs `ip ARGS` and returns its standard output.
private func ipOutput(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return text
}

/// Starts `python3 -c SCRIPT` inside the namespace `ns`, its standard output on a pipe.
private func python(in ns: String, _ script: String) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
    process.arguments = ["netns", "exec", ns, "python3", "-c", script]
    process.standardOutput = Pipe()
    try process.run()
    return process
}

/// Whether `tool` is an executable in one of PATH's directories (or the sbin ones).
private func toolIsInstalled(_ tool: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    return (path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"])
        .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
}

/// Starts `COMMAND` inside the namespace `ns`, its standard output and error on one pipe.
private func start(in ns: String, _ command: [String]) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: FileManager.default.fileExists(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
    process.arguments = ["netns", "exec", ns] + command
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    return process
}

/// Runs `COMMAND` inside the namespace `ns` to its end: its exit status and combined output.
private func run(in ns: String, _ command: [String]) throws -> (status: Int32, output: String) {
    let process = try start(in: ns, command)
    // Read to the end first: a full pipe would otherwise block the child before it exits.
    let data = (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
