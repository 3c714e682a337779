import Foundation
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// A TCP connection between two kernel-stack guests outlives their switches: while a seeded
/// stream flows from guest A to guest B, A switches in to a VF and back out ten times (B five,
/// interleaved, so every combination of modes carries the stream), each switch made only once
/// more bytes arrived since the last. Nothing is reset, every byte arrives as sent, and the
/// kernel's retransmissions are reported (not asserted: a switch may cost a few).
@Suite(.serialized) struct TCPAcrossSwitchesTests {
    static let skipReason = "needs root, /dev/net/tun and python3 (scripts/install-deps.sh installs it)"
    static let rounds = 10
    /// What the receiver must take between two switches: several windows' worth, so that each
    /// mode really carries the stream before the next switch.
    static let bytesBetweenSwitches = 512 << 10

    /// Over both NIC models, and with the test guests' small rings (256) as well as vmxnet3's
    /// default RX ring size (1024). With 256, the receiver's emulated RX ring overflows at its
    /// own switches (the PF queue is drained while the guest is in its handshake): the host
    /// parks those frames and sends them on after the switch (`SwitchOverflow`), so it drops
    /// nothing, which this asserts; nor does the bridge (it waits for TX ring space rather than
    /// drop). The sender's TCP may still retransmit (reported, not asserted): after a switch-in
    /// the parked frames reach the VF behind a few newer ones (reordering).
    @Test(
        .enabled(if: TAPDevice.isAvailable && toolIsInstalled("python3"), Comment(rawValue: skipReason)),
        arguments: ["npa-dring", "npa-cq"], [256, 1024])
    func aTCPStreamSurvivesTenSwitchesEachWayIntact(model: String, ringSize: Int) throws {
        let memoryMiB = ringSize >= 1024 ? 32 : 8
        let fixture = try PassthroughFixture(
            model: model, a: GuestSpec("tcp-a", ringSize: ringSize, memoryMiB: memoryMiB),
            b: GuestSpec("tcp-b", ringSize: ringSize, memoryMiB: memoryMiB), switchIn: (false, false))
        defer { fixture.stop() }
        let guests = try KernelStackGuests(nics: [fixture.a, fixture.b], subnet: 80)
        defer { guests.tearDown() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "npa-tcpswitch-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let progressFile = directory.appendingPathComponent("received").path
        let stopFile = directory.appendingPathComponent("stop").path
        let seed = "\(UInt32.random(in: 0...UInt32.max))"
        let retransmittedBefore = try retransmittedSegments(in: guests.namespaces[0])

        let receiver = try start(
            in: guests.namespaces[1], ["python3", "-c", Self.receiver, guests.addresses[1], "5002", progressFile, seed])
        defer { if receiver.isRunning { receiver.terminate() } }
        let sender = try start(in: guests.namespaces[0], ["python3", "-c", Self.sender, guests.addresses[1], "5002", stopFile, seed])
        defer { if sender.isRunning { sender.terminate() } }

        // Each switch waits for the stream to move on, then for the host to report it done.
        var received = 0
        var switches = ["tcp-a": (in: 0, out: 0), "tcp-b": (in: 0, out: 0)]
        func afterMoreBytes(switch name: String, toPassthrough: Bool) throws {
            let target = received + Self.bytesBetweenSwitches
            let flowed = waitUntil { (self.bytes(in: progressFile) ?? 0) >= target || !receiver.isRunning || !sender.isRunning }
            received = bytes(in: progressFile) ?? 0
            try #require(flowed && received >= target, "the stream stalled at \(received) bytes before switching \(name)")
            try fixture.host.admin.switchVNIC(name: name, toPassthrough: toPassthrough)
            let mode = toPassthrough ? "passthrough" : "emulated"
            var status = try fixture.host.status(of: name)
            let done = try waitUntil {
                status = try fixture.host.status(of: name)
                return status?.mode == mode && status?.switchPending == nil
            }
            try #require(done, "\(name) did not reach \(mode): \(String(describing: status))")
            if toPassthrough { switches[name]!.in += 1 } else { switches[name]!.out += 1 }
        }
        for round in 0..<Self.rounds {
            try afterMoreBytes(switch: "tcp-a", toPassthrough: true)
            if round % 2 == 1 { try afterMoreBytes(switch: "tcp-b", toPassthrough: true) }
            try afterMoreBytes(switch: "tcp-a", toPassthrough: false)
            if round % 2 == 1 { try afterMoreBytes(switch: "tcp-b", toPassthrough: false) }
        }
        // The stream also flows after the last switch; then the sender ends it and both compare.
        let target = received + Self.bytesBetweenSwitches
        #expect(waitUntil { (self.bytes(in: progressFile) ?? 0) >= target || !receiver.isRunning })
        _ = FileManager.default.createFile(atPath: stopFile, contents: nil)
        let senderOutput = output(of: sender)
        let receiverOutput = output(of: receiver)
        #expect(sender.terminationStatus == 0, "sender: \(senderOutput)")
        #expect(receiver.terminationStatus == 0, "receiver: \(receiverOutput)")
        #expect(senderOutput.contains("intact") && !senderOutput.contains("reset"), "sender: \(senderOutput)")
        let retransmitted = try retransmittedSegments(in: guests.namespaces[0]) - retransmittedBefore

        guests.stopBridges()
        for bridge in guests.bridges {
            #expect(bridge.error == nil)
            #expect(bridge.ending == .stopped)
        }
        // The shell's own record agrees with what the host reported, switch by switch.
        #expect(switches["tcp-a"]!.in >= Self.rounds && switches["tcp-a"]!.out >= Self.rounds)
        #expect(fixture.a.switchInDurations.count == switches["tcp-a"]!.in, "\(fixture.a.switchLog)")
        #expect(fixture.a.switchOutDurations.count == switches["tcp-a"]!.out, "\(fixture.a.switchLog)")
        #expect(fixture.b.switchInDurations.count == switches["tcp-b"]!.in, "\(fixture.b.switchLog)")
        #expect(fixture.b.switchOutDurations.count == switches["tcp-b"]!.out, "\(fixture.b.switchLog)")
        let bridgeDrops = guests.bridges.map { bridge -> String in
            let c = bridge.bridge.counters
            #expect(c.transmitRingFull == 0, "the bridge dropped frames the vNIC could not take at once")
            return "\(c.transmitRingFull) on a full TX ring, \(c.tapQueueFull) on a full TAP queue"
        }
        let hostDrops = try ["tcp-a", "tcp-b"].map { name -> String in
            let counters = try fixture.host.status(of: name)?.counters ?? [:]
            let drops = counters.filter { $0.key.hasPrefix("drop_") && $0.value > 0 }.sorted { $0.key < $1.key }
            #expect(counters["drop_no_buffers", default: 0] == 0, "\(name): the host dropped frames at a switch")
            #expect(counters["drop_vf_no_buffers", default: 0] == 0, "\(name): the NIC dropped frames at a switch")
            return "\(name) " + (drops.isEmpty ? "none" : drops.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        let (a, b) = (switches["tcp-a"]!, switches["tcp-b"]!)
        let sent = senderOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        print(
            "TCP across switches (\(model), rings of \(ringSize)): \(sent); tcp-a switched in \(a.in) and out \(a.out) times, tcp-b in \(b.in) and out \(b.out)"
        )
        print(
            "  the sender's TCP retransmitted \(retransmitted) segments; the bridges dropped \(bridgeDrops.joined(separator: " / ")); the host dropped: \(hostDrops.joined(separator: "; "))"
        )
    }

    /// The receiver's count of verified bytes, as it last wrote it; nil before it listens.
    private func bytes(in progressFile: String) -> Int? {
        (try? String(contentsOfFile: progressFile, encoding: .utf8)).flatMap { Int($0) }
    }

    /// Accepts one connection and checks every byte against the seeded stream (64 KiB blocks of
    /// `random.Random(seed)`), writing its count of verified bytes to a file (atomically, by
    /// rename) as it goes; at the end of the stream answers "COUNT SHA256". A mismatch or a
    /// reset ends it non-zero, with the offset or the error.
    static let receiver = """
        import socket, hashlib, random, os, sys
        addr, port, progress, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        def report(n):
            with open(progress + ".tmp", "w") as f: f.write(str(n))
            os.replace(progress + ".tmp", progress)
        rng = random.Random(seed); expected = b""; at = 0
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port)); s.listen(1); s.settimeout(300); report(0)
        c, _ = s.accept(); c.settimeout(300); h = hashlib.sha256(); n = 0; last = 0
        try:
            while True:
                b = c.recv(262144)
                if not b: break
                i = 0
                while i < len(b):
                    if at == len(expected): expected = rng.randbytes(65536); at = 0
                    k = min(len(b) - i, len(expected) - at)
                    if b[i:i + k] != expected[at:at + k]:
                        bad = next(j for j in range(k) if b[i + j] != expected[at + j])
                        sys.exit(f"mismatch at stream offset {n + i + bad}")
                    i += k; at += k
                h.update(b); n += len(b)
                if n - last >= 65536: report(n); last = n
        except ConnectionResetError as e:
            sys.exit(f"reset after {n} bytes: {e}")
        report(n)
        c.sendall(f"{n} {h.hexdigest()}".encode()); c.close()
        """

    /// Connects (retrying until the receiver listens), sends the seeded stream in 64 KiB blocks
    /// until the stop file exists, then half-closes and compares the receiver's "COUNT SHA256"
    /// with its own: "intact" when they match.
    static let sender = """
        import socket, hashlib, random, os, sys, time
        addr, port, stop, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        deadline = time.monotonic() + 120
        while True:
            try:
                s = socket.create_connection((addr, port), timeout=5); break
            except OSError:
                if time.monotonic() > deadline: raise
                time.sleep(0.05)  # the receiver is not listening yet: poll for it
        s.settimeout(300); rng = random.Random(seed); h = hashlib.sha256(); n = 0
        try:
            while not os.path.exists(stop):
                block = rng.randbytes(65536)
                s.sendall(block); h.update(block); n += len(block)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                b = s.recv(4096)
                if not b: break
                reply += b
        except ConnectionResetError as e:
            sys.exit(f"reset after {n} bytes: {e}")
        mine = f"{n} {h.hexdigest()}"
        if reply.decode() != mine: sys.exit(f"receiver says {reply.decode()!r}, sent {mine}")
        print(f"{n} bytes intact, sha256 {h.hexdigest()}")
        """
}

/// The kernel's count of TCP segments retransmitted in namespace `ns` (`RetransSegs` of
/// /proc/net/snmp, which is per network namespace).
private func retransmittedSegments(in ns: String) throws -> Int {
    let snmp = try run(in: ns, ["cat", "/proc/net/snmp"]).output
    let tcp = snmp.split(separator: "\n").filter { $0.hasPrefix("Tcp:") }.map { $0.split(separator: " ") }
    guard tcp.count == 2, let column = tcp[0].firstIndex(of: "RetransSegs"), let value = Int(tcp[1][column]) else {
        throw UnreadableSNMP(description: "no Tcp RetransSegs in /proc/net/snmp of \(ns): \(snmp)")
    }
    return value
}

private struct UnreadableSNMP: Error, CustomStringConvertible { let description: String }

/// Everything `process` (started by `start(in:_:)`) wrote, once it exited.
private func output(of process: Process) -> String {
    let data = (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}

/// Polls `condition` every 10 ms until it holds or `timeoutMilliseconds` passes: waiting for
/// the stream or the host, never a fixed sleep. Generous, since the machine is shared.
private func waitUntil(timeoutMilliseconds: Int = 120_000, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(timeoutMilliseconds)
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        usleep(10_000)
    }
    return try condition()
}
