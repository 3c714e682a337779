import Foundation
import NPAControlProtocol
import NPAShell
import NPASystem
import NPATestSupport
import NPAWorkload
import Testing

/// A kernel-stack guest (the Linux TCP/IP stack behind a TAP, bridged to its vNIC) streams TCP
/// to a machine on the LAN while it migrates A → B → A (three times) over the hosts' TAP wires, switched in to
/// a VF at A first. The connection survives (no reset), every byte arrives intact (count and
/// SHA-256 on both ends), and the sender's retransmissions are reported.
extension MigrationUnderLoad {
    @Suite(.serialized) struct MigrationTCPAcrossWireTests {
        static let available = TAPDevice.isAvailable && NetworkLab.toolIsInstalled("ip") && NetworkLab.toolIsInstalled("python3")
        static let skipReason = "needs root, /dev/net/tun, ip and python3 (scripts/install-deps.sh installs them)"

        @Test(.enabled(if: available, Comment(rawValue: skipReason)))
        func aTCPStreamFromAKernelStackGuestSurvivesMigrationThereAndBackWithEveryByteIntact() throws {
            let wire = try MigrationWireLab(subnet: 82)
            defer { wire.tearDown() }
            let (a, b) = (wire.a, wire.b)
            let nic = try GuestSpec("kernel", mac: "02:00:5e:00:82:01", queues: 1).attach(to: a.socketPath)
            let guest = try KernelStackGuests(nics: [nic], subnet: 82)
            defer { guest.tearDown() }
            try a.admin.switchVNIC(name: "kernel", toPassthrough: true)
            let switchedIn = try eventually(timeoutMilliseconds: 60_000) { try a.status(of: "kernel")?.mode == "passthrough" }
            #expect(switchedIn, "the guest never switched in at A")

            let transfer = try EndlessTCPTransfer(from: guest.namespaces[0], to: wire.machine, address: wire.machineAddress, port: 5182)
            defer { transfer.end() }
            #expect(transfer.waitForProgress(beyond: 1 << 20), "the stream never started (\(transfer.progress()) bytes sent)")
            // A → B → A three times.
            for trip in 0..<6 {
                let (from, to) = trip % 2 == 0 ? (a, b) : (b, a)
                let record = try wire.migrate("kernel", from: from, to: to)
                #expect(record?.phase == "completed", "trip \(trip): \(String(describing: record))")
                #expect(try to.status(of: "kernel") != nil, "trip \(trip): the guest is not at the destination")
                // The stream goes on from the destination: several more MiB are acknowledged.
                let sent = transfer.progress()
                #expect(transfer.waitForProgress(beyond: sent + 4 << 20), "trip \(trip): the stream stalled at \(sent) bytes")
            }
            transfer.stop()
            let outcome = transfer.outcome()
            #expect(outcome.ok, "\(outcome.report)")
            print("migration TCP stream: \(outcome.report)")
        }
    }
}

/// A TCP stream that runs until told to stop: the client (in the guest's namespace) sends seeded
/// bytes, recording how many it has sent so far in a progress file, until a stop file appears;
/// then it half-closes and compares the server's count and SHA-256 with its own, and prints its
/// socket's retransmission counters (TCP_INFO). Owns the two processes and the two files.
final class EndlessTCPTransfer {
    private let lab = NetworkLab()
    private let server: Process
    private let client: Process
    private let progressFile: String
    private let stopFile: String
    private var result: (ok: Bool, report: String)?

    init(from clientNamespace: String, to serverNamespace: String, address: String, port: Int) throws {
        let base = NSTemporaryDirectory() + "npa-tcp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        progressFile = base + ".progress"
        stopFile = base + ".stop"
        server = try lab.start(
            in: serverNamespace, ["python3", "-c", NetworkLab.checkingServer(address: address, port: port, timeoutSeconds: 300)])
        client = try lab.start(
            in: clientNamespace,
            [
                "python3", "-c",
                """
                import socket, hashlib, random, time, os, struct
                rng = random.Random(\(port)); h = hashlib.sha256(); n = 0
                \(NetworkLab.pythonConnect(address: address, port: port))
                s.settimeout(300)
                while not os.path.exists("\(stopFile)"):
                    chunk = rng.randbytes(65536)
                    s.sendall(chunk); h.update(chunk); n += len(chunk)
                    with open("\(progressFile).tmp", "w") as f: f.write(str(n))
                    os.replace("\(progressFile).tmp", "\(progressFile)")
                info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                total_retrans = struct.unpack_from("I", info, 100)[0]
                s.shutdown(socket.SHUT_WR)
                \(NetworkLab.pythonReadReply)
                expected = f"{n} {h.hexdigest()}"
                print(f"sent {n} bytes, {total_retrans} segments retransmitted; server: {reply.decode()}")
                assert reply.decode() == expected, f"expected {expected}"
                """,
            ])
    }

    /// Bytes the client has handed to its socket so far.
    func progress() -> Int {
        (try? String(contentsOfFile: progressFile, encoding: .utf8)).flatMap { Int($0) } ?? 0
    }

    /// Waits (generously) until the client has sent more than `bytes`, or has ended.
    func waitForProgress(beyond bytes: Int) -> Bool {
        eventually(timeoutMilliseconds: 120_000) { progress() > bytes || !client.isRunning } && progress() > bytes
    }

    func stop() { _ = FileManager.default.createFile(atPath: stopFile, contents: nil) }

    /// Waits for both ends and says whether every byte arrived intact, with their output.
    func outcome() -> (ok: Bool, report: String) {
        if let result { return result }
        stop()
        let clientOutput = Self.output(of: client)
        let serverOutput = Self.output(of: server)
        let outcome = (
            client.terminationStatus == 0 && server.terminationStatus == 0,
            "client: \(clientOutput.trimmingCharacters(in: .whitespacesAndNewlines)) server: \(serverOutput)"
        )
        result = outcome
        return outcome
    }

    func end() {
        stop()
        if client.isRunning { client.terminate() }
        if server.isRunning { server.terminate() }
        client.waitUntilExit()
        server.waitUntilExit()
        for path in [progressFile, progressFile + ".tmp", stopFile] { unlink(path) }
    }

    private static func output(of process: Process) -> String {
        let data = (process.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
